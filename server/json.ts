/**
 * The coordinator's JSON body parser: bounds checked while the text is read, not after a tree is built.
 *
 * `scanJson` walks the text once with an explicit stack (no recursion, so no input can overflow the
 * call stack) and measures exactly what `JSON.parse` would build: nesting depth, the decoded length of
 * every string and key, the members of every object and array, and the value of every number that could
 * be out of range. Only text that passes is handed to `JSON.parse`, which then does the building (and
 * refuses any syntax the scan let through). The scan never refuses valid JSON that is inside the bounds.
 *
 * Each refusal is a coded AppError (400): JSON_TOO_DEEP, JSON_STRING_TOO_LONG, JSON_TOO_MANY_ITEMS,
 * JSON_NUMBER_OUT_OF_RANGE (`1e309` and other numbers that are not finite as a double), JSON_FORBIDDEN_KEY
 * (`__proto__`, however it is escaped), BAD_JSON (syntax, empty body, bytes that are not UTF-8).
 */
import { isUtf8 } from 'node:buffer';
import { AppError, type ErrorCode } from '../shared';

export interface JsonBounds {
  /** Objects and arrays nested in one another; the top-level value is depth 1. */
  readonly maxDepth: number;
  /** Decoded UTF-16 code units of one string or key (what `.length` says once parsed). */
  readonly maxStringLength: number;
  /** Keys of one object. */
  readonly maxKeys: number;
  /** Elements of one array. */
  readonly maxArrayLength: number;
}

/** The bounds of every JSON body the HTTP API reads (the total size is fastify's bodyLimit). */
export const JSON_BOUNDS: JsonBounds = {
  maxDepth: 128,
  maxStringLength: 256 << 10,
  maxKeys: 10_000,
  maxArrayLength: 200_000,
};

const OBJECT = 1;
const ARRAY = 2;
/** States of the scan. */
const VALUE = 0;
const AFTER = 1;
const KEY = 2;

function refuse(code: ErrorCode, message: string, at: number, details: Record<string, unknown> = {}): AppError {
  return new AppError(code, message, { at, ...details });
}

function badJson(at: number, what: string): AppError {
  return refuse('BAD_JSON', `The request body is not valid JSON (${what} at character ${at}); send one JSON value with content-type application/json.`, at);
}

