#!/usr/bin/env python3
"""Converts each checkpoint of crates/seedinfer-engine/tests/data/architectures (made by
make-architecture-fixtures.py) to GGUF with llama.cpp's own converter (`convert_hf_to_gguf.py`, f32), and records
what llama.cpp computes on it: `model.gguf` and `llamacpp.json` (llama.cpp's greedy continuation of the fixture's
prompt and its logits after the prompt), checked by crates/seedinfer-engine/tests/architectures.rs.

The fixtures' tokenizer is a small BPE trained for them, whose pre-tokenizer hash llama.cpp does not know; the
converter is told the family's name instead (llama-bpe for llama3, gemma3 and phi3, qwen2 for the Qwens). The comparison feeds token
ids, so the pre-tokenizer does not enter it.

Usage (from the repository root; needs the llama-cpp-python 0.3.36 sdist unpacked, and `pip install
llama-cpp-python==0.3.36 torch transformers numpy`):

    python3 scripts/make-architecture-gguf.py <llama-cpp-python sdist>/vendor/llama.cpp [name ...]
"""

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).resolve().parent.parent / "crates/seedinfer-engine/tests/data/architectures"
PRE = {"llama3": "llama-bpe", "qwen2": "qwen2", "qwen3": "qwen2", "gemma3": "llama-bpe", "phi3": "llama-bpe"}


def convert(llama_cpp: Path, name: str) -> Path:
    sys.path.insert(0, str(llama_cpp / "gguf-py"))
    sys.path.insert(0, str(llama_cpp))
    import conversion.base
    import convert_hf_to_gguf

    conversion.base.TextModel.get_vocab_base_pre = lambda self, tokenizer: PRE[name]
    out = FIXTURES / name / "model.gguf"
    sys.argv = ["convert_hf_to_gguf.py", str(FIXTURES / name), "--outfile", str(out), "--outtype", "f32"]
    convert_hf_to_gguf.main()
    return out


# Fixtures whose llama.cpp run keeps an f32 KV cache: gemma3's random weights give margins that llama.cpp's f16
# cache moves (1.7e-2 · std at the last prompt position, against 5e-3 with f32), and its greedy run then leaves
# transformers' after five tokens.
F32_KV = {"gemma3"}


def run_llama_cpp(path: Path, prompt: list[int], greedy_tokens: int, f32_kv: bool) -> dict:
    from llama_cpp import Llama

    kv = {"type_k": 0, "type_v": 0} if f32_kv else {}
    llm = Llama(model_path=str(path), n_ctx=128, n_batch=64, n_threads=2, logits_all=True, verbose=False, **kv)
    llm.eval(prompt)
    logits = np.array(llm.scores[len(prompt) - 1], dtype=np.float32)
    tokens = []
    for _ in range(greedy_tokens):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        token = int(np.argmax(row))
        tokens.append(token)
        llm.eval([token])
    return {
        "generator": f"scripts/make-architecture-gguf.py (llama-cpp-python {importlib.metadata.version('llama-cpp-python')})",
        "kv_cache": "f32" if f32_kv else "f16",
        "greedy": tokens,
        "last_logits": [float(f"{v:.7g}") for v in logits.tolist()],
    }


def main() -> None:
    llama_cpp = Path(sys.argv[1]).resolve()
    for name in sys.argv[2:] or list(PRE):
        reference = json.loads((FIXTURES / name / "reference.json").read_text())
        path = convert(llama_cpp, name)
        result = run_llama_cpp(path, reference["prompt"], len(reference["greedy"]), name in F32_KV)
        (FIXTURES / name / "llamacpp.json").write_text(json.dumps(result, separators=(",", ":")) + "\n")
        same = result["greedy"] == reference["greedy"]
        print(f"{name}: {path.stat().st_size} bytes; llama.cpp greedy {'==' if same else '!='} transformers greedy")


if __name__ == "__main__":
    main()
