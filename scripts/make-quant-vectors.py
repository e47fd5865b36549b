#!/usr/bin/env python3
"""Writes crates/seedinfer-formats/tests/data/quant-vectors.json: reference encodings from the PyPI `gguf`
package (gguf-py, llama.cpp's Python port of ggml's reference quantizers) for a few rows of 64 deterministic
values, checked by crates/seedinfer-formats/tests/reference_vectors.rs.

For each row and each of Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, F16 and BF16 the file holds the bytes of
`gguf.quants.quantize(row, type)` and the f32 values of `gguf.quants.dequantize` of those bytes, both as
little-endian hex so that every bit is kept. Inputs are stored the same way (plus a readable copy).

Usage (from the repository root; needs `pip install gguf numpy`):

    python3 scripts/make-quant-vectors.py [output.json]
"""

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants

COLS = 64
SEED = 20250117
TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "F16", "BF16"]
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "crates/seedinfer-formats/tests/data/quant-vectors.json"


def rows() -> list[tuple[str, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    normal = lambda: rng.standard_normal(COLS).astype(np.float32)  # noqa: E731

    outlier = normal() * np.float32(0.01)
    outlier[7] = 50.0  # the largest magnitude of block 0, positive: Q4_0's d = max / -8 is negative
    outlier[45] = -37.5  # block 1's, negative

    huge = np.clip(normal() * np.float32(1e4), -60000, 60000)
    huge[3] = 65504.0  # largest finite f16
    huge[40] = -65504.0

    # Q8_0 ties: amax 127 gives d = 1 exactly, so x.5 values land halfway (ggml rounds half away from zero).
    ties = (np.arange(COLS, dtype=np.float32) - 32) + np.float32(0.5)
    ties[0] = -127.0
    ties[32] = 127.0

    return [
        ("normal", normal()),
        ("zeros", np.zeros(COLS, dtype=np.float32)),
        ("constant", np.full(COLS, 0.7431, dtype=np.float32)),
        ("one_outlier", outlier),
        ("negative_only", -np.abs(normal()) * np.float32(3.0) - np.float32(0.25)),
        ("tiny", normal() * np.float32(1e-6)),  # f16 block scales are subnormal or zero
        ("huge", huge.astype(np.float32)),
        ("ties", ties),
        ("uniform", rng.uniform(-3.0, 3.0, COLS).astype(np.float32)),
        ("positive_skewed", (rng.exponential(1.0, COLS) + 0.05).astype(np.float32)),
    ]


def hex_of(array: np.ndarray) -> str:
    return np.ascontiguousarray(array).tobytes().hex()


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    entries = []
    for name, values in rows():
        values = values.astype("<f4")
        assert values.shape == (COLS,) and np.all(np.isfinite(values))
        encodings = {}
        for type_name in TYPES:
            qtype = GGMLQuantizationType[type_name]
            quantized = quants.quantize(values.reshape(1, COLS), qtype)
            dequantized = quants.dequantize(quantized, qtype).astype("<f4").reshape(COLS)
            encodings[type_name] = {
                "quantized": hex_of(quantized.view(np.uint8)),
                "dequantized_f32le": hex_of(dequantized),
            }
        entries.append(
            {
                "name": name,
                "input_f32le": hex_of(values),
                "input": [float(str(v)) for v in values],
                "encodings": encodings,
            }
        )
    document = {
        "about": "Reference encodings from gguf-py (gguf.quants.quantize / dequantize); inputs and dequantized "
        "values are little-endian f32 hex, readable `input` is rounded for people only.",
        "command": "python3 scripts/make-quant-vectors.py",
        "gguf_version": importlib.metadata.version("gguf"),
        "numpy_version": np.__version__,
        "seed": SEED,
        "cols": COLS,
        "types": TYPES,
        "rows": entries,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {output} ({len(entries)} rows x {COLS} values, gguf {document['gguf_version']})")


if __name__ == "__main__":
    main()
