#!/usr/bin/env python3
"""A random-weight model in Llama-3.2-1B's shape (hidden 2048, FFN 8192, 16 layers, 32 query / 8 KV heads of 64,
tied embeddings) with the default model's tokenizer (vocabulary 49152), quantised by llama.cpp's own quantiser:
what issue 33 compares seedinfer and llama.cpp on when every matrix is a K-quant (SmolLM2's 576-wide rows are not
whole 256-element super-blocks, so its Q4_K_M is mostly fallbacks).

Writes <out>.f16.gguf (random normal weights, std 0.02; norms near 1) with gguf-py, then <out>.<type>.gguf with
`llama_model_quantize` (PyPI llama-cpp-python 0.3.36, which builds llama.cpp from source: install it in a scratch
venv, never in CI). Benchmarks only: the files are ~2.5 GB and ~0.8 GB.

    python3 bench/peers/make-llama1b-shape.py <default-model.gguf> <out-prefix> [q4_k_m,q6_k]
"""

import sys

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS = 2048, 8192, 16, 32, 8
FTYPES = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}


def copy_tokenizer(reader: GGUFReader, writer: GGUFWriter) -> int:
    vocab = 0
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        kind = field.types[0]
        if kind == GGUFValueType.ARRAY:
            item = field.types[1]
            values = [field.parts[i] for i in field.data]
            if item == GGUFValueType.STRING:
                values = [bytes(v).decode("utf-8") for v in values]
            else:
                values = [v[0].item() for v in values]
            writer.add_array(key, values)
            if key == "tokenizer.ggml.tokens":
                vocab = len(values)
        elif kind == GGUFValueType.STRING:
            writer.add_string(key, bytes(field.parts[field.data[0]]).decode("utf-8"))
        elif kind == GGUFValueType.BOOL:
            writer.add_bool(key, bool(field.parts[field.data[0]][0]))
        else:
            writer.add_uint32(key, int(field.parts[field.data[0]][0]))
    return vocab


def main() -> None:
    source, prefix = sys.argv[1], sys.argv[2]
    types = sys.argv[3].split(",") if len(sys.argv) > 3 else ["q4_k_m"]
    reader = GGUFReader(source)
    f16_path = f"{prefix}.f16.gguf"
    writer = GGUFWriter(f16_path, "llama")
    writer.add_name("random weights in Llama-3.2-1B's shape (seedinfer bench)")
    writer.add_block_count(LAYERS)
    writer.add_context_length(8192)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_file_type(1)
    vocab = copy_tokenizer(reader, writer)
    writer.add_vocab_size(vocab)
    rng = np.random.default_rng(1)

    def matrix(rows: int, cols: int) -> np.ndarray:
        return (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float16)

    def norm() -> np.ndarray:
        return (1.0 + 0.02 * rng.standard_normal(HIDDEN, dtype=np.float32)).astype(np.float32)

    kv = KV_HEADS * HIDDEN // HEADS
    writer.add_tensor("token_embd.weight", matrix(vocab, HIDDEN))
    for i in range(LAYERS):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.attn_q.weight", matrix(HIDDEN, HIDDEN))
        writer.add_tensor(f"blk.{i}.attn_k.weight", matrix(kv, HIDDEN))
        writer.add_tensor(f"blk.{i}.attn_v.weight", matrix(kv, HIDDEN))
        writer.add_tensor(f"blk.{i}.attn_output.weight", matrix(HIDDEN, HIDDEN))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", norm())
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", matrix(FFN, HIDDEN))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", matrix(FFN, HIDDEN))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", matrix(HIDDEN, FFN))
    writer.add_tensor("output_norm.weight", norm())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    print(f"wrote {f16_path}")

    import llama_cpp

    for name in types:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = FTYPES[name]
        params.nthread = 2
        out = f"{prefix}.{name}.gguf"
        rc = llama_cpp.llama_model_quantize(f16_path.encode(), out.encode(), params)
        if rc != 0:
            raise SystemExit(f"llama_model_quantize failed ({rc}) for {out}")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
