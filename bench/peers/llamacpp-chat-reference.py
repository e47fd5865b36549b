#!/usr/bin/env python3
"""Writes __test__/fixtures/llamacpp-gemma3-chat.json: conversations formatted by llama.cpp's own Gemma chat
format (`llama_chat_apply_template` with the built-in template "gemma", what llama.cpp uses for Gemma models), which
seedinfer's built-in Gemma 3 template (src/chat-template.ts) must render identically after its BOS.

Usage (needs `pip install llama-cpp-python==0.3.36`): python3 bench/peers/llamacpp-chat-reference.py
"""

import ctypes
import importlib.metadata
import json
from pathlib import Path

import llama_cpp

OUT = Path(__file__).resolve().parent.parent.parent / "__test__/fixtures/llamacpp-gemma3-chat.json"

CONVERSATIONS = [
    ("one_user_turn", [("user", "What is the capital of France?")]),
    ("system_and_user", [("system", "You are terse."), ("user", "Hi")]),
    (
        "multi_turn",
        [
            ("system", "Answer in French."),
            ("user", "Hello"),
            ("assistant", "Bonjour !"),
            ("user", "  How are you?\n"),
        ],
    ),
    ("assistant_last", [("user", "Say yes."), ("assistant", "Yes.")]),
    ("whitespace_and_newlines", [("user", "\n\n  line one\nline two  \n")]),
]


def render(messages, add_generation_prompt: bool) -> str:
    array = (llama_cpp.llama_chat_message * len(messages))()
    keep = []
    for i, (role, content) in enumerate(messages):
        r, c = role.encode(), content.encode()
        keep += [r, c]
        array[i].role, array[i].content = r, c
    size = 1 << 16
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_chat_apply_template(b"gemma", array, len(messages), add_generation_prompt, buf, size)
    assert 0 < n <= size, n
    return buf.raw[:n].decode()


def main() -> None:
    cases = []
    for name, messages in CONVERSATIONS:
        for add in (True, False):
            cases.append(
                {
                    "name": name,
                    "messages": [{"role": r, "content": c} for r, c in messages],
                    "addGenerationPrompt": add,
                    "text": render(messages, add),
                }
            )
    fixture = {
        "generatedBy": f"bench/peers/llamacpp-chat-reference.py (llama-cpp-python {importlib.metadata.version('llama-cpp-python')}, llama_chat_apply_template \"gemma\")",
        "cases": cases,
    }
    OUT.write_text(json.dumps(fixture, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}: {len(cases)} cases")


if __name__ == "__main__":
    main()
