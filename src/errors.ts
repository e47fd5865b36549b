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
