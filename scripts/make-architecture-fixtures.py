#!/usr/bin/env python3
"""Writes crates/seedinfer-engine/tests/data/architectures/<name>/: tiny random-weight checkpoints of each
architecture seedinfer runs besides plain llama, with transformers' reference logits and greedy tokens, checked by
crates/seedinfer-engine/tests/architectures.rs.

- `llama3`: a Llama 3.1/3.2-style config (`rope_scaling` of type llama3, untied embeddings), saved in
  the transformers-4 form (`rope_scaling` + top-level `rope_theta`); `reference.json` also holds the logits of the
  same weights with linear RoPE scaling (factor 4).
- `qwen2`: Qwen2/2.5 (q/k/v biases, tied embeddings, theta 1e6).
- `qwen3`: Qwen3 (RMSNorm over each q/k head, head_dim 32 != hidden/heads, untied).
- `gemma3`: Gemma 3 text (embeddings × √hidden, `1 + w` norms, norms after attention and MLP, q/k head norms,
  GELU-tanh, six layers: five local ones with a sliding window of 8 positions and RoPE base 10000, then a global one
  with base 1e6, as llama.cpp assumes for a converted file; tied). `reference.json` also holds the logits with
  `query_pre_attn_scalar` 24 instead of head_dim 16, and `long_prompt`: a 4096-token prompt with the logits after
  its first 1000 tokens and after all of it.
- `phi3`: Phi-3 (q/k/v in one matrix, gate/up in one; untied). `reference.json` also holds the logits with a
  sliding window of 8 positions on every layer (Phi-3-mini's config sets 2047), and with LongRoPE (random factors,
  a 4096-position context over an original one of 16, then 64: the long, then the short factors). Its tokenizer_config names
  GPT2Tokenizer, so that llama.cpp's converter takes the BPE vocabulary (it wants Phi-3's SentencePiece otherwise).

Each directory has config.json, model.safetensors (f32), tokenizer.json + tokenizer_config.json (a byte-level BPE of 300 tokens trained
here, then reserved special tokens up to the model's 320) and reference.json: the prompt's token ids, transformers' f32 logits at
every prompt position, and its greedy continuation. Weights come from a fixed seed; the biases and norm weights are
randomised too (transformers initialises them to 0 and 1, which would test nothing).

Usage (from the repository root; needs `pip install torch transformers tokenizers safetensors`):

    python3 scripts/make-architecture-fixtures.py [output-dir] [name ...]
"""

import copy
import importlib.metadata
import json
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM

SEED = 20261206
VOCAB = 320
PROMPT_TOKENS = 24
GREEDY_TOKENS = 16
DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "crates/seedinfer-engine/tests/data/architectures"

COMMON = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=VOCAB,
    max_position_embeddings=131072,
    rms_norm_eps=1e-6,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
)

CONFIGS = {
    "llama3": dict(
        COMMON,
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        tie_word_embeddings=False,
        # Llama 3.2 has theta 500000, factor 32, low 1, high 4, original 8192: at a 24-token prompt that scaling
        # moves angles by less than 0.01 rad. These values put the 8 frequencies of a 16-wide head in all three
        # bands (kept, smoothed, divided) within the prompt, so the test sees every branch.
        rope_theta=10000.0,
        rope_scaling=dict(
            rope_type="llama3",
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=8.0,
            original_max_position_embeddings=64,
        ),
    ),
    "qwen2": dict(
        COMMON,
        architectures=["Qwen2ForCausalLM"],
        model_type="qwen2",
        tie_word_embeddings=True,
        rope_theta=1000000.0,
        use_sliding_window=False,
        sliding_window=4096,
        max_window_layers=2,
    ),
    "qwen3": dict(
        COMMON,
        architectures=["Qwen3ForCausalLM"],
        model_type="qwen3",
        head_dim=32,
        tie_word_embeddings=False,
        rope_theta=1000000.0,
        attention_bias=False,
        use_sliding_window=False,
        sliding_window=None,
        max_window_layers=2,
    ),
    "gemma3": dict(
        {k: v for k, v in COMMON.items() if k != "hidden_act"},
        architectures=["Gemma3ForCausalLM"],
        model_type="gemma3_text",
        num_hidden_layers=6,
        head_dim=16,
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=16,
        tie_word_embeddings=True,
        rope_theta=1000000.0,
        rope_local_base_freq=10000.0,
        rope_scaling=None,
        sliding_window=8,
        layer_types=["sliding_attention"] * 5 + ["full_attention"],
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        attention_bias=False,
        pad_token_id=0,
    ),
    "phi3": dict(
        COMMON,
        architectures=["Phi3ForCausalLM"],
        model_type="phi3",
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        rope_scaling=None,
        sliding_window=None,
        pad_token_id=0,
    ),
}

CORPUS = [
    "Once upon a time, there was a little robot who liked to count: 1, 2, 3, 42, 1000.",
    "def add(a, b):\n    return a + b  # simple code\n",
    "Qwen and Llama read the same words; tokens differ.   Spaces   and\ttabs.",
    "Émilie a écrit « bonjour » — naïve café, 東京, Москва, 🙂.",
]


