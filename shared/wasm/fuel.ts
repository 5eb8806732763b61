/**
 * Deterministic fuel: adds a mutable i64 global exported as `__fuel` and, at
 * every loop header and at the entry of every function that makes calls,
 * subtracts one unit and traps with `unreachable` once the global is below zero.
 * Functions that call nothing are not charged on entry: they cannot recurse, so
 * their time is bounded by their size and their (charged) loops; skipping them
 * keeps the cost near 5-15 % on C and Rust agents instead of 25-40 %. The host sets `__fuel` before
 * `_start` and reads it afterwards: below zero means the fuel ran out.
 *
 * It also adds an i32 global exported as `__last_grow` that records the result
 * of the latest `memory.grow` (-1: a grow failed), so the host can tell a trap
 * after a refused allocation from other traps.
 *
 * Only globals are added, so function, table and memory indices do not change.
 * Same bytes in, same bytes out.
 */
import { AppError } from '../errors';
import { ByteReader, SECTION_ORDER, SectionId, readSections, type Section } from './reader';
import { readStructure } from './module';
import { Op, readInstruction } from './opcodes';
import { FUEL_EXPORT, GROW_EXPORT } from './validate';
import { ByteWriter, encodeName, encodeS64, encodeU32 } from './writer';

export interface FuelOptions {
  /** Units charged per loop iteration and per entry of a calling function (default 1). */
  cost?: number;
}

/** Extra code charged at each entry and loop header. */
function fuelCheck(fuelIdx: number, cost: number): number[] {
  const g = encodeU32(fuelIdx);
  return [
    Op.globalGet, ...g,
    Op.i64Const, ...encodeS64(BigInt(cost)),
    Op.i64Sub,
    Op.globalSet, ...g,
    Op.globalGet, ...g,
    Op.i64Const, 0x00,
    Op.i64LtS,
    Op.if, 0x40,
    Op.unreachable,
    Op.end,
  ];
}

function skipValType(r: ByteReader): void {
  const b = r.u8();
  if (b === 0x63 || b === 0x64) r.s33();
}

/** One growable output buffer for the whole code section (no allocation per function body). */
class Sink {
  buf: Uint8Array;
  len = 0;
  constructor(capacity: number) {
    this.buf = new Uint8Array(capacity);
  }
  #room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  put(src: Uint8Array, from: number, to: number): void {
    this.#room(to - from);
    this.buf.set(src.subarray(from, to), this.len);
    this.len += to - from;
  }
  all(src: Uint8Array): void {
    this.put(src, 0, src.length);
  }
  u32(v: number): void {
    this.#room(5);
    do {
      let b = v & 0x7f;
      v >>>= 7;
      if (v !== 0) b |= 0x80;
      this.buf[this.len++] = b;
    } while (v !== 0);
  }
}



/**
 * Rewrites one body into `out`: the charge at entry (functions that call) and after each loop header,
 * the grow probe after each memory.grow. The common instructions are decoded inline (a 64 MiB module
 * went from 2.4 s to a fraction of it); every other one, and every one the rewrite acts on, goes
 * through readInstruction. `marks` collects insertion points (reused across bodies).
 */
function instrumentBody(bytes: Uint8Array, start: number, end: number, check: Uint8Array, growProbe: Uint8Array, out: Sink, marks: number[]): void {
  const r = new ByteReader(bytes, start, end);
  const localGroups = r.u32();
  for (let i = 0; i < localGroups; i++) {
    r.u32();
    skipValType(r);
  }
  const localsEnd = r.pos;
  let calls = false;
  marks.length = 0; // position after which to insert; negative: the grow probe
  let inserted = 0;
  const b = bytes;
  let p = r.pos;
  while (p < end) {
    const op = b[p]!;
    if (op >= 0x45 && op <= 0xc4) {
      p++; // numeric, no immediates
      continue;
    }
    if ((op >= 0x20 && op <= 0x24) || op === 0x41 || op === 0x42 || op === 0x0c || op === 0x0d) {
      // local/global get/set/tee, i32/i64.const, br, br_if: one LEB128 immediate
      p++;
      while (p < end && (b[p++]! & 0x80) !== 0);
      continue;
    }
    if (op >= 0x28 && op <= 0x3e) {
      // loads and stores: memarg = align (bit 6: a memory index follows), offset
      p++;
      const align = b[p]!;
      while (p < end && (b[p++]! & 0x80) !== 0);
      if ((align & 0x40) !== 0) while (p < end && (b[p++]! & 0x80) !== 0);
      while (p < end && (b[p++]! & 0x80) !== 0);
      continue;
    }
    if (op === 0x0b || op === 0x1a || op === 0x01 || op === 0x0f || op === 0x05 || op === 0x1b) {
      p++; // end, drop, nop, return, else, select
      continue;
    }
    if (op === 0x10) {
      calls = true;
      p++;
      while (p < end && (b[p++]! & 0x80) !== 0);
      continue;
    }
    r.pos = p;
    const full = readInstruction(r);
    p = r.pos;
    if (full === Op.loop) {
      marks.push(p);
      inserted += check.length;
    } else if (full === Op.memoryGrow) {
      marks.push(-p);
      inserted += growProbe.length;
    } else if (full >= Op.call && full <= Op.returnCallRef) {
      calls = true;
    }
  }
  if (p > end) r.fail('an instruction runs past the end of its function body');
  if (bytes[end - 1] !== Op.end) r.fail('a function body does not end with `end`');
  // A function that calls nothing cannot recurse: its time is bounded by its size and
  // its loops (charged above), so only functions that call are charged on entry.
  const size = end - start + inserted + (calls ? check.length : 0);
  out.u32(size);
  out.put(bytes, start, localsEnd);
  if (calls) out.all(check);
  let copied = localsEnd;
  for (const m of marks) {
    const at = Math.abs(m);
    out.put(bytes, copied, at);
    out.all(m < 0 ? growProbe : check);
    copied = at;
  }
  out.put(bytes, copied, end);
}

