/** Helpers for tests on any side. Not exported from `shared/index.ts`. */
import { AppError, type ErrorCode } from './errors';

/** The code of the AppError that `fn` throws, or 'none' when it returns; anything else thrown is rethrown. */
export function thrownCode(fn: () => unknown): ErrorCode | 'none' {
  try {
    fn();
    return 'none';
  } catch (err) {
    if (err instanceof AppError) return err.code;
    throw err;
  }
}
