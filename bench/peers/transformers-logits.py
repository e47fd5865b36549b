#!/usr/bin/env python3
"""transformers' f32 logits for a Hugging Face directory on the token ids of a llamacpp-logits.py JSON (so both
references share one input), written in the same JSON form for logits-compare.ts. Scratch venv only (PyPI torch,
transformers).

    python3 bench/peers/transformers-logits.py <hf dir> <llamacpp-logits.json> <out.json>
"""

import json
import sys

import torch
from transformers import AutoModelForCausalLM


def main() -> None:
    model_dir, tokens_from, out = sys.argv[1], sys.argv[2], sys.argv[3]
    tokens = json.load(open(tokens_from))["tokens"]
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(torch.tensor([tokens])).logits[0]
    json.dump(
        {
            "model": model_dir,
            "tokens": tokens,
            "argmax": [int(i) for i in logits.argmax(dim=1)],
            "lastLogits": [float(v) for v in logits[-1]],
        },
        open(out, "w"),
    )
    print(f"wrote {out}: {len(tokens)} tokens, vocabulary {logits.shape[1]}")


if __name__ == "__main__":
    main()
