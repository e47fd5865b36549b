// Paths shared by the tests.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (the directory holding package.json). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The stories260K Hugging Face checkpoint: `$SEEDINFER_STORIES_DIR` or `<repo>/../shared/models/stories260K`. */
export const storiesDir = path.resolve(process.env.SEEDINFER_STORIES_DIR ?? path.join(repoRoot, '..', 'shared', 'models', 'stories260K'));

export const hasStories = fs.existsSync(path.join(storiesDir, 'config.json'));

/** Expected greedy continuation of the stories260K model from the prompt [1]. */
export function storiesExpected(): { prompt_token_ids: number[]; greedy_token_ids: number[] } {
  return JSON.parse(fs.readFileSync(path.join(storiesDir, 'expected_greedy.json'), 'utf8'));
}

/** The CLI entry point, run through tsx so that no build is needed. */
export const cliSource = path.join(repoRoot, 'src', 'cli.ts');

/** The real cache directory (`$SEEDINFER_CACHE` or `~/.cache/seedinfer`). */
export const realCacheDir = process.env.SEEDINFER_CACHE ? path.resolve(process.env.SEEDINFER_CACHE) : path.join(os.homedir(), '.cache', 'seedinfer');

/** Where the default model is cached in the real cache directory. */
export const defaultModelFile = path.join(realCacheDir, 'models', 'SmolLM2-135M-Instruct.Q4_1.gguf');

/** A fresh temporary directory. */
export function tempDir(prefix = 'seedinfer-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}
