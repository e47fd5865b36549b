// Loads the napi addon built by `npm run build:native` into native/.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SeedinferError } from './errors.js';
import type { CacheStats } from '../index.js';

export interface NativeGenerateOptions {
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repetitionPenalty: number;
  repetitionLastN: number;
  seed: number;
  stop: string[];
  ignoreEos: boolean;
  prefill?: NativePrefillOptions;
}

export interface NativePrefillOptions {
  strategy: string;
  schedule?: { layer: number; keep: number }[];
  layer?: number;
  keepTokens?: number;
  questionTokens?: number;
  pooling?: number;
  uniformShare?: number;
  reselectInDecode?: boolean;
}

export interface NativePrefillReport {
  strategy: string;
  layerTokens: number[];
  droppedTokens: number;
  revivedTokens: number;
  decodeRevivedTokens: number;
}

export interface NativeTimings {
  ttftMs: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  promptTokens: number;
  reusedPromptTokens: number;
  generatedTokens: number;
  totalMs: number;
}

export interface NativeGenerationResult {
  text: string;
  tokenIds: number[];
  stopReason: string;
  timings: NativeTimings;
  prefill: NativePrefillReport;
}

export interface NativeGenerationEvent {
  kind: 'token' | 'done' | 'error';
  tokenId?: number;
  text?: string;
  result?: NativeGenerationResult;
  error?: string;
}

export interface NativeModelInfo {
  architecture: string;
  path: string;
  fileFormat: string;
  parameterCount: number;
  layers: number;
  hiddenSize: number;
  intermediateSize: number;
  attentionHeads: number;
  kvHeads: number;
  headDim: number;
  vocabSize: number;
  contextLength: number;
  ropeTheta: number;
  ropeStyle: string;
  tiedEmbeddings: boolean;
  fileTensorFormats: Record<string, number>;
  computeFormat: string;
  weightFallbacks: string[];
  fileBytes: number;
  weightBytes: number;
  kvBytesPerToken: number;
  threads: number;
  numerics: string;
  bosToken?: string;
  eosToken?: string;
  chatTemplate?: string;
  kernelIsa: string;
}

export interface NativeAbortFlag {
  abort(): void;
}

export interface NativeQuantizeReport {
  format: string;
  outBytes: number;
  quantizedTensors: number;
  quantizedWeights: number;
  quantizedBytes: number;
  kept: string[];
  seconds: number;
}

export interface NativeQuantizeEvent {
  kind: string;
  tensor?: string;
  doneWeights?: number;
  totalWeights?: number;
  report?: NativeQuantizeReport;
  error?: string;
}

export interface NativeSession {
  readonly tokenCount: number;
  readonly contextSize: number;
  readonly kvBytes: number;
  tokenIds(): number[];
  lastLogits(): Float32Array | null;
  reset(): void;
  fork(): NativeSession;
  rewind(n: number): void;
  dispose(): void;
  save(path: string, abort: NativeAbortFlag): Promise<void>;
  predictNext(tokens: Uint32Array, abort: NativeAbortFlag): Promise<number[]>;
  generate(
    prompt: Uint32Array,
    options: NativeGenerateOptions,
    onEvent: (event: NativeGenerationEvent) => void,
    abort: NativeAbortFlag,
  ): void;
}

export interface NativeModel {
  info(): NativeModelInfo;
  tokenize(text: string, addBos: boolean, special: boolean): number[];
  detokenize(tokenIds: number[], skipSpecial: boolean): string;
  createSession(contextSize: number): NativeSession;
  cacheStats(): NativeCacheStats;
  clearPrefixCache(): void;
  loadSession(path: string, abort: NativeAbortFlag): Promise<NativeSession>;
  evaluatePerplexity(tokens: Uint32Array, options: { window?: number }, abort: NativeAbortFlag): Promise<NativePerplexity>;
}

/** `evaluatePerplexity`'s result (crates/seedinfer-node/src/perplexity.rs). */
export interface NativePerplexity {
  perplexity: number;
  tokens: number;
  nll: number;
  window: number;
  windows: { tokens: number; nll: number }[];
}

export interface NativeKvCacheOptions {
  dtype?: string;
  blockSize?: number;
  budgetBytes?: number;
  prefixCaching?: boolean;
}