function rewriteCode(bytes: Uint8Array, s: Section, check: number[], growProbe: number[]): Uint8Array {
  const r = new ByteReader(bytes, s.start, s.end);
  const n = r.u32();
  const out = new Sink(Math.ceil((s.end - s.start) * 1.05) + 64);
  out.u32(n);
  const checkBytes = Uint8Array.from(check);
  const growBytes = Uint8Array.from(growProbe);
  const marks: number[] = [];
  for (let i = 0; i < n; i++) {
    const size = r.u32();
    const start = r.pos;
    r.skip(size);
    instrumentBody(bytes, start, start + size, checkBytes, growBytes, out, marks);
  }
  if (r.pos !== r.end) r.fail('the code section has trailing bytes');

  return out.buf.subarray(0, out.len);
}

/** Appends entries to a vector section (or starts one). */
function appendToVector(bytes: Uint8Array, s: Section | undefined, entries: number[][]): Uint8Array {
  const out = new ByteWriter();
  if (!s) return out.bytes(encodeU32(entries.length)).bytes(entries.flat()).finish();
  const r = new ByteReader(bytes, s.start, s.end);
  const n = r.u32();
  return out
    .bytes(encodeU32(n + entries.length))
    .bytes(bytes.subarray(r.pos, s.end))
    .bytes(entries.flat())
    .finish();
}

export function instrumentFuel(bytes: Uint8Array, options: FuelOptions = {}): Uint8Array {
  const cost = options.cost ?? 1;
  if (!Number.isInteger(cost) || cost < 1) throw new AppError('INTERNAL', `Fuel cost must be a positive integer; got ${cost}.`);
  const sections = readSections(bytes);
  const s = readStructure(bytes, sections);
  for (const name of [FUEL_EXPORT, GROW_EXPORT]) {
    if (s.exports.some((e) => e.name === name)) {
      throw new AppError('WASM_INVALID', `The module already exports \`${name}\` (instrumented twice, or a reserved name); pass the original bytes.`);
    }
  }
  const importedGlobals = s.imports.filter((i) => i.kind === 'global').length;
  const fuelIdx = importedGlobals + s.definedGlobals;
  const growIdx = fuelIdx + 1;
  const check = fuelCheck(fuelIdx, cost);
  const growProbe = [Op.globalSet, ...encodeU32(growIdx), Op.globalGet, ...encodeU32(growIdx)];

  const newGlobals = [
    [0x7e, 0x01, Op.i64Const, 0x00, Op.end], // (mut i64) = 0
    [0x7f, 0x01, Op.i32Const, 0x00, Op.end], // (mut i32) = 0
  ];
  const newExports = [
    [...encodeName(FUEL_EXPORT), 0x03, ...encodeU32(fuelIdx)],
    [...encodeName(GROW_EXPORT), 0x03, ...encodeU32(growIdx)],
  ];
  const globalSection = sections.find((x) => x.id === SectionId.global);
  const exportSection = sections.find((x) => x.id === SectionId.export);
  const order = (id: number): number => SECTION_ORDER.indexOf(id);

  const out = new ByteWriter().bytes(bytes.subarray(0, 8));
  let globalsDone = false;
  let exportsDone = false;
  const emitPending = (beforeId: number | null): void => {
    if (!globalsDone && (beforeId === null || order(beforeId) > order(SectionId.global))) {
      out.section(SectionId.global, appendToVector(bytes, undefined, newGlobals));
      globalsDone = true;
    }
    if (!exportsDone && (beforeId === null || order(beforeId) > order(SectionId.export))) {
      out.section(SectionId.export, appendToVector(bytes, undefined, newExports));
      exportsDone = true;
    }
  };
  for (const sec of sections) {
    if (sec.id !== SectionId.custom) emitPending(sec.id);
    switch (sec.id) {
      case SectionId.global:
        out.section(SectionId.global, appendToVector(bytes, globalSection, newGlobals));
        globalsDone = true;
        break;
      case SectionId.export:
        out.section(SectionId.export, appendToVector(bytes, exportSection, newExports));
        exportsDone = true;
        break;
      case SectionId.code:
        out.section(SectionId.code, rewriteCode(bytes, sec, check, growProbe));
        break;
      default:
        out.bytes(bytes.subarray(sec.headerStart, sec.end));
    }
  }
  emitPending(null);
  return out.finish();
}
