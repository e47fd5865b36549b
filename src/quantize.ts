// quantizeModel(): rewrites a model's layer matrices in one of seedinfer's own formats (SeedLM 4/3-bit, q3_rtn) into
// a seedinfer container that Model.load reads, or a whole GGUF model in one of llama.cpp's mixes (q4_k_m, …) as a
// standard GGUF. The encoding runs on native threads; the event loop stays free.
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { SeedinferError, checkOptionNames, optionNames, toSeedinferError, eventError } from './errors.js';
import { resolveModelSource } from './fetch/resolve.js';
import { native } from './native.js';
import { withAbortFlag } from './abort.js';
import type { NativeQuantizeEvent } from './native.js';
import type { QuantizeOptions, QuantizeReport } from '../index.js';

/** The formats' names, for types; the binding's list (Rust's) is what is checked against. */
export const QUANTIZE_FORMATS = [
  'seedlm4',
  'seedlm3',
  'q3_rtn',
  'q8_0',
  'q4_0',
  'q4_1',
  'q5_0',
  'q5_1',
  'q2_k',
  'q3_k_s',
  'q3_k_m',
  'q3_k_l',
  'q4_k_s',
  'q4_k_m',
  'q5_k_s',
  'q5_k_m',
  'q6_k',
  'iq4_nl',
  'iq4_xs',
] as const;

const QUANTIZE_OPTIONS = optionNames<QuantizeOptions>()(['format', 'out', 'threads', 'onProgress', 'signal', 'cacheDir']);

/** Quantises `source` (a .gguf file, a Hugging Face directory, a Hub id or "default") into `options.out`. */
export async function quantizeModel(source: string | undefined, options: QuantizeOptions): Promise<QuantizeReport> {
  try {
    if (typeof options !== 'object' || options === null) throw new SeedinferError('INVALID_OPTION', 'options are required: { format, out }');
    checkOptionNames('quantizeModel', options, QUANTIZE_OPTIONS);
    const formats = native().quantizeFormats();
    if (!formats.includes(options.format)) {
      throw new SeedinferError('INVALID_OPTION', `format must be one of ${formats.join(', ')}, got ${JSON.stringify(options.format)}`);
    }
    if (typeof options.out !== 'string' || options.out === '') throw new SeedinferError('INVALID_OPTION', 'out must be a file path');
    if (options.threads !== undefined && !(Number.isInteger(options.threads) && options.threads >= 1 && options.threads <= 1024)) {
      throw new SeedinferError('INVALID_OPTION', `threads must be an integer from 1 to 1024, got ${String(options.threads)}`);
    }
    if (options.signal?.aborted) throw new SeedinferError('ABORTED', 'the quantisation was aborted before it started');
    const from = await resolveModelSource(source, { cacheDir: options.cacheDir, onProgress: options.onProgress, signal: options.signal });
    const out = path.resolve(options.out);
    mkdirSync(path.dirname(out), { recursive: true });
    const binding = native();
    const report = await withAbortFlag(options.signal, 'the quantisation', (flag) =>
      new Promise<NonNullable<NativeQuantizeEvent['report']>>((resolve, reject) => {
        binding.quantizeModel(from, options.format, out, options.threads ?? null, (event: NativeQuantizeEvent) => {
          if (event.kind === 'progress') {
            options.onProgress?.({ phase: 'quantize', name: event.tensor ?? '', completed: event.doneWeights ?? 0, total: event.totalWeights });
          } else if (event.kind === 'done' && event.report) resolve(event.report);
          else reject(eventError(event, 'the quantisation ended without a result'));
        }, flag);
      }),
    );
    return {
      format: options.format,
      out,
      outBytes: report.outBytes,
      quantizedTensors: report.quantizedTensors,
      quantizedWeights: report.quantizedWeights,
      quantizedBytes: report.quantizedBytes,
      bitsPerWeight: report.quantizedWeights > 0 ? (8 * report.quantizedBytes) / report.quantizedWeights : 0,
      kept: report.kept,
      tensorTypes: report.tensorTypes,
      seconds: report.seconds,
      secondsPerMillionWeights: report.quantizedWeights > 0 ? report.seconds / (report.quantizedWeights / 1e6) : 0,
    };
  } catch (error) {
    throw toSeedinferError(error);
  }
}
