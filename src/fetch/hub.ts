// Downloads Hugging Face Hub models (config, tokenizer, safetensors) into the cache, resumably.
import fs from 'node:fs';
import path from 'node:path';
import { defaultCacheDir } from '../cache.js';
import { SeedinferError } from '../errors.js';
import type { FetchOptions, ProgressEvent } from './types.js';
import { abortedError, throwIfAborted, withLock } from './util.js';

export interface PullOptions extends FetchOptions {
  /** Branch, tag or commit. Default `main`. */
  revision?: string;
  /** Hub base URL. Default: `$HF_ENDPOINT` or `https://huggingface.co`. */
  endpoint?: string;
  /** Access token. Default: `$HF_TOKEN` (or `$HUGGING_FACE_HUB_TOKEN`). */
  token?: string;
  /** Milliseconds to wait for a response (and between body chunks). Default: `$SEEDINFER_HUB_TIMEOUT_MS` or 15000. */
  timeoutMs?: number;
  /** Automatic resumes after a connection drops mid-file. Default: `$SEEDINFER_HUB_RETRIES` or 3. */
  retries?: number;
}

const NAME_PART = /^[A-Za-z0-9._-]+$/;

/** True when `id` has the shape of a Hub model id, `org/name`. */
export function isHubId(id: string): boolean {
  const parts = id.split('/');
  return parts.length === 2 && parts.every((part) => NAME_PART.test(part) && part !== '.' && part !== '..');
}

