// seedinfer/bench: microbenchmarks of the engine's own kernels from a script, and the machine limits to judge them
// by. Every timed product runs inside the Rust binding (on a worker thread, in a pool of the given size), so
// neither napi nor promise overhead is in the figures.
import { SeedinferError, toSeedinferError } from './errors.js';
import { native } from './native.js';
import type {
  AttentionTiming,
  AttentionTimingOptions,
  KernelFormat,
  MachineLimits,
  ProductTiming,
  ProductTimingOptions,
} from '../bench.js';

function checkSampling(samples: number, batchSeconds: number): void {
  if (!Number.isInteger(samples) || samples < 1 || samples > 1000) {
    throw new SeedinferError('INVALID_OPTION', `samples must be an integer from 1 to 1000, got ${String(samples)}`);
  }
  if (!(batchSeconds > 0 && batchSeconds <= 10)) {
    throw new SeedinferError('INVALID_OPTION', `batchSeconds must be in (0, 10], got ${String(batchSeconds)}`);
  }
}

/** The median seconds of one run over `samples` batches of about `batchSeconds` each. */
async function medianSeconds(bench: { run(iterations: number): Promise<number> }, samples: number, batchSeconds: number): Promise<number> {
  const first = await bench.run(1);
  const batch = Math.max(1, Math.round(batchSeconds / Math.max(first, 1e-9)));
  const times: number[] = [];
  for (let i = 0; i < samples; i++) times.push((await bench.run(batch)) / batch);
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/** Throws INVALID_OPTION unless `value` is an integer in [min, max]. */
function checkCount(name: string, value: unknown, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new SeedinferError('INVALID_OPTION', `${name} must be an integer from ${min} to ${max}, got ${String(value)}`);
  }
  return value;
}

/** The weight formats `timeProduct` takes. */
export const KERNEL_FORMATS: readonly KernelFormat[] = [
  'f32',
  'f16',
  'bf16',
  'q8_0',
  'q4_0',
  'q4_1',
  'q5_0',
  'q5_1',
  'q2_k',
  'q3_k',
  'q4_k',
  'q5_k',
  'q6_k',
  'iq4_nl',
  'iq4_xs',
];

/** Streaming read bandwidth and f32 / int8 compute peaks with `threads` threads, measured for about `seconds` each. */
export async function probeLimits(options: { threads?: number; seconds?: number } = {}): Promise<MachineLimits> {
  try {
    const limits = await native().probeLimits(options.threads ?? 1, options.seconds ?? 0.5);
    return { ...limits };
  } catch (error) {
    throw toSeedinferError(error);
  }
}

/**
 * Times `out = x · Wᵀ` for a deterministic random `rows x cols` matrix `W` in `format` and `tokens` rows of
 * activations (block formats include quantising the activations to int8, as the engine does): the median of
 * `samples` batches, each lasting about `batchSeconds`.
 */
export async function timeProduct(options: ProductTimingOptions): Promise<ProductTiming> {
  try {
    if (typeof options !== 'object' || options === null) throw new SeedinferError('INVALID_OPTION', 'timeProduct needs { format, rows, cols }');
    const { format, rows, cols, tokens = 1, threads = 1, samples = 5, batchSeconds = 0.02 } = options;
    checkSampling(samples, batchSeconds);
    const bench = await native().createKernelBench(format, rows, cols, tokens, threads);
    try {
      const seconds = await medianSeconds(bench, samples, batchSeconds);
      return {
        format,
        rows,
        cols,
        tokens,
        threads,
        isa: bench.isa,
        weightBytes: bench.weightBytes,
        secondsPerProduct: seconds,
        gbPerSecond: bench.weightBytes / seconds / 1e9,
        gopsPerSecond: (2 * rows * cols * tokens) / seconds / 1e9,
      };
    } finally {
      bench.dispose();
    }
  } catch (error) {
    throw toSeedinferError(error);
  }
}

/**
 * Times the engine's attention (the scheduler the forward pass uses) of `tokens` new queries over a paged KV cache
 * of `context` earlier positions in `dtype`, filled with deterministic random keys and values: the median of
 * `samples` batches, each lasting about `batchSeconds`.
 */
export async function timeAttention(options: AttentionTimingOptions): Promise<AttentionTiming> {
  try {
    if (typeof options !== 'object' || options === null) throw new SeedinferError('INVALID_OPTION', 'timeAttention needs { heads, kvHeads, headDim, context }');
    const { tokens = 1, threads = 1, dtype = 'f16', blockSize = 32, samples = 5, batchSeconds = 0.02 } = options;
    const shape = {
      heads: checkCount('heads', options.heads, 1, 1024),
      kvHeads: checkCount('kvHeads', options.kvHeads, 1, 1024),
      headDim: checkCount('headDim', options.headDim, 2, 1024),
      context: checkCount('context', options.context, 0, 1 << 24),
      tokens: checkCount('tokens', tokens, 1, 1 << 16),
      blockSize: checkCount('blockSize', blockSize, 8, 1024),
      dtype,
    };
    checkSampling(samples, batchSeconds);
    const bench = await native().createAttentionBench(shape, threads);
    try {
      const seconds = await medianSeconds(bench, samples, batchSeconds);
      // Query t sees context + t + 1 positions; each score and each weighted value is one multiply-add per element.
      const scored = shape.tokens * shape.context + (shape.tokens * (shape.tokens + 1)) / 2;
      return {
        ...shape,
        threads,
        cacheBytes: bench.cacheBytes,
        secondsPerAttention: seconds,
        gbPerSecond: bench.cacheBytes / seconds / 1e9,
        gopsPerSecond: (4 * shape.heads * shape.headDim * scored) / seconds / 1e9,
      };
    } finally {
      bench.dispose();
    }
  } catch (error) {
    throw toSeedinferError(error);
  }
}
