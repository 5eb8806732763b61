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
 *
 * `JsonBodyParser`, the HTTP API's parser, scans large bodies on a worker thread (server/thread.ts).
 */
import { isUtf8 } from 'node:buffer';
import { AppError, type ErrorCode } from '../shared/errors';
import { OffThread, serveCalls } from './thread';

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

function refuse(code: ErrorCode, message: string, at: number, details: Record<string, unknown> = {}): AppError {
  return new AppError(code, message, { at, ...details });
}

function badJson(at: number, what: string): AppError {
  return refuse('BAD_JSON', `The request body is not valid JSON (${what} at character ${at}); send one JSON value with content-type application/json.`, at);
}

/** The index of the first non-space character at or after `i` (n at the end: never a read past it). */
function skipSpace(text: string, i: number, n: number): number {
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) return i;
    i++;
  }
  return n;
}

/**
 * Throws the first bound `text` breaks; returns when `JSON.parse(text)` may build it.
 *
 * One loop over the text, written for speed as much as for bounds: it runs on the event loop for every
 * JSON body under OFF_THREAD_JSON_BYTES (the larger ones, up to fastify's 1 MiB, on the JSON thread), so it
 * must cost no more than `JSON.parse` does. No index past the end is ever read (such a read deoptimised
 * it), strings are skipped with `indexOf`, and the common shapes (no space between tokens, short plain
 * numbers) take the shortest path.
 */
export function scanJson(text: string, bounds: JsonBounds = JSON_BOUNDS): void {
  const n = text.length;
  const { maxDepth, maxStringLength, maxKeys, maxArrayLength } = bounds;
  const kinds = new Uint8Array(maxDepth + 1);
  const counts = new Uint32Array(maxDepth + 1);
  /** Position of the next backslash at or after the last search (n: none left). */
  const escape = new Int32Array([-1]);
  let depth = 0;
  let i = skipSpace(text, 0, n);
  if (i === n) throw refuse('BAD_JSON', 'The request body is empty; send a JSON value or drop the content-type header.', 0);

  for (;;) {
    // A value starts at i (spaces skipped).
    if (i >= n) throw badJson(i, 'unexpected end');
    let c = text.charCodeAt(i);
    if (c === 0x22) {
      i = scanString(text, i, false, maxStringLength, escape);
    } else if (c === 0x7b || c === 0x5b) {
      if (depth === maxDepth) {
        throw refuse('JSON_TOO_DEEP', `The body nests objects and arrays more than ${maxDepth} deep; flatten it.`, i, { limit: maxDepth });
      }
      depth++;
      i = skipSpace(text, i + 1, n);
      const close = i < n ? text.charCodeAt(i) : -1;
      if (c === 0x7b) {
        kinds[depth] = OBJECT;
        counts[depth] = 0;
        if (close === 0x7d) {
          depth--;
          i++;
        } else {
          i = scanKey(text, i, depth, counts, maxKeys, maxStringLength, escape);
          continue;
        }
      } else {
        kinds[depth] = ARRAY;
        if (close === 0x5d) {
          depth--;
          i++;
        } else {
          counts[depth] = 1;
          continue;
        }
      }
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      i = scanNumber(text, i, n);
    } else if (c === 0x74 && text.startsWith('true', i)) {
      i += 4;
    } else if (c === 0x66 && text.startsWith('false', i)) {
      i += 5;
    } else if (c === 0x6e && text.startsWith('null', i)) {
      i += 4;
    } else {
      throw badJson(i, 'unexpected character');
    }
    // After a value: commas and closing brackets until the next value starts, or the text ends.
    for (;;) {
      i = skipSpace(text, i, n);
      if (depth === 0) {
        if (i !== n) throw badJson(i, 'text after the value');
        return;
      }
      if (i >= n) throw badJson(i, 'unexpected end');
      c = text.charCodeAt(i);
      const kind = kinds[depth];
      if (c === 0x2c) {
        i = skipSpace(text, i + 1, n);
        if (kind === OBJECT) {
          i = scanKey(text, i, depth, counts, maxKeys, maxStringLength, escape);
        } else if (++counts[depth]! > maxArrayLength) {
          throw refuse('JSON_TOO_MANY_ITEMS', `An array holds more than ${maxArrayLength} elements; split it.`, i, { limit: maxArrayLength });
        }
        break;
      } else if ((c === 0x7d && kind === OBJECT) || (c === 0x5d && kind === ARRAY)) {
        depth--;
        i++;
      } else {
        throw badJson(i, 'expected , or a closing bracket');
      }
    }
  }
}

/** A key at `i`, counted against its object, then its colon; answers where the value starts. */
function scanKey(text: string, i: number, depth: number, counts: Uint32Array, maxKeys: number, maxStringLength: number, escape: Int32Array): number {
  const n = text.length;
  if (i >= n || text.charCodeAt(i) !== 0x22) throw badJson(i, 'expected a key');
  if (++counts[depth]! > maxKeys) {
    throw refuse('JSON_TOO_MANY_ITEMS', `An object holds more than ${maxKeys} keys; split it.`, i, { limit: maxKeys });
  }
  i = skipSpace(text, scanString(text, i, true, maxStringLength, escape), n);
  if (i >= n || text.charCodeAt(i) !== 0x3a) throw badJson(i, 'expected :');
  return skipSpace(text, i + 1, n);
}

