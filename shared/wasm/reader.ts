/**
 * A small reader for the WebAssembly binary format: LEB128 numbers, names and
 * the section list. Every read is bounds-checked and fails with WASM_INVALID.
 */
import { AppError } from '../errors';

export const WASM_MAGIC = [0x00, 0x61, 0x73, 0x6d] as const;
export const WASM_VERSION = [0x01, 0x00, 0x00, 0x00] as const;

/** Section ids of the binary format (custom = 0). */
export const SectionId = {
  custom: 0,
  type: 1,
  import: 2,
  function: 3,
  table: 4,
  memory: 5,
  global: 6,
  export: 7,
  start: 8,
  element: 9,
  code: 10,
  data: 11,
  dataCount: 12,
  tag: 13,
} as const;

/** Where each known section must sit, in order (custom sections may sit anywhere). */
export const SECTION_ORDER: readonly number[] = [1, 2, 3, 4, 5, 13, 6, 7, 8, 9, 12, 10, 11];

export class ByteReader {
  pos: number;

  constructor(
    readonly bytes: Uint8Array,
    start = 0,
    readonly end = bytes.length,
  ) {
    this.pos = start;
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  fail(what: string): never {
    throw new AppError('WASM_INVALID', `The module is malformed at byte ${this.pos}: ${what}. Rebuild it with a WebAssembly toolchain.`, {
      offset: this.pos,
    });
  }

  u8(): number {
    if (this.pos >= this.end) this.fail('unexpected end of data');
    return this.bytes[this.pos++];
  }

  /** Unsigned LEB128 up to 32 bits. */
  u32(): number {
    let result = 0;
    let shift = 0;
    for (let i = 0; i < 5; i++) {
      const b = this.u8();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) {
        if (result > 0xffffffff) this.fail('u32 out of range');
        return result;
      }
      shift += 7;
    }
    return this.fail('u32 LEB128 longer than 5 bytes');
  }

  /** Unsigned LEB128 up to 64 bits, as a number (exact below 2^53). */
  u64(): number {
    let result = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      const b = this.u8();
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
    }
    return this.fail('u64 LEB128 longer than 10 bytes');
  }

  /** Signed LEB128 up to 33 bits (block types, heap types). */
  s33(): number {
    let result = 0;
    let shift = 0;
    let b: number;
    let i = 0;
    do {
      if (i++ >= 5) this.fail('s33 LEB128 longer than 5 bytes');
      b = this.u8();
      result += (b & 0x7f) * 2 ** shift;
      shift += 7;
    } while (b & 0x80);
    if (b & 0x40) result -= 2 ** shift;
    return result;
  }

  /** Skips one LEB128 number of at most `maxBytes` bytes, whatever its sign. */
  skipLeb(maxBytes: number): void {
    for (let i = 0; i < maxBytes; i++) {
      if ((this.u8() & 0x80) === 0) return;
    }
    this.fail(`LEB128 longer than ${maxBytes} bytes`);
  }

  skip(n: number): void {
    if (n < 0 || this.pos + n > this.end) this.fail('unexpected end of data');
    this.pos += n;
  }

  take(n: number): Uint8Array {
    const start = this.pos;
    this.skip(n);
    return this.bytes.subarray(start, start + n);
  }

  name(): string {
    const len = this.u32();
    const raw = this.take(len);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(raw);
    } catch {
      return this.fail('a name is not valid UTF-8');
    }
  }
}

export interface Section {
  id: number;
  /** Offset of the section id byte. */
  headerStart: number;
  /** Offset of the first payload byte. */
  start: number;
  /** Offset just past the payload. */
  end: number;
  /** For custom sections: their name. */
  customName?: string;
}

/** Checks the header and lists the sections, with their order checked. */
export function readSections(bytes: Uint8Array): Section[] {
  const r = new ByteReader(bytes);
  if (bytes.length < 8) r.fail('shorter than the 8-byte header; not a WebAssembly module');
  for (let i = 0; i < 4; i++) {
    if (bytes[i] !== WASM_MAGIC[i]) r.fail('no \\0asm magic; not a WebAssembly module');
  }
  for (let i = 0; i < 4; i++) {
    if (bytes[4 + i] !== WASM_VERSION[i]) r.fail('unsupported binary version (only version 1 is read)');
  }
  r.pos = 8;
  const sections: Section[] = [];
  let lastOrder = -1;
  const seen = new Set<number>();
  while (!r.done) {
    const headerStart = r.pos;
    const id = r.u8();
    const size = r.u32();
    const start = r.pos;
    if (start + size > bytes.length) r.fail(`section ${id} runs past the end of the file (truncated?)`);
    const section: Section = { id, headerStart, start, end: start + size };
    if (id === SectionId.custom) {
      const cr = new ByteReader(bytes, start, start + size);
      section.customName = cr.name();
    } else {
      const order = SECTION_ORDER.indexOf(id);
      if (order < 0) r.fail(`unknown section id ${id}`);
      if (seen.has(id)) r.fail(`section ${id} appears twice`);
      if (order < lastOrder) r.fail(`section ${id} is out of order`);
      seen.add(id);
      lastOrder = order;
    }
    sections.push(section);
    r.pos = start + size;
  }
  return sections;
}

export function findSection(sections: readonly Section[], id: number): Section | undefined {
  return sections.find((s) => s.id === id);
}
