// Prompts of real English the tests share.
import fs from 'node:fs';
import path from 'node:path';
import type { Model } from '../../src/index.js';
import { repoRoot } from './paths.js';

/** The first `count` tokens of this repository's README (BOS first), in `model`'s vocabulary. */
export function readmeTokens(model: Model, count: number): number[] {
  const text = fs.readFileSync(path.join(repoRoot, 'README.md'), 'utf8');
  return model.tokenize(text, { addBos: true, special: false }).slice(0, count);
}