/** The string that opens at `start`; answers the index after its closing quote. */
function scanString(text: string, start: number, isKey: boolean, maxStringLength: number, escape: Int32Array): number {
  let j = start + 1;
  let length = 0;
  let escaped = false;
  for (;;) {
    const quote = text.indexOf('"', j);
    if (quote < 0) throw badJson(start, 'unterminated string');
    let next = escape[0]!;
    if (next < j) {
      next = text.indexOf('\\', j);
      escape[0] = next = next < 0 ? text.length : next;
    }
    if (next > quote) {
      length += quote - j;
      j = quote + 1;
      break;
    }
    // An escape before the quote: \uXXXX is six characters, the others two; each decodes to one unit.
    escaped = true;
    length += next - j + 1;
    j = next + (text.charCodeAt(next + 1) === 0x75 ? 6 : 2);
  }
  if (length > maxStringLength) {
    throw refuse('JSON_STRING_TOO_LONG', `A ${isKey ? 'key' : 'string'} holds ${length} characters; the limit is ${maxStringLength}.`, start, {
      limit: maxStringLength,
    });
  }
  if (isKey && length === 9 && (escaped ? decodeKey(text, start, j) === '__proto__' : text.startsWith('__proto__', start + 1))) {
    throw refuse('JSON_FORBIDDEN_KEY', 'The key "__proto__" is not accepted in request bodies; rename it.', start, { key: '__proto__' });
  }
  return j;
}

/** A number token; those that could leave a double's range (an exponent, or more than 15 characters) are evaluated. */
function scanNumber(text: string, start: number, n: number): number {
  let i = start + 1;
  let plain = true;
  while (i < n) {
    const c = text.charCodeAt(i);
    if ((c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x2b) {
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
  return buildJson(text);
}

/** `JSON.parse` of text the scan passed (it may still refuse syntax the scan let through). */
function buildJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new AppError('BAD_JSON', `The request body is not valid JSON (${(err as Error).message}); send one JSON value with content-type application/json.`);
  }
}

function checkUtf8(body: Buffer): void {
  if (!isUtf8(body)) {
    throw new AppError('BAD_JSON', 'The request body is not valid UTF-8; send JSON encoded as UTF-8 (charset=utf-8 or no charset).');
  }
}

/** Parses a UTF-8 JSON body (bytes that are not UTF-8 are refused, not replaced). */
export function parseJsonBody(body: Buffer, bounds: JsonBounds = JSON_BOUNDS): unknown {
  checkUtf8(body);
  return parseJson(body.toString('utf8'), bounds);
}

/** Bodies from this size up are scanned on the JSON thread; smaller ones cost the event loop under a millisecond or two. */
export const OFF_THREAD_JSON_BYTES = 64 << 10;

type Refusal = { code: ErrorCode; message: string; details: Record<string, unknown> | undefined } | null;

const ROLE = 'json-scan';

/**
 * The parser of the HTTP API's JSON bodies. A body under OFF_THREAD_JSON_BYTES is parsed where it arrives.
 * A larger one (up to fastify's 1 MiB) is checked for UTF-8 and scanned on a worker thread, so that hostile
 * bodies, which the scan refuses, never cost the event loop more than a copy: on the 2-core machines CI runs
 * on, a 1 MiB scan in code V8 has not yet optimised for its shape took 40–80 ms, and a /healthz behind it
 * waited as long (server/hostile-input.test.ts). Only a body that passes is built, with `JSON.parse`, on the
 * event loop. Should the thread fail, the scan runs here instead: bounds are never skipped.
 */
export class JsonBodyParser {
  readonly #thread = new OffThread<Uint8Array, Refusal>(import.meta.url, ROLE);
  /** Bodies the thread scanned (the others were scanned here). */
  scannedOffThread = 0;

  async parse(body: Buffer): Promise<unknown> {
    if (body.length < OFF_THREAD_JSON_BYTES) return parseJsonBody(body);
    let refusal: Refusal;
    try {
      const copy = new Uint8Array(body); // the thread takes the copy; fastify keeps the body
      refusal = await this.#thread.call(copy, [copy.buffer]);
      this.scannedOffThread++;
    } catch {
      return parseJsonBody(body);
    }
    if (refusal) throw new AppError(refusal.code, refusal.message, refusal.details);
    return buildJson(body.toString('utf8'));
  }

  close(): Promise<void> {
    return this.#thread.close();
  }
}

serveCalls<Uint8Array, Refusal>(ROLE, (bytes) => {
  try {
    const body = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    checkUtf8(body);
    scanJson(body.toString('utf8'));
    return null;
  } catch (err) {
    if (err instanceof AppError) return { code: err.code, message: err.message, details: err.details };
    throw err;
  }
});
