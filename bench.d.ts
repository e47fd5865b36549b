// Public typings of `seedinfer/bench`: microbenchmarks of seedinfer's kernels and the machine's limits.

/** Weight formats of the timed products. */
export type KernelFormat = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1' | 'q2_k' | 'q3_k' | 'q4_k' | 'q5_k' | 'q6_k' | 'iq4_nl' | 'iq4_xs';

/** The formats `timeProduct` takes. */
export declare const KERNEL_FORMATS: readonly KernelFormat[];

/** What this machine can do, measured in this process (see `probeLimits`). */
export interface MachineLimits {
  /** Streaming read bandwidth over 512 MiB, GB/s. */
  readGbPerSecond: number;
  /** f32 fused multiply-add peak, GFLOP/s (2 flops per lane). */
  f32Gflops: number;
  /** int8 multiply-add peak with the instructions the block-quantised kernels use, GOP/s. */
  int8Gops: number;
}

export interface ProductTimingOptions {
  format: KernelFormat;
  /** Output rows (the weight matrix's rows). */
  rows: number;
  /** Input width; a multiple of 32 for the block formats. */
  cols: number;
  /** Rows of activations: 1 is a GEMV (decode), more a GEMM (prefill). Default 1. */
  tokens?: number;
  /** Threads of the product's pool. Default 1. */
  threads?: number;
  /** Timed batches; the median is reported. Default 5. */
  samples?: number;
  /** Length of one batch of products, seconds. Default 0.02. */
  batchSeconds?: number;
}

export interface ProductTiming {
  format: KernelFormat;
  rows: number;
  cols: number;
  tokens: number;
  threads: number;
  /** Instruction set of the kernel, e.g. `avx2+fma+f16c`. */
  isa: string;
  /** Bytes of weights one product reads. */
  weightBytes: number;
  secondsPerProduct: number;
  /** Weight bytes per second: compare with `MachineLimits.readGbPerSecond` for a GEMV. */
  gbPerSecond: number;
  /** 2·rows·cols·tokens per second: compare with the f32 or int8 peak for a GEMM. */
  gopsPerSecond: number;
}

/** Probes read bandwidth and f32 / int8 compute peaks with `threads` threads (default 1), about `seconds` each (default 0.5). */
export declare function probeLimits(options?: { threads?: number; seconds?: number }): Promise<MachineLimits>;

/** Times one matrix product of seedinfer's kernels on the given shape and format. Errors carry `code` (`INVALID_OPTION`, …). */
export declare function timeProduct(options: ProductTimingOptions): Promise<ProductTiming>;

export interface AttentionTimingOptions {
  /** Query heads. */
  heads: number;
  /** KV heads; `heads` must be a multiple (grouped-query attention). */
  kvHeads: number;
  /** Elements per head, even, at most 1024. */
  headDim: number;
  /** Cached positions before the new queries (0 allowed). */
  context: number;
  /** New queries: 1 is a decode step, more a prompt chunk (causal among themselves). Default 1. */
  tokens?: number;
  /** KV cache storage: `f32`, `f16` (the engine's default) or `int8`. Default `f16`. */
  dtype?: 'f32' | 'f16' | 'int8';
  /** Positions per cache block, a multiple of 8. Default 32, the engine's default. */
  blockSize?: number;
  /** Threads of the attention's pool. Default 1. */
  threads?: number;
  /** Timed batches; the median is reported. Default 5. */
  samples?: number;
  /** Length of one batch of attentions, seconds. Default 0.02. */
  batchSeconds?: number;
}

export interface AttentionTiming {
  heads: number;
  kvHeads: number;
  headDim: number;
  context: number;
  tokens: number;
  dtype: 'f32' | 'f16' | 'int8';
  blockSize: number;
  threads: number;
  /** Bytes of keys and values in the cache (the last query reads all of them). */
  cacheBytes: number;
  secondsPerAttention: number;
  /** Cache bytes per second: compare with `MachineLimits.readGbPerSecond` for a decode step. */
  gbPerSecond: number;
  /** 4·heads·headDim per (query, visible position) pair per second (scores and weighted values). */
  gopsPerSecond: number;
}

/** Times the engine's attention over a filled KV cache on the given shape. Errors carry `code` (`INVALID_OPTION`, …). */
export declare function timeAttention(options: AttentionTimingOptions): Promise<AttentionTiming>;
