// seedinfer/bench, through the package's own export map: timed products of every kernel format and the machine
// limits. No speed is asserted (speed belongs in benchmarks); the figures must be consistent with each other.
import test from 'ava';
import type { AttentionTiming, ProductTiming } from '../bench.js';

const api = import('seedinfer/bench');

test('timeProduct times every format on a small shape, GEMV and GEMM, and reports consistent figures', async (t) => {
  const { KERNEL_FORMATS, timeProduct } = await api;
  t.deepEqual([...KERNEL_FORMATS], ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k', 'q4_k', 'q5_k', 'q6_k', 'iq4_nl', 'iq4_xs']);
  for (const format of KERNEL_FORMATS) {
    for (const tokens of [1, 7]) {
      const r: ProductTiming = await timeProduct({ format, rows: 64, cols: 256, tokens, threads: 2, samples: 3, batchSeconds: 0.002 });
      t.true(r.secondsPerProduct > 0 && Number.isFinite(r.secondsPerProduct), `${format}: ${r.secondsPerProduct}`);
      t.is(r.gopsPerSecond.toPrecision(6), ((2 * 64 * 256 * tokens) / r.secondsPerProduct / 1e9).toPrecision(6));
      t.is(r.gbPerSecond.toPrecision(6), (r.weightBytes / r.secondsPerProduct / 1e9).toPrecision(6));
      t.true(r.isa.length > 0);
    }
  }
  const q4 = await timeProduct({ format: 'q4_0', rows: 64, cols: 256, samples: 1, batchSeconds: 0.001 });
  t.is(q4.weightBytes, 64 * 8 * 18, 'Q4_0: 18 bytes per block of 32');
});

test('probeLimits measures bandwidth and peaks; bad input is a coded error', async (t) => {
  const { probeLimits, timeProduct } = await api;
  const limits = await probeLimits({ threads: 1, seconds: 0.02 });
  t.true(limits.readGbPerSecond > 0 && limits.f32Gflops > 0 && limits.int8Gops > 0, JSON.stringify(limits));
  const code = async (p: Promise<unknown>) => ((await t.throwsAsync(p)) as unknown as { code: string }).code;
  t.is(await code(timeProduct({ format: 'q6_k' as 'q4_0', rows: 4, cols: 32 })), 'INVALID_OPTION');
  t.is(await code(timeProduct({ format: 'q4_0', rows: 4, cols: 33 })), 'INVALID_OPTION');
  t.is(await code(timeProduct({ format: 'f32', rows: 0, cols: 32 })), 'INVALID_OPTION');
  t.is(await code(timeProduct({ format: 'f32', rows: 4, cols: 32, samples: 0 })), 'INVALID_OPTION');
});

test('timeAttention times decode and prompt attention over every cache dtype; bad shapes are coded errors', async (t) => {
  const { timeAttention } = await api;
  for (const dtype of ['f32', 'f16', 'int8'] as const) {
    for (const [context, tokens] of [[0, 1], [300, 1], [64, 16]]) {
      const r: AttentionTiming = await timeAttention({ heads: 9, kvHeads: 3, headDim: 64, context, tokens, dtype, threads: 2, samples: 3, batchSeconds: 0.002 });
      t.true(r.secondsPerAttention > 0 && Number.isFinite(r.secondsPerAttention), `${dtype} ${context}: ${r.secondsPerAttention}`);
      t.is(r.gbPerSecond.toPrecision(6), (r.cacheBytes / r.secondsPerAttention / 1e9).toPrecision(6));
      t.true(r.cacheBytes > 0);
    }
  }
  const f32 = await timeAttention({ heads: 4, kvHeads: 2, headDim: 64, context: 63, dtype: 'f32', samples: 1, batchSeconds: 0.001 });
  t.is(f32.cacheBytes, 2 * 2 * 32 * 64 * 4 * 2, 'two blocks of 32 positions, keys and values, 2 KV heads x 64 f32');
  const code = async (p: Promise<unknown>) => ((await t.throwsAsync(p)) as unknown as { code: string }).code;
  t.is(await code(timeAttention({ heads: 9, kvHeads: 2, headDim: 64, context: 8 })), 'INVALID_OPTION');
  t.is(await code(timeAttention({ heads: 4, kvHeads: 2, headDim: 63, context: 8 })), 'INVALID_OPTION');
  t.is(await code(timeAttention({ heads: 4, kvHeads: 2, headDim: 64, context: -1 })), 'INVALID_OPTION');
  t.is(await code(timeAttention({ heads: 4, kvHeads: 2, headDim: 64, context: 8, dtype: 'q4' as 'f16' })), 'INVALID_OPTION');
});