/** Throws the first bound `text` breaks; returns when `JSON.parse(text)` may build it. */
export function scanJson(text: string, bounds: JsonBounds = JSON_BOUNDS): void {
  const n = text.length;
  const { maxDepth, maxStringLength, maxKeys, maxArrayLength } = bounds;
  const kinds = new Uint8Array(maxDepth + 1);
  const counts = new Uint32Array(maxDepth + 1);
  let depth = 0;
  let state = VALUE;
  /** Position of the next backslash at or after the last search (n: none left). */
  let nextEscape = -1;
  let i = skipSpace(text, 0);
  if (i === n) throw refuse('BAD_JSON', 'The request body is empty; send a JSON value or drop the content-type header.', 0);

  /** Scans the string that opens at `start`; answers the index after its closing quote. */
  const scanString = (start: number, isKey: boolean): number => {
    let j = start + 1;
    let length = 0;
    for (;;) {
      const quote = text.indexOf('"', j);
      if (quote < 0) throw badJson(start, 'unterminated string');
      if (nextEscape < j) {
        nextEscape = text.indexOf('\\', j);
        if (nextEscape < 0) nextEscape = n;
      }
      if (nextEscape > quote) {
        length += quote - j;
        j = quote + 1;
        break;
      }
      // An escape before the quote: \uXXXX is six characters, the others two; each decodes to one unit.
      length += nextEscape - j + 1;
      j = nextEscape + (text.charCodeAt(nextEscape + 1) === 0x75 ? 6 : 2);
    }
    if (length > maxStringLength) {
      throw refuse('JSON_STRING_TOO_LONG', `A ${isKey ? 'key' : 'string'} holds ${length} characters; the limit is ${maxStringLength}.`, start, {
        limit: maxStringLength,
      });
    }
    if (isKey && length === 9 && decodeKey(text, start, j) === '__proto__') {
      throw refuse('JSON_FORBIDDEN_KEY', 'The key "__proto__" is not accepted in request bodies; rename it.', start, { key: '__proto__' });
    }
    return j;
  };

  for (;;) {
    if (state === VALUE) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i = scanString(i, false);
        state = AFTER;
      } else if (c === 0x7b || c === 0x5b) {
        if (depth === maxDepth) {
          throw refuse('JSON_TOO_DEEP', `The body nests objects and arrays more than ${maxDepth} deep; flatten it.`, i, { limit: maxDepth });
        }
        depth++;
        i = skipSpace(text, i + 1);
        const close = text.charCodeAt(i);
        if (c === 0x7b) {
          kinds[depth] = OBJECT;
          counts[depth] = 0;
          if (close === 0x7d) {
            depth--;
            i++;
            state = AFTER;
          } else {
            state = KEY;
          }
        } else {
          kinds[depth] = ARRAY;
          if (close === 0x5d) {
            depth--;
            i++;
            state = AFTER;
          } else {
            counts[depth] = 1;
          }
        }
      } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
        i = scanNumber(text, i);
        state = AFTER;
      } else if (c === 0x74 && text.startsWith('true', i)) {
        i += 4;
        state = AFTER;
      } else if (c === 0x66 && text.startsWith('false', i)) {
        i += 5;
        state = AFTER;
      } else if (c === 0x6e && text.startsWith('null', i)) {
        i += 4;
        state = AFTER;
      } else {
        throw badJson(i, i >= n ? 'unexpected end' : 'unexpected character');
      }
    } else if (state === AFTER) {
      i = skipSpace(text, i);
      if (depth === 0) {
        if (i !== n) throw badJson(i, 'text after the value');
        return;
      }
      const c = text.charCodeAt(i);
      const kind = kinds[depth];
      if (c === 0x2c) {
        i = skipSpace(text, i + 1);
        if (kind === OBJECT) {
          state = KEY;
        } else {
          if (++counts[depth]! > maxArrayLength) {
            throw refuse('JSON_TOO_MANY_ITEMS', `An array holds more than ${maxArrayLength} elements; split it.`, i, { limit: maxArrayLength });
          }
          state = VALUE;
        }
      } else if ((c === 0x7d && kind === OBJECT) || (c === 0x5d && kind === ARRAY)) {
        depth--;
        i++;
      } else {
        throw badJson(i, i >= n ? 'unexpected end' : 'expected , or a closing bracket');
      }
    } else {
      if (text.charCodeAt(i) !== 0x22) throw badJson(i, 'expected a key');
      if (++counts[depth]! > maxKeys) {
        throw refuse('JSON_TOO_MANY_ITEMS', `An object holds more than ${maxKeys} keys; split it.`, i, { limit: maxKeys });
      }
      i = skipSpace(text, scanString(i, true));
      if (text.charCodeAt(i) !== 0x3a) throw badJson(i, 'expected :');
      i = skipSpace(text, i + 1);
      state = VALUE;
    }
  }
}

function skipSpace(text: string, i: number): number {
  for (;;) {
    const c = text.charCodeAt(i);
    if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
    else return i;
  }
}

/** A number token; those that could leave a double's range (an exponent, or more than 15 characters) are evaluated. */
function scanNumber(text: string, start: number): number {
  let i = start;
  let plain = true;
  for (;;) {
    const c = text.charCodeAt(i);
    if ((c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2b || c === 0x2e) {
      i++;
    } else if (c === 0x65 || c === 0x45) {
      plain = false;
      i++;
    } else {
      break;
    }
  }
  if (plain && i - start <= 15) return i;
  const value = Number(text.slice(start, i));
  if (Number.isNaN(value)) throw badJson(start, 'malformed number');
  if (!Number.isFinite(value)) {
    throw refuse('JSON_NUMBER_OUT_OF_RANGE', `The number ${text.slice(start, Math.min(i, start + 40))} is outside the range of a double; send it as a string.`, start);
  }
  return i;
}

function decodeKey(text: string, start: number, end: number): string | null {
  try {
    const key: unknown = JSON.parse(text.slice(start, end));
    return typeof key === 'string' ? key : null;
  } catch {
    return null; // a bad escape: JSON.parse refuses the whole body later
  }
}

/** Parses JSON text within `bounds`; every refusal is a coded AppError. */
export function parseJson(text: string, bounds: JsonBounds = JSON_BOUNDS): unknown {
  scanJson(text, bounds);
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new AppError('BAD_JSON', `The request body is not valid JSON (${(err as Error).message}); send one JSON value with content-type application/json.`);
  }
}

/** Parses a UTF-8 JSON body (bytes that are not UTF-8 are refused, not replaced). */
export function parseJsonBody(body: Buffer, bounds: JsonBounds = JSON_BOUNDS): unknown {
  if (!isUtf8(body)) {
    throw new AppError('BAD_JSON', 'The request body is not valid UTF-8; send JSON encoded as UTF-8 (charset=utf-8 or no charset).');
  }
  return parseJson(body.toString('utf8'), bounds);
}
