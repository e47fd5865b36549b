// Loads the napi addon built by `npm run build:native` into native/. Its types are the ones napi-rs generates from
// the Rust binding (native/native.d.ts): they are re-exported here, never restated.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SeedinferError } from './errors.js';
import type { KernelFormat } from '../bench.js';

export type {
  NativeAbortFlag,
  NativeBatchStats,
  NativeBoundedCache,
  NativeCacheStats,
  NativeGenerateOptions,
  NativeGenerationEvent,
  NativeGenerationResult,
  NativeGgufTensor,
  NativeKernelBench,
  NativeKvCacheOptions,
  NativeLimits,
  NativeLoadOptions,
  NativeModel,
  NativeModelInfo,
  NativePerplexity,
  NativePerplexityOptions,
  NativePerplexityWindow,
  NativePrefillOptions,
  NativePrefillReport,
  NativePrefillStage,
  NativeQuantizeEvent,
  NativeQuantizeReport,
  NativeResponseFormat,
  NativeSession,
  NativeSpeculativeOptions,
  NativeThink,
  NativeTimings,
  NativeXAttentionOptions,
} from '../native/native.js';

/** The addon's exports, as napi-rs declares them. */
export type NativeBinding = typeof import('../native/native.js');

/** The formats `createKernelBench` takes (validated in Rust: `kernel_bench.rs`). */
export type NativeKernelFormat = KernelFormat;

/** The formats `writeSyntheticModel` takes (validated in Rust: `gguf_tools.rs`). */
export type NativeSyntheticFormat = 'q4_0' | 'q4_1' | 'q8_0' | 'q2_k' | 'q3_k' | 'q4_k' | 'q5_k' | 'q6_k' | 'iq4_nl' | 'iq4_xs' | 'f16' | 'f32';

/** This platform as napi-rs names it in addon files and platform packages: `linux-x64-gnu`, `darwin-arm64`, … */
function platformName(): string {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
    const libc = report?.header?.glibcVersionRuntime ? 'gnu' : 'musl';
    return `linux-${arch}-${libc}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

let binding: NativeBinding | undefined;

/**
 * The native addon, loaded on first use: a local build (`native/`, made by `npm install` in a clone or
 * `npm run build:native`) if there is one, else the platform package an install from npm brings as an optional
 * dependency (`seedinfer-linux-x64-gnu`, built from `npm/linux-x64-gnu/`). Neither: `NATIVE_BINDING_MISSING`.
 */
export function native(): NativeBinding {
  if (binding) return binding;
  const require = createRequire(import.meta.url);
  const here = path.dirname(fileURLToPath(import.meta.url));
  const platform = platformName();
  const local = path.join(here, '..', 'native', `seedinfer.${platform}.node`);
  if (existsSync(local)) {
    binding = require(local) as NativeBinding;
    return binding;
  }
  const packageName = `seedinfer-${platform}`;
  try {
    binding = require(packageName) as NativeBinding;
    return binding;
  } catch (error) {
    if ((error as { code?: unknown } | null)?.code !== 'MODULE_NOT_FOUND') {
      throw new SeedinferError('NATIVE_BINDING_MISSING', `the native binding ${packageName} failed to load: ${String(error)}`, { cause: error });
    }
    throw new SeedinferError(
      'NATIVE_BINDING_MISSING',
      `no native binding for ${platform}: the package ${packageName} is not installed (npm ships one for linux-x64-gnu) ` +
        `and there is no local build ${local}. To build one from source: clone the seedinfer repository, run ` +
        '`npm install` in it (needs a Rust toolchain, https://rustup.rs), then install that directory (README: Building from source).',
      { cause: error },
    );
  }
}
