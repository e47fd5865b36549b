// AbortSignal -> the native abort flag that a running job checks, for every call that takes { signal }.
import { SeedinferError } from './errors.js';
import { native } from './native.js';
import type { NativeAbortFlag } from './native.js';

/**
 * Runs `job` with a native abort flag raised when `signal` aborts. An already-aborted signal rejects with
 * ABORTED before `job` starts (`what` names the job in that message).
 */
export async function withAbortFlag<T>(signal: AbortSignal | undefined, what: string, job: (flag: NativeAbortFlag) => Promise<T>): Promise<T> {
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw new SeedinferError('INVALID_OPTION', 'option signal must be an AbortSignal');
  if (signal?.aborted) throw new SeedinferError('ABORTED', `${what} was aborted before it started`);
  const flag = new (native().NativeAbortFlag)();
  const onAbort = () => flag.abort();
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    return await job(flag);
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
}