/** The cache directory of a Hub model: `<cacheDir>/hub/<org>--<name>/<revision>`. */
export function hubModelDir(hubId: string, revision = 'main', cacheDir: string = defaultCacheDir()): string {
  const [org, name] = hubId.split('/');
  return path.join(cacheDir, 'hub', `${org}--${name}`, revision.replace(/\//g, '--'));
}

function envNumber(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  return Number.isFinite(value) && value >= 0 ? value : fallback;
}

function hubEndpoint(options: PullOptions): string {
  const endpoint = options.endpoint ?? process.env.HF_ENDPOINT ?? 'https://huggingface.co';
  return endpoint.replace(/\/+$/, '');
}

/** Downloads a Hugging Face Hub model into the cache and returns its directory. */
export async function pullModel(hubId: string, options: PullOptions = {}): Promise<string> {
  if (typeof hubId !== 'string' || !isHubId(hubId)) {
    throw new SeedinferError(
      'INVALID_OPTION',
      `invalid Hugging Face Hub model id ${JSON.stringify(hubId)}: expected "org/name" using letters, digits, ".", "_" and "-"`,
    );
  }
  const revision = options.revision ?? 'main';
  if (!/^[A-Za-z0-9._/-]+$/.test(revision) || revision.split('/').some((part) => part === '' || part === '.' || part === '..')) {
    throw new SeedinferError('INVALID_OPTION', `invalid revision ${JSON.stringify(revision)}`);
  }
  const dir = hubModelDir(hubId, revision, options.cacheDir ?? defaultCacheDir());
  const marker = path.join(dir, '.complete');
  if (fs.existsSync(marker)) return dir;
  throwIfAborted(options.signal, `downloading ${hubId}`);
  await fs.promises.mkdir(dir, { recursive: true });

  const ctx: DownloadContext = {
    hubId,
    base: `${hubEndpoint(options)}/${hubId}/resolve/${revision.split('/').map(encodeURIComponent).join('/')}`,
    dir,
    token: options.token ?? (process.env.HF_TOKEN || process.env.HUGGING_FACE_HUB_TOKEN || undefined),
    timeoutMs: options.timeoutMs ?? envNumber('SEEDINFER_HUB_TIMEOUT_MS', 15_000),
    retries: options.retries ?? envNumber('SEEDINFER_HUB_RETRIES', 3),
    onProgress: options.onProgress,
    signal: options.signal,
  };

  await withLock(path.join(dir, '.lock'), options.signal, async () => {
    if (fs.existsSync(marker)) return;
    const files: string[] = [];
    const get = async (file: string, optional: boolean) => {
      const found = await downloadFile(ctx, file, optional);
      if (found) files.push(file);
      return found;
    };
    await get('config.json', false);
    await get('tokenizer.json', false);
    await get('tokenizer_config.json', true);
    await get('generation_config.json', true);
    if (!(await get('model.safetensors', true))) {
      if (!(await get('model.safetensors.index.json', true))) {
        throw new SeedinferError(
          'DOWNLOAD_FAILED',
          `${hubId} (revision ${revision}) has neither model.safetensors nor model.safetensors.index.json at ${ctx.base}`,
        );
      }
      for (const shard of await shardsOf(path.join(dir, 'model.safetensors.index.json'))) await get(shard, false);
    }
    const record = { hubId, revision, endpoint: hubEndpoint(options), files, completedAt: new Date().toISOString() };
    await fs.promises.writeFile(marker, `${JSON.stringify(record, null, 2)}\n`);
  });
  return dir;
}

async function shardsOf(indexFile: string): Promise<string[]> {
  let index: { weight_map?: Record<string, unknown> };
  try {
    index = JSON.parse(await fs.promises.readFile(indexFile, 'utf8'));
  } catch (error) {
    throw new SeedinferError('DOWNLOAD_FAILED', `${indexFile} is not valid JSON: ${(error as Error).message}`, { cause: error });
  }
  const names = [...new Set(Object.values(index.weight_map ?? {}))];
  if (names.length === 0) throw new SeedinferError('DOWNLOAD_FAILED', `${indexFile} lists no shards (weight_map is empty)`);
  for (const name of names) {
    if (typeof name !== 'string' || !/^[A-Za-z0-9._-]+\.safetensors$/.test(name)) {
      throw new SeedinferError('DOWNLOAD_FAILED', `${indexFile} lists an unexpected shard name ${JSON.stringify(name)}`);
    }
  }
  return (names as string[]).sort();
}

interface DownloadContext {
  hubId: string;
  base: string;
  dir: string;
  token?: string;
  timeoutMs: number;
  retries: number;
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
}

function unreachable(url: string, detail: string, cause?: unknown): SeedinferError {
  return new SeedinferError(
    'HUB_UNREACHABLE',
    `could not reach ${url} (${detail}): the Hugging Face Hub is not reachable from this machine. ` +
      `Copy the model directory (config.json, tokenizer.json, *.safetensors) here some other way and pass its local path ` +
      `instead of the Hub id (e.g. \`seedinfer generate --model ./my-model\` or Model.load('./my-model')), ` +
      `or set HF_ENDPOINT to a reachable mirror`,
    cause === undefined ? undefined : { cause },
  );
}

function describeNetworkError(error: unknown): string {
  const parts: string[] = [];
  let current: unknown = error;
  for (let depth = 0; current && depth < 4; depth++) {
    const e = current as { code?: string; message?: string; cause?: unknown };
    const text = [e.code, e.message].filter(Boolean).join(' ');
    if (text && !parts.includes(text)) parts.push(text);
    current = e.cause;
  }
  return parts.join(': ') || String(error);
}

class Interrupted extends Error {}

/** Downloads one file into ctx.dir; returns false when it is optional and absent (404). */
async function downloadFile(ctx: DownloadContext, file: string, optional: boolean): Promise<boolean> {
  const target = path.join(ctx.dir, file);
  if (fs.existsSync(target)) return true;
  const partial = `${target}.partial`;
  const url = `${ctx.base}/${file.split('/').map(encodeURIComponent).join('/')}`;
  let attempt = 0;
  for (;;) {
    try {
      return await downloadAttempt(ctx, url, file, target, partial, optional);
    } catch (error) {
      if (!(error instanceof Interrupted) || attempt >= ctx.retries) {
        if (error instanceof Interrupted) {
          throw new SeedinferError('DOWNLOAD_FAILED', `${error.message}; the partial file is kept, run again to resume`, {
            cause: error.cause,
          });
        }
        throw error;
      }
      attempt++;
    }
  }
}

async function downloadAttempt(
  ctx: DownloadContext,
  url: string,
  file: string,
  target: string,
  partial: string,
  optional: boolean,
): Promise<boolean> {
  let start = 0;
  try {
    start = (await fs.promises.stat(partial)).size;
  } catch {
    start = 0;
  }
  const headers: Record<string, string> = { 'user-agent': 'seedinfer' };
  if (ctx.token) headers.authorization = `Bearer ${ctx.token}`;
  if (start > 0) headers.range = `bytes=${start}-`;

  const timeout = new AbortController();
  const signals = ctx.signal ? [ctx.signal, timeout.signal] : [timeout.signal];
  const signal = AbortSignal.any(signals);
  let timer = setTimeout(() => timeout.abort(new Error(`no response within ${ctx.timeoutMs} ms`)), ctx.timeoutMs);
  const what = `downloading ${ctx.hubId}/${file}`;
  try {
    let response: Response;
    try {
      response = await fetch(url, { headers, signal, redirect: 'follow' });
    } catch (error) {
      if (ctx.signal?.aborted) throw abortedError(what, error);
      if (timeout.signal.aborted) throw unreachable(url, `no response within ${ctx.timeoutMs} ms`, error);
      throw unreachable(url, describeNetworkError(error), error);
    }

    if (response.status === 416 && start > 0) {
      // Our partial file is not a prefix the server agrees with: start over.
      await response.body?.cancel().catch(() => {});
      await fs.promises.rm(partial, { force: true });
      throw new Interrupted(`${url} rejected the resume range`);
    }
    if (response.status === 404 && optional) {
      await response.body?.cancel().catch(() => {});
      return false;
    }
    if (!response.ok) {
      await response.body?.cancel().catch(() => {});
      const hint =
        response.status === 401 || response.status === 403
          ? ctx.token
            ? ' (the token in HF_TOKEN does not grant access to this model)'
            : ' (the model may be gated or private: set HF_TOKEN to an access token)'
          : response.status === 404
            ? ' (no such model, revision or file)'
            : '';
      throw new SeedinferError('DOWNLOAD_FAILED', `${url} answered HTTP ${response.status} ${response.statusText}${hint}`);
    }

    let offset = 0;
    let total: number | undefined;
    const length = Number(response.headers.get('content-length') ?? NaN);
    if (response.status === 206) {
      const range = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(response.headers.get('content-range') ?? '');
      if (!range || Number(range[1]) !== start) {
        await response.body?.cancel().catch(() => {});
        await fs.promises.rm(partial, { force: true });
        throw new Interrupted(`${url} answered an unexpected range ${response.headers.get('content-range')}`);
      }
      offset = start;
      total = range[3] !== '*' ? Number(range[3]) : Number.isFinite(length) ? start + length : undefined;
    } else {
      // 200: the whole file (the server ignored or we did not send a range).
      total = Number.isFinite(length) ? length : undefined;
    }
    if (!response.body) throw new Interrupted(`${url} answered without a body`);

    let completed = offset;
    let lastReport = 0;
    const report = (force: boolean) => {
      const now = Date.now();
      if (!ctx.onProgress || (!force && now - lastReport < 100)) return;
      lastReport = now;
      ctx.onProgress({ phase: 'download', name: file, completed, total });
    };
    report(true);
    const restartStallTimer = () => {
      clearTimeout(timer);
      timer = setTimeout(() => timeout.abort(new Error(`stalled for ${ctx.timeoutMs} ms`)), ctx.timeoutMs);
    };
    restartStallTimer();
    await fs.promises.mkdir(path.dirname(partial), { recursive: true });
    // Each chunk is written (awaited) before the next is read, so when the connection drops the
    // partial file holds exactly the bytes received and the next attempt resumes from its size.
    const out = await fs.promises.open(partial, offset > 0 ? 'a' : 'w');
    try {
      const reader = response.body.getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        await out.write(value);
        completed += value.length;
        restartStallTimer();
        report(false);
      }
    } catch (error) {
      if (ctx.signal?.aborted) throw abortedError(what, error);
      const received = completed - offset;
      const message = `connection to ${url} was lost after ${completed}${total !== undefined ? ` of ${total}` : ''} bytes (${describeNetworkError(error)})`;
      if (received > 0 || timeout.signal.aborted) throw new Interrupted(message, { cause: error });
      throw new SeedinferError('DOWNLOAD_FAILED', message, { cause: error });
    } finally {
      await out.close();
    }
    if (total !== undefined && completed !== total) {
      throw new Interrupted(`${url} ended after ${completed} of ${total} bytes`);
    }
    report(true);
    await fs.promises.rename(partial, target);
    return true;
  } finally {
    clearTimeout(timer);
  }
}
