#!/usr/bin/env python3
"""The llama-cpp-python engine of side-by-side.ts (the newest llama.cpp, built natively from PyPI's sdist).

Run by the parent, never by hand: `python llama-cpp-python-child.py <model.gguf> <threads> <context size>`. One JSON
message per line each way, the same messages as the Node children's IPC: it says `ready`, then answers each request
`{"prompt": [ids], "decodeTokens": n}` with a `result` (or an `error`), and leaves on `"exit"`.

Timed as the Node children time theirs: tokens as the caller receives them from `Llama.generate` (greedy: top_k 1,
temperature 0, no repetition penalty; it never stops at an end-of-generation token), the first one ending the
prefill. llama.cpp's own counters (`llama_perf_context`: prompt and decode milliseconds) come with each result. The
context is reset before every run, so the prompt is computed every time (no prefix reuse).
"""

import json
import resource
import sys
import time

import llama_cpp
from llama_cpp import Llama


def send(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main():
    model_path, threads, context_size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    batch = min(context_size, 512)
    try:
        llm = Llama(
            model_path=model_path,
            n_ctx=context_size,
            n_batch=batch,
            n_ubatch=batch,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            flash_attn=False,
            verbose=False,
        )
    except Exception as error:  # the parent shows it
        send({"kind": "error", "message": f"{type(error).__name__}: {error}"})
        return
    system = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    cpu = system.split("CPU : ", 1)[-1].split("\n", 1)[0].strip(" |")
    send({"kind": "ready", "description": f"llama-cpp-python {llama_cpp.__version__}, batch {batch}; {cpu}"})
    for line in sys.stdin:
        request = json.loads(line)
        if request == "exit":
            break
        try:
            llm.reset()
            llama_cpp.llama_perf_context_reset(llm._ctx.ctx)
            token_ids, times = [], []
            start = time.perf_counter()
            for token in llm.generate(
                request["prompt"], top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True
            ):
                times.append(time.perf_counter())
                token_ids.append(int(token))
                if len(token_ids) >= request["decodeTokens"]:
                    break
            perf = llama_cpp.llama_perf_context(llm._ctx.ctx)
            send(
                {
                    "kind": "result",
                    "ttftMs": (times[0] - start) * 1e3,
                    "decodeMs": (times[-1] - times[0]) * 1e3,
                    "tokenIds": token_ids,
                    # ru_maxrss is in KiB on Linux.
                    "peakRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                    "own": {
                        "promptMs": perf.t_p_eval_ms,
                        "promptTokens": perf.n_p_eval,
                        "decodeMs": perf.t_eval_ms,
                        "decodeTokens": perf.n_eval,
                    },
                }
            )
        except Exception as error:
            send({"kind": "error", "message": f"{type(error).__name__}: {error}"})


if __name__ == "__main__":
    main()