/** The binding returns exactly the public `CacheStats` (crates/seedinfer-node/src/model.rs). */
export type NativeCacheStats = CacheStats;

export interface NativeBinding {
  /** The `weights` option names (Rust's `WeightFormat::ALL`). */
  weightFormats(): string[];
  /** The `quantizeModel` format names (Rust's `QuantFormat::ALL`). */
  quantizeFormats(): string[];
  loadModel(path: string, options: { threads?: number; weights?: string; kvCache?: NativeKvCacheOptions; numerics?: string }): Promise<NativeModel>;
  NativeAbortFlag: new () => NativeAbortFlag;
  quantizeModel(
    source: string,
    format: string,
    out: string,
    threads: number | null,
    onEvent: (event: NativeQuantizeEvent) => void,
    abort: NativeAbortFlag,
  ): void;
}

function addonFileName(): string {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
    const libc = report?.header?.glibcVersionRuntime ? 'gnu' : 'musl';
    return `seedinfer.linux-${arch}-${libc}.node`;
  }
  if (platform === 'win32') return `seedinfer.win32-${arch}-msvc.node`;
  return `seedinfer.${platform}-${arch}.node`;
}

let binding: NativeBinding | undefined;

/** The native addon, loaded on first use. */
export function native(): NativeBinding {
  if (binding) return binding;
  const here = path.dirname(fileURLToPath(import.meta.url));
  const file = path.join(here, '..', 'native', addonFileName());
  if (!existsSync(file)) {
    throw new SeedinferError(
      'NATIVE_ADDON_MISSING',
      `the native addon ${file} is missing: run \`npm run build:native\` (needs a Rust toolchain)`,
    );
  }
  const require = createRequire(import.meta.url);
  binding = require(file) as NativeBinding;
  return binding;
}

/** Native kernel benchmarks (`bench/kernels.ts`): one weight matrix, products timed inside a thread pool. */
export interface NativeKernelBench {
  /** Bytes of weights one product reads. */
  readonly weightBytes: number;
  /** Instruction set of the kernels, e.g. `avx2+fma+f16c`. */
  readonly isa: string;
  /** Seconds taken by `iterations` products (block formats include quantising the activations). */
  run(iterations: number): Promise<number>;
  /** Frees the matrix now. */
  dispose(): void;
}

/** Machine limits measured in the same process as the kernels. */
export interface NativeLimits {
  /** Streaming read bandwidth over 512 MiB, GB/s. */
  readGbPerSecond: number;
  /** f32 FMA peak, GFLOP/s (2 flops per FMA lane). */
  f32Gflops: number;
  /** int8 multiply-add peak (AVX2 vpmaddubsw + vpmaddwd), GOP/s (2 ops per multiply-add). */
  int8Gops: number;
}

export type NativeKernelFormat = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_1' | 'q5_0' | 'q5_1';

export interface NativeKernelBinding {
  createKernelBench(
    format: NativeKernelFormat,
    rows: number,
    cols: number,
    tokens: number,
    threads: number,
  ): Promise<NativeKernelBench>;
  probeLimits(threads: number, seconds: number): Promise<NativeLimits>;
}

/** One tensor of a GGUF file, from its header. */
export interface NativeGgufTensor {
  name: string;
  /** Storage type as ggml names it, e.g. `Q4_0`. */
  tensorType: string;
  /** Outermost dimension first. */
  shape: number[];
  /** Bytes of the tensor's data in the file. */
  bytes: number;
}

export type NativeSyntheticFormat = 'q4_0' | 'q4_1' | 'q8_0' | 'f16' | 'f32';

/** GGUF tools for benchmarks and tests (`bench/peers/side-by-side.ts`). */
export interface NativeGgufToolsBinding {
  /**
   * Writes a copy of `sourceGguf` to `outPath`: all metadata (tokenizer included), every tensor replaced by random
   * values from `seed` (norms near 1.0 in F32, matrices normal with std 0.02 in `format`). Whole or not at all.
   */
  writeSyntheticModel(sourceGguf: string, outPath: string, format: NativeSyntheticFormat, seed: number): Promise<void>;
  /** The tensor table of a GGUF file, in file order. */
  ggufTensors(path: string): NativeGgufTensor[];
}
