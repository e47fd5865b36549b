/** Every error seedinfer throws carries a stable `code`; see index.d.ts for the list. */
export class SeedinferError extends Error {
  readonly code: string;

  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SeedinferError';
    this.code = code;
  }
}

// The native binding reports failures as "CODE: message" (see crates/seedinfer-node/src/error.rs).
const NATIVE_CODE = /^([A-Z][A-Z0-9_]+): ([\s\S]*)$/;

/** Turns an error thrown by the native binding (or anything else) into a SeedinferError. */
export function toSeedinferError(error: unknown): SeedinferError {
  if (error instanceof SeedinferError) return error;
  const message = error instanceof Error ? error.message : String(error);
  const match = NATIVE_CODE.exec(message);
  if (match) return new SeedinferError(match[1], match[2], { cause: error });
  return new SeedinferError('INTERNAL', message, { cause: error });
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