def train_tokenizer() -> Tokenizer:
    """A byte-level BPE as GPT-2/Llama 3/Qwen use, small enough for a fixture."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    # Reserved special tokens up to the model's vocabulary, as Llama 3 does, so every id the model can choose
    # decodes.
    # Qwen's own specials come first: transformers' Qwen2Tokenizer adds <|endoftext|> when it is missing.
    tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.add_special_tokens([f"<|reserved_{i}|>" for i in range(tok.get_vocab_size(), VOCAB)])
    return tok


def randomise(model: torch.nn.Module) -> None:
    """Every parameter random (norm weights around 1, biases small), from the fixed seed."""
    gen = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * noise)
            elif name.endswith(".bias"):
                p.copy_(0.5 * noise)
            else:
                p.copy_(0.08 * noise)


def logits_of(model, ids: list[int]) -> list[list[float]]:
    with torch.no_grad():
        out = model(torch.tensor([ids])).logits[0]
    return [[float(f"{v:.7g}") for v in row] for row in out.tolist()]


def greedy(model, ids: list[int]) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            torch.tensor([ids]),
            max_new_tokens=GREEDY_TOKENS,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
    return out[0, len(ids):].tolist()


def build(name: str, raw: dict, out: Path, tokenizer: Tokenizer) -> None:
    torch.manual_seed(SEED)
    config = AutoConfig.for_model(**copy.deepcopy(raw))
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32).eval()
    randomise(model)
    if raw["tie_word_embeddings"]:
        model.tie_weights()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    # The config as a transformers-4 release writes it (rope_scaling + rope_theta), whatever this one writes.
    (out / "config.json").write_text(json.dumps(dict(raw, torch_dtype="float32"), indent=2) + "\n")
    for extra in ["generation_config.json"]:
        (out / extra).unlink(missing_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    # The generic fast tokenizer: Qwen2Tokenizer would add an <|endoftext|> token beyond the model's vocabulary.
    tokenizer_class = "GPT2Tokenizer" if name == "phi3" else "PreTrainedTokenizerFast"
    tokenizer_config = dict(tokenizer_class=tokenizer_class, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")

    gen = torch.Generator().manual_seed(SEED + 1)
    prompt = torch.randint(3, 300, (PROMPT_TOKENS,), generator=gen).tolist()
    reference = {
        "generator": f"scripts/make-architecture-fixtures.py (transformers {importlib.metadata.version('transformers')}, torch {torch.__version__})",
        "prompt": prompt,
        "logits": logits_of(model, prompt),
        "greedy": greedy(model, prompt),
    }
    if name == "llama3":
        linear = dict(raw, rope_scaling=dict(rope_type="linear", factor=4.0))
        linear_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**linear), torch_dtype=torch.float32).eval()
        linear_model.load_state_dict(model.state_dict())
        reference["linear_factor_4_logits"] = logits_of(linear_model, prompt)
    if name == "phi3":
        windowed = dict(raw, sliding_window=8)
        windowed_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**windowed), torch_dtype=torch.float32).eval()
        windowed_model.load_state_dict(model.state_dict())
        reference["sliding_window_8_logits"] = logits_of(windowed_model, prompt)
        # LongRoPE as Phi-3's 128K variants configure it, at toy sizes: the prompt (24) is longer than an original
        # context of 16 (long factors) and shorter than one of 64 (short factors).
        factors = torch.Generator().manual_seed(SEED + 2)
        short = (1.0 + 3.0 * torch.rand(8, generator=factors)).tolist()
        long = (1.0 + 3.0 * torch.rand(8, generator=factors)).tolist()
        for original in (16, 64):
            scaled = dict(
                raw,
                max_position_embeddings=4096,
                original_max_position_embeddings=original,
                rope_scaling=dict(type="longrope", short_factor=short, long_factor=long),
            )
            scaled_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**scaled), torch_dtype=torch.float32).eval()
            scaled_model.load_state_dict(model.state_dict())
            reference[f"longrope_original_{original}"] = {
                "rope_scaling": scaled["rope_scaling"],
                "logits": logits_of(scaled_model, prompt),
            }
    if name == "gemma3":
        scaled = dict(raw, query_pre_attn_scalar=24)
        scaled_model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**scaled), torch_dtype=torch.float32).eval()
        scaled_model.load_state_dict(model.state_dict())
        reference["query_scalar_24_logits"] = logits_of(scaled_model, prompt)
        long_prompt = torch.randint(3, 300, (4096,), generator=gen).tolist()
        reference["long_prompt"] = {
            "tokens": long_prompt,
            "logits_after_1000": logits_of(model, long_prompt[:1000])[-1],
            "logits_after_4096": logits_of(model, long_prompt)[-1],
        }
    (out / "reference.json").write_text(json.dumps(reference, separators=(",", ":")) + "\n")
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"{name}: {size} bytes in {out}")


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUTPUT
    names = sys.argv[2:] or list(CONFIGS)
    tokenizer = train_tokenizer()
    for name in names:
        build(name, CONFIGS[name], out / name, tokenizer)


if __name__ == "__main__":
    main()
