// A small progress reporter for stderr: a redrawn single-line bar on a TTY, sparse plain lines otherwise.
import type { ProgressEvent } from './fetch/types.js';

export type ProgressCallback = ((event: ProgressEvent) => void) & {
  /** Ends the current line (if a bar is drawn). Safe to call more than once. */
  finish(): void;
};

export interface ProgressReporterOptions {
  /** Where to draw. Default `process.stderr`. */
  stream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  /** Force TTY (bar) or plain mode. Default: `stream.isTTY`. */
  tty?: boolean;
  /** Minimum milliseconds between redraws on a TTY. Default 100. */
  intervalMs?: number;
  /** What `completed` and `total` count: `bytes` (default) or `weights` (printed as 12.3M). */
  unit?: 'bytes' | 'weights';
}

/** Formats a count of weights: `950`, `12.3K`, `106.2M`. */
export function formatWeights(n: number): string {
  if (!Number.isFinite(n)) return '?';
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(Math.round(n));
}

/** Formats a byte count: `512 B`, `12.3 KiB`, `93.8 MiB`, `1.20 GiB`. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return '?';
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(value >= 100 || unit === 0 ? 1 : value >= 10 ? 1 : 2)} ${units[unit]}`;
}

/** Formats seconds as `7s`, `3m05s`, `1h02m`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

interface Track {
  key: string;
  startedAt: number;
  startCompleted: number;
  lastDecile: number;
  done: boolean;
}

/** Returns an `onProgress` callback that reports to stderr, prefixed with `label`. */
export function createProgressReporter(label: string, options: ProgressReporterOptions = {}): ProgressCallback {
  const stream = options.stream ?? process.stderr;
  const tty = options.tty ?? Boolean(stream.isTTY);
  const intervalMs = options.intervalMs ?? 100;
  const amount = options.unit === 'weights' ? (n: number) => `${formatWeights(n)} weights` : formatBytes;
  let track: Track | undefined;
  let lineOpen = false;
  let lastDraw = 0;

  const endLine = () => {
    if (lineOpen) {
      stream.write('\n');
      lineOpen = false;
    }
  };

  const describe = (event: ProgressEvent, t: Track, now: number) => {
    const elapsed = (now - t.startedAt) / 1000;
    const rate = elapsed > 0.2 ? (event.completed - t.startCompleted) / elapsed : NaN;
    const parts = [`${label}: ${event.phase} ${event.name}`];
    if (event.total !== undefined && event.total > 0) {
      const fraction = Math.min(1, event.completed / event.total);
      parts.push(`${(fraction * 100).toFixed(fraction >= 1 ? 0 : 1).padStart(5)}%`);
      parts.push(`${amount(event.completed)} / ${amount(event.total)}`);
    } else if (event.completed > 0) {
      parts.push(amount(event.completed));
    }
    if (Number.isFinite(rate) && rate > 0) {
      parts.push(`${amount(rate)}/s`);
      if (event.total !== undefined && event.completed < event.total) {
        parts.push(`ETA ${formatDuration((event.total - event.completed) / rate)}`);
      }
    }
    return { parts, fraction: event.total ? Math.min(1, event.completed / event.total) : undefined };
  };

  const callback = ((event: ProgressEvent) => {
    const now = Date.now();
    const key = `${event.phase}\u0000${event.name}`;
    if (!track || track.key !== key) {
      endLine();
      track = { key, startedAt: now, startCompleted: event.completed, lastDecile: -1, done: false };
      lastDraw = 0;
    }
    const t = track;
    const finished = event.total !== undefined && event.completed >= event.total;
    if (t.done && finished) return;
    const { parts, fraction } = describe(event, t, now);

    if (tty) {
      if (!finished && now - lastDraw < intervalMs) return;
      lastDraw = now;
      const columns = (stream as { columns?: number }).columns ?? 80;
      let line = parts.join('  ');
      if (fraction !== undefined) {
        const width = Math.max(10, Math.min(30, columns - parts[0].length - 60));
        const filled = Math.round(fraction * width);
        line = `${parts[0]} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${parts.slice(1).join('  ')}`;
      }
      if (line.length > columns - 1) line = line.slice(0, Math.max(0, columns - 1));
      stream.write(`\r\x1b[2K${line}`);
      lineOpen = true;
      if (finished) {
        t.done = true;
        endLine();
      }
      return;
    }

    // Plain output: a line when something starts, then every ~10%, then when done.
    const decile = fraction === undefined ? -1 : Math.floor(fraction * 10);
    const starting = t.lastDecile === -1 && !t.done && event.completed === t.startCompleted;
    if (finished || starting || decile > t.lastDecile) {
      t.lastDecile = Math.max(t.lastDecile, decile, 0);
      if (finished) t.done = true;
      stream.write(`${parts.join('  ')}\n`);
    }
  }) as ProgressCallback;
  callback.finish = endLine;
  return callback;
}
