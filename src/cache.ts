import os from 'node:os';
import path from 'node:path';

/** The cache directory in use: `$SEEDINFER_CACHE` or `~/.cache/seedinfer`. */
export function defaultCacheDir(): string {
  const fromEnv = process.env.SEEDINFER_CACHE;
  if (fromEnv && fromEnv.length > 0) return path.resolve(fromEnv);
  return path.join(os.homedir(), '.cache', 'seedinfer');
}
