// seedinfer/bench: microbenchmarks of the engine's own kernels from a script, and the machine limits to judge them
// by. Every timed product runs inside the Rust binding (on a worker thread, in a pool of the given size), so
// neither napi nor promise overhead is in the figures.
import { SeedinferError, toSeedinferError } from './errors.js';
import { native } from './native.js';
import type { KernelFormat, MachineLimits, ProductTiming, ProductTimingOptions } from '../bench.js';

/** The weight formats `timeProduct` takes. */
export const KERNEL_FORMATS: readonly KernelFormat[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1'];

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
    if (!Number.isInteger(samples) || samples < 1 || samples > 1000) {
      throw new SeedinferError('INVALID_OPTION', `samples must be an integer from 1 to 1000, got ${String(samples)}`);
    }
    if (!(batchSeconds > 0 && batchSeconds <= 10)) {
      throw new SeedinferError('INVALID_OPTION', `batchSeconds must be in (0, 10], got ${String(batchSeconds)}`);
    }
    const bench = await native().createKernelBench(format, rows, cols, tokens, threads);
    try {
      const first = await bench.run(1);
      const batch = Math.max(1, Math.round(batchSeconds / Math.max(first, 1e-9)));
      const times: number[] = [];
      for (let i = 0; i < samples; i++) times.push((await bench.run(batch)) / batch);
      times.sort((a, b) => a - b);
      const seconds = times[Math.floor(times.length / 2)];
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
