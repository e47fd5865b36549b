#!/usr/bin/env python3
"""Prints the SHA-256 of a GGUF file's tensor data (each tensor's bytes, in file order, concatenated) and its tensor
types: the digest __test__/quantize-mix.test.ts compares seedinfer's llama.cpp mixes with. Run it on the file
llama.cpp's quantiser wrote (llama-quantize, or PyPI llama-cpp-python's `llama_model_quantize`) from the same
source.

    python3 scripts/gguf-tensor-digest.py <file.gguf>   (needs `pip install gguf`)
"""

import hashlib
import sys
from collections import Counter

from gguf import GGUFReader

reader = GGUFReader(sys.argv[1])
digest = hashlib.sha256()
for tensor in reader.tensors:
    digest.update(tensor.data.tobytes())
print(digest.hexdigest())
print(dict(sorted(Counter(t.tensor_type.name for t in reader.tensors).items())))
