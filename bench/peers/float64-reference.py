# Float64 reference forward pass of a Llama GGUF (weights dequantised by the `gguf` PyPI package) over the
# teacher-forced passage of the llama.cpp fixture: how far is each engine from exact arithmetic?
#
#   pip install gguf numpy
#   python3 bench/peers/float64-reference.py <model.gguf> __test__/fixtures/llamacpp-smollm2.json out.json \
#       [--int8-activations] [--f16-attention]
#
# --int8-activations rounds every matrix product's input to int8 per 32 values as llama.cpp (and seedinfer) do;
# --f16-attention rounds q, k, v and the attention probabilities to f16 as llama.cpp's f16 KV cache does.
# Prints the agreement of the reference's argmax with llama.cpp's and writes argmax + logit margins.
import json, sys, numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
r = GGUFReader(sys.argv[1])
ref = json.load(open(sys.argv[2]))['teacherForced']
T = {t.name: t for t in r.tensors}
def W(name):
    t = T[name]; a = dequantize(t.data, t.tensor_type).astype(np.float64)
    return a.reshape([int(x) for x in reversed(t.shape)]) if a.ndim == 1 and len(t.shape) > 1 else a
f = lambda k: r.fields[k].contents()
L, H, KV, D = f('llama.block_count'), f('llama.attention.head_count'), f('llama.attention.head_count_kv'), f('llama.embedding_length')
hd = D // H; theta = f('llama.rope.freq_base'); eps = f('llama.attention.layer_norm_rms_epsilon')
toks = np.array(ref['tokens']); n = len(toks)
emb = W('token_embd.weight'); x = emb[toks]
pos = np.arange(n)[:, None]; inv = theta ** (-np.arange(0, hd, 2) / hd); ang = pos * inv  # n, hd/2
cos, sin = np.cos(ang), np.sin(ang)
def rope(v):  # v: n, heads, hd ; interleaved pairs
    a, b = v[..., 0::2], v[..., 1::2]
    out = np.empty_like(v); out[..., 0::2] = a * cos[:, None] - b * sin[:, None]; out[..., 1::2] = a * sin[:, None] + b * cos[:, None]
    return out
import os
Q8 = '--int8-activations' in sys.argv; F16ATT = '--f16-attention' in sys.argv
def q8(v):
    if not Q8: return v
    sh = v.shape; b = v.reshape(-1, 32).astype(np.float32)
    amax = np.abs(b).max(-1, keepdims=True); d = amax / np.float32(127)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax>0, amax, 1), 0).astype(np.float32)
    q = np.round(b * inv)  # numpy rounds half to even
    dd = d.astype(np.float16).astype(np.float64)
    return (q * dd).reshape(sh)
def h16(v): return v.astype(np.float16).astype(np.float64) if F16ATT else v
def norm(v, w): return v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w
mask = np.triu(np.full((n, n), -np.inf), 1)
for l in range(L):
    p = f'blk.{l}.'
    h = norm(x, W(p + 'attn_norm.weight'))
    hq = q8(h); q = h16(rope((hq @ W(p + 'attn_q.weight').T).reshape(n, H, hd))); k = h16(rope((hq @ W(p + 'attn_k.weight').T).reshape(n, KV, hd)))
    v = h16((hq @ W(p + 'attn_v.weight').T).reshape(n, KV, hd))
    k = np.repeat(k, H // KV, axis=1); v = np.repeat(v, H // KV, axis=1)
    s = np.einsum('qhd,khd->hqk', q, k) / np.sqrt(hd) + mask
    s = np.exp(s - s.max(-1, keepdims=True)); s /= s.sum(-1, keepdims=True); s = h16(s)
    o = np.einsum('hqk,khd->qhd', s, v).reshape(n, D)
    x = x + q8(o) @ W(p + 'attn_output.weight').T
    h = norm(x, W(p + 'ffn_norm.weight'))
    hq = q8(h); g = hq @ W(p + 'ffn_gate.weight').T; u = hq @ W(p + 'ffn_up.weight').T
    x = x + q8(g / (1 + np.exp(-g)) * u) @ W(p + 'ffn_down.weight').T
logits = q8(norm(x, W('output_norm.weight'))) @ emb.T
am = logits.argmax(-1)
srt = np.sort(logits, -1); margin = srt[:, -1] - srt[:, -2]
json.dump({'argmax': am.tolist(), 'logitMargin': margin.round(5).tolist()}, open(sys.argv[3], 'w'))
llama = np.array(ref['argmax']); print('reference vs llama.cpp argmax agreement', (am == llama).mean())
