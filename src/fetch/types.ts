// Structural copies of the public types in index.d.ts used by the fetchers.

/** Progress of a long operation (download, load). `total` is undefined when unknown. */
export interface ProgressEvent {
  /** What is in progress, e.g. `download`, `extract` or `verify`. */
  phase: string;
  /** File or item concerned. */
  name: string;
  completed: number;
  total?: number;
}

export interface FetchOptions {
  /** Directory for downloaded models. Default: `$SEEDINFER_CACHE` or `~/.cache/seedinfer`. */
  cacheDir?: string;
  onProgress?: (event: ProgressEvent) => void;
  signal?: AbortSignal;
}
