#!/usr/bin/env python3
"""llama.cpp's logits for a GGUF file through PyPI llama-cpp-python (scratch venv only): the logits after the last
of `count` pseudo-random token ids (seeded), plus each position's argmax, written as JSON for logits-compare.ts.

    python3 bench/peers/llamacpp-logits.py <model.gguf> <out.json> [count=64] [seed=7]
"""

import json
import sys

import numpy as np
from llama_cpp import Llama


def main() -> None:
    model, out = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 64
    seed = int(sys.argv[4]) if len(sys.argv) > 4 else 7
    llm = Llama(model_path=model, n_ctx=max(256, count + 16), n_batch=512, n_threads=2, logits_all=True, verbose=False)
    vocab = llm.n_vocab()
    rng = np.random.default_rng(seed)
    tokens = [int(t) for t in rng.integers(3, vocab, count)]
    llm.eval(tokens)
    scores = np.array(llm.scores[: len(tokens)], dtype=np.float32)
    json.dump(
        {
            "model": model,
            "tokens": tokens,
            "argmax": [int(i) for i in scores.argmax(axis=1)],
            "lastLogits": [float(v) for v in scores[-1]],
        },
        open(out, "w"),
    )
    print(f"wrote {out}: {count} tokens, vocabulary {vocab}")


if __name__ == "__main__":
    main()
