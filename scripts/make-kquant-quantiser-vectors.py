#!/usr/bin/env python3
"""Writes crates/seedinfer-formats/tests/data/kquant-quantiser-vectors.json: f32 rows and what llama.cpp's quantiser
makes of them in each K-quant and IQ4 type, checked byte for byte by crates/seedinfer-formats/tests/reference_vectors.rs.

The quantiser is ggml's own C code, `ggml_quantize_chunk` in libggml-base (the function llama.cpp's model quantiser
calls per tensor; without an importance matrix it runs `quantize_row_q*_K_ref` and, for IQ4_NL/IQ4_XS,
`quantize_iq4_nl`/`quantize_iq4_xs`), loaded with ctypes from PyPI `llama-cpp-python` 0.3.36. The rows: random
normal, heavy-tailed and uniform rows, rows with zero, tiny (below ggml's GROUP_MAX_EPS) and huge sub-blocks, a
constant row, a single spike, and real weights (SmolLM2-135M-Instruct's `blk.0.ffn_down.weight`, dequantised from
the default Q4_1 file, whose sub-blocks hold only 16 distinct values). Bytes and floats are little-endian hex.

Usage (from the repository root; needs `pip install llama-cpp-python==0.3.36 gguf numpy` in a scratch venv):

    python3 scripts/make-kquant-quantiser-vectors.py <SmolLM2-135M-Instruct.Q4_1.gguf> [output.json] [--many N]

`--many N` adds N random super-blocks and about N from SmolLM2's ffn_down matrices (a large check, not
committed): point the test at it with `SEEDINFER_KQUANT_QUANTISER_VECTORS=<output.json> cargo test -p
seedinfer-formats --test reference_vectors`.
"""

import ctypes
import importlib.metadata
import json
import sys
from pathlib import Path

import llama_cpp
import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

SEED = 20261207
QK_K = 256
TYPES = {"Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "IQ4_NL": 20, "IQ4_XS": 23}
BLOCK_BYTES = {"Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210, "IQ4_NL": 18 * 8, "IQ4_XS": 136}
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "crates/seedinfer-formats/tests/data/kquant-quantiser-vectors.json"


def many_rows(model: str, count: int) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(SEED + 1)
    out = [(f"random_{i}", rng.normal(0, rng.choice([1e-3, 0.02, 1.0]), QK_K) *
            (rng.standard_t(3, QK_K) if i % 2 else 1)) for i in range(count)]
    reader = GGUFReader(model)
    for tensor in reader.tensors:
        if tensor.name.endswith("ffn_down.weight"):
            weights = dequantize(tensor.data, tensor.tensor_type).reshape(-1)
            starts = rng.choice(weights.size // QK_K, count // 30 + 1, replace=False)
            out += [(f"{tensor.name}_{s}", weights[s * QK_K:(s + 1) * QK_K]) for s in starts]
    return [(name, values.astype(np.float32)) for name, values in out]


def rows(model: str) -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    out = []
    for i in range(3):
        out.append((f"normal_{i}", rng.normal(0, 0.02, QK_K)))
    for i in range(2):
        out.append((f"heavy_tailed_{i}", rng.standard_t(2, QK_K) * 0.01))
    out.append(("uniform", rng.uniform(-1, 1, QK_K)))
    out.append(("positive", rng.uniform(0.5, 2, QK_K)))
    out.append(("negative", -rng.uniform(0.5, 2, QK_K)))
    out.append(("zeros", np.zeros(QK_K)))
    out.append(("constant", np.full(QK_K, 0.37)))
    spike = np.zeros(QK_K)
    spike[77] = -3.5
    out.append(("spike", spike))
    mixed = rng.normal(0, 1, QK_K)
    mixed[0:16] = 0  # a zero sub-block of 16
    mixed[32:64] = rng.normal(0, 1e-17, 32)  # a sub-block of 32 below GROUP_MAX_EPS
    mixed[128:160] *= 1e4  # a huge sub-block
    out.append(("mixed_magnitudes", mixed))
    out.append(("tiny", rng.normal(0, 1e-30, QK_K)))
    out.append(("outlier", np.concatenate([rng.normal(0, 0.01, QK_K - 1), [0.9]])))
    reader = GGUFReader(model)
    tensor = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    weights = dequantize(tensor.data, tensor.tensor_type).reshape(-1, 1536)
    for r in range(2):
        for b in range(1536 // QK_K):
            out.append((f"smollm2_ffn_down_row{r}_block{b}", weights[r, b * QK_K:(b + 1) * QK_K]))
    return [(name, values.astype(np.float32)) for name, values in out]


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    model = args[0]
    output = Path(args[1]) if len(args) > 1 else DEFAULT_OUTPUT
    many = int(sys.argv[sys.argv.index("--many") + 1]) if "--many" in sys.argv else 0
    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    inputs = rows(model) + (many_rows(model, many) if many else [])
    src = np.ascontiguousarray(np.stack([values for _, values in inputs]))
    quantised = {}
    for name, type_id in TYPES.items():
        dst = np.zeros(len(inputs) * BLOCK_BYTES[name], dtype=np.uint8)
        size = lib.ggml_quantize_chunk(type_id, src.ctypes.data, dst.ctypes.data, 0, len(inputs), QK_K, None)
        assert size == dst.size, (name, size, dst.size)
        quantised[name] = [dst[i * BLOCK_BYTES[name]:(i + 1) * BLOCK_BYTES[name]].tobytes().hex()
                           for i in range(len(inputs))]
    document = {
        "generator": f"scripts/make-kquant-quantiser-vectors.py with llama-cpp-python "
                     f"{importlib.metadata.version('llama_cpp_python')} (ggml_quantize_chunk)",
        "rows": [{"name": name, "f32le": values.astype("<f4").tobytes().hex()} for name, values in inputs],
        "quantised": quantised,
    }
    output.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {len(inputs)} rows x {len(TYPES)} types to {output}")


if __name__ == "__main__":
    main()
