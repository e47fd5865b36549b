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
  NativeSession,
  NativeTimings,
} from '../native/native.js';

/** The addon's exports, as napi-rs declares them. */
export type NativeBinding = typeof import('../native/native.js');

/** The formats `createKernelBench` takes (validated in Rust: `kernel_bench.rs`). */
export type NativeKernelFormat = KernelFormat;

/** The formats `writeSyntheticModel` takes (validated in Rust: `gguf_tools.rs`). */
export type NativeSyntheticFormat = 'q4_0' | 'q4_1' | 'q8_0' | 'q2_k' | 'q3_k' | 'q4_k' | 'q5_k' | 'q6_k' | 'iq4_nl' | 'iq4_xs' | 'f16' | 'f32';

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
