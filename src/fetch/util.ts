// Small helpers shared by the fetchers.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SeedinferError } from '../errors.js';

export function abortedError(what: string, cause?: unknown): SeedinferError {
  return new SeedinferError('ABORTED', `${what} was aborted`, cause === undefined ? undefined : { cause });
}

export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw abortedError(what, signal.reason);
}

/** A unique sibling path for writing `file` before an atomic rename into place. */
export function tempSibling(file: string): string {
  return `${file}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`;
}

/** sha256 (hex) of a file, streamed. */
export async function sha256File(file: string, signal?: AbortSignal): Promise<string> {
  const hash = crypto.createHash('sha256');
  const stream = fs.createReadStream(file, { highWaterMark: 1 << 20 });
  const onAbort = () => stream.destroy(abortedError('hashing'));
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for await (const chunk of stream) hash.update(chunk as Buffer);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  throwIfAborted(signal, 'hashing');
  return hash.digest('hex');
}

/** The last `count` non-empty lines of `text`. */
export function lastLines(text: string, count: number): string {
  return text
    .split(/\r?\n|\r/)
    .map((line) => line.trimEnd())
    .filter((line) => line.trim().length > 0)
    .slice(-count)
    .join('\n');
}

export async function removeQuietly(target: string): Promise<void> {
  await fs.promises.rm(target, { recursive: true, force: true }).catch(() => {});
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortedError('waiting for another download'));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A best-effort inter-process lock: a file created exclusively holding the owner's pid. A lock whose owner
 * process is gone (same machine) is taken over. Waits (polling) while another live process holds it.
 * Returns a release function.
 */
export async function acquireLock(lockFile: string, signal?: AbortSignal): Promise<() => Promise<void>> {
  await fs.promises.mkdir(path.dirname(lockFile), { recursive: true });
  for (;;) {
    throwIfAborted(signal, 'waiting for another download');
    try {
      const fh = await fs.promises.open(lockFile, 'wx');
      await fh.writeFile(`${process.pid}\n`);
      await fh.close();
      let released = false;
      return async () => {
        if (released) return;
        released = true;
        await fs.promises.rm(lockFile, { force: true }).catch(() => {});
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const owner = Number.parseInt(await fs.promises.readFile(lockFile, 'utf8').catch(() => ''), 10);
    if (!Number.isInteger(owner) || owner <= 0 || owner === process.pid || !processAlive(owner)) {
      // Stale (or half-written) lock: give a half-written one a moment, then take it over.
      if (!Number.isInteger(owner) || owner <= 0) await sleep(200, signal);
      const again = Number.parseInt(await fs.promises.readFile(lockFile, 'utf8').catch(() => ''), 10);
      if (again === owner || !Number.isInteger(again) || !processAlive(again)) {
        await fs.promises.rm(lockFile, { force: true }).catch(() => {});
        continue;
      }
    }
    await sleep(250, signal);
  }
}

const inProcessLocks = new Map<string, Promise<void>>();

/** Runs `fn` holding the lock `lockFile`, serialised both within this process and across processes. */
export async function withLock<T>(lockFile: string, signal: AbortSignal | undefined, fn: () => Promise<T>): Promise<T> {
  const key = path.resolve(lockFile);
  const previous = inProcessLocks.get(key) ?? Promise.resolve();
  let releaseLocal!: () => void;
  const mine = new Promise<void>((resolve) => (releaseLocal = resolve));
  const chained = previous.then(() => mine);
  inProcessLocks.set(key, chained);
  try {
    await previous;
    const release = await acquireLock(key, signal);
    try {
      return await fn();
    } finally {
      await release();
    }
  } finally {
    releaseLocal();
    if (inProcessLocks.get(key) === chained) inProcessLocks.delete(key);
  }
}
