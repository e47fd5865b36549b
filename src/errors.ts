/** Every error seedinfer throws carries a stable `code`; see index.d.ts for the list. */
export class SeedinferError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SeedinferError';
    this.code = code;
  }
}

// seedinfer's codes are upper snake case; napi-rs's own failures (argument conversion) carry its status names
// (`InvalidArg`, `NumberExpected`, …) and become INTERNAL.
const CODE = /^[A-Z][A-Z0-9_]*$/;

/**
 * Turns an error thrown by the native binding (or anything else) into a SeedinferError. The binding's errors carry
 * seedinfer's stable code in their `code` property (crates/seedinfer-node/src/error.rs).
 */
export function toSeedinferError(error: unknown): SeedinferError {
  if (error instanceof SeedinferError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && CODE.test(code)) return new SeedinferError(code, message, { cause: error });
  return new SeedinferError('INTERNAL', message, { cause: error });
}

/** The error of a native `error` event (generation, quantisation): its code and message travel as two fields. */
export function eventError(event: { errorCode?: string | null; error?: string | null }, fallback: string): SeedinferError {
  return new SeedinferError(event.errorCode ?? 'INTERNAL', event.error ?? fallback);
}

/** Throws INVALID_OPTION unless `value` is undefined or a finite number within [min, max]. */
export function checkNumberOption(name: string, value: unknown, min: number, max: number, integer = false): void {
  if (value === undefined) return;
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max || (integer && !Number.isInteger(value))) {
    throw new SeedinferError(
      'INVALID_OPTION',
      `option ${name} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got ${JSON.stringify(value)}`,
    );
  }
}

/** Throws INVALID_OPTION unless `value` is undefined or a boolean. */
export function checkBooleanOption(name: string, value: unknown): void {
  if (value !== undefined && typeof value !== 'boolean') {
    throw new SeedinferError('INVALID_OPTION', `option ${name} must be a boolean`);
  }
}

/**
 * The option names of `T`, listed in full: the compiler rejects a list that misses one of `T`'s options or names
 * one `T` lacks, so the names checked at run time follow the typings.
 */
export function optionNames<T>() {
  return <const K extends readonly (keyof T & string)[]>(
    names: K & (Exclude<keyof T, K[number]> extends never ? unknown : { missing: Exclude<keyof T, K[number]> }),
  ): readonly string[] => names;
}

/**
 * Throws INVALID_OPTION for an option of `options` (set to anything but `undefined`) that `known` does not list:
 * a typo, or an option of another library, would otherwise be ignored without a word. Names the nearest known one.
 */
export function checkOptionNames(what: string, options: object, known: readonly string[]): void {
  for (const [name, value] of Object.entries(options)) {
    if (value === undefined || known.includes(name)) continue;
    const nearest = nearestName(name, known);
    throw new SeedinferError(
      'INVALID_OPTION',
      `unknown option ${JSON.stringify(name)} for ${what}${nearest ? `; did you mean ${JSON.stringify(nearest)}?` : ''} (known: ${known.join(', ')})`,
    );
  }
}

/**
 * The known name closest to `name` (edit distance ignoring case, `_` and `-`; a name containing the other counts as
 * one edit), if close enough to be a typo.
 */
function nearestName(name: string, known: readonly string[]): string | undefined {
  const plain = (s: string) => s.toLowerCase().replace(/[_-]/g, '');
  const target = plain(name);
  let best: { name: string; distance: number } | undefined;
  for (const candidate of known) {
    const other = plain(candidate);
    const contains = Math.min(target.length, other.length) >= 3 && (target.includes(other) || other.includes(target));
    const distance = contains ? 1 : editDistance(target, other);
    if (!best || distance < best.distance) best = { name: candidate, distance };
  }
  return best && best.distance <= Math.max(2, Math.floor(target.length / 3)) ? best.name : undefined;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    previous = row;
  }
  return previous[b.length];
}
