#!/usr/bin/env python3
"""Writes crates/seedinfer-formats/tests/data/kquant-vectors.json: K-quant super-blocks (Q2_K .. Q6_K), IQ4_NL
and IQ4_XS blocks and their dequantisation by the PyPI `gguf` package (gguf-py, llama.cpp's Python port of ggml's dequantisers),
checked bit for bit by crates/seedinfer-formats/tests/reference_vectors.rs.

The blocks are random bytes with chosen super-block scales (ordinary, zero, negative, subnormal, the largest
f16) and edge-case sub-block scales (all bits set, Q6_K's -128 and 127). seedinfer reads K-quants but does not
write them yet, so only the dequantisation is compared. Bytes and floats are little-endian hex.

Usage (from the repository root; needs `pip install gguf numpy`):

    python3 scripts/make-kquant-vectors.py [output.json]
"""

import importlib.metadata
import json
import sys
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType
from gguf import quants

SEED = 20261206
# New types go at the end: the random bytes of the earlier ones stay the same.
BLOCK_BYTES = {"Q4_K": 144, "Q5_K": 176, "Q6_K": 210, "IQ4_NL": 18, "IQ4_XS": 136, "Q2_K": 84, "Q3_K": 110}
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "crates/seedinfer-formats/tests/data/kquant-vectors.json"
SCALES = [  # (name, d, dmin)
    ("ordinary", 0.0123, 0.0071),
    ("zero_scales", 0.0, 0.0),
    ("negative", -0.5, -0.25),
    ("subnormal", 3.0e-7, 5.0e-8),
    ("largest_f16", 65504.0, 65504.0),
    ("one", 1.0, 1.0),
]


def f16_bytes(value: float) -> np.ndarray:
    return np.array([value], dtype="<f2").view(np.uint8)


def blocks(type_name: str, rng: np.random.Generator) -> list[tuple[str, np.ndarray]]:
    size = BLOCK_BYTES[type_name]
    out = []
    for name, d, dmin in SCALES:
        for variant in ("random", "saturated"):
            block = rng.integers(0, 256, size, dtype=np.uint8)
            if variant == "saturated":
                if type_name == "Q6_K":
                    block[192:208] = np.array([0x80, 0x7F] * 8, dtype=np.uint8)  # scales -128 and 127
                    block[:192] = 0xFF  # every weight 63
                else:
                    block[4:16] = 0xFF  # every scale and minimum 63
            if type_name == "Q6_K":
                block[208:210] = f16_bytes(d)
            elif type_name == "IQ4_XS":
                if variant == "saturated":
                    block[2:8] = 0xFF  # every sub-block scale 63 (31 after the offset)
                    block[8:] = np.array([0x0F, 0xF0] * 64, dtype=np.uint8)
                block[0:2] = f16_bytes(d)
            elif type_name == "Q2_K":
                if variant == "saturated":
                    block[:80] = 0xFF  # every scale, minimum and weight 15, 15 and 3
                block[80:82] = f16_bytes(d)
                block[82:84] = f16_bytes(dmin)
            elif type_name == "Q3_K":
                if variant == "saturated":
                    block[:108] = 0  # every weight -4, every scale -32
                block[108:110] = f16_bytes(d)
            elif type_name == "IQ4_NL":
                if variant == "saturated":
                    block[2:] = np.array([0x0F, 0xF0] * 8, dtype=np.uint8)  # the table's two ends, -127 and 113
                block[0:2] = f16_bytes(d)
            else:
                block[0:2] = f16_bytes(d)
                block[2:4] = f16_bytes(dmin)
            out.append((f"{name}_{variant}", block))
    return out


def main() -> None:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    rng = np.random.default_rng(SEED)
    entries = []
    for type_name in BLOCK_BYTES:
        qtype = GGMLQuantizationType[type_name]
        for name, block in blocks(type_name, rng):
            values = quants.dequantize(block.reshape(1, -1), qtype).astype("<f4").reshape(-1)
            assert values.shape == (32 if type_name == "IQ4_NL" else 256,)
            entries.append({
                "type": type_name,
                "name": name,
                "block": block.tobytes().hex(),
                "dequantized_f32le": values.tobytes().hex(),
            })
    document = {
        "generator": f"scripts/make-kquant-vectors.py with gguf {importlib.metadata.version('gguf')}",
        "entries": entries,
    }
    output.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {len(entries)} blocks to {output}")


if __name__ == "__main__":
    main()
