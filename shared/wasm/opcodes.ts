/**
 * Decodes one instruction at a time, skipping its immediates: the full MVP
 * table plus sign extension, saturating truncation and bulk memory (0xFC),
 * reference types, multi-value block types, tail calls, typed function
 * references, exception handling, threads (0xFE) and SIMD incl. relaxed SIMD
 * (0xFD). GC (0xFB) is refused. Used to walk function bodies when instrumenting.
 */
import type { ByteReader } from './reader';

export const Op = {
  unreachable: 0x00,
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  end: 0x0b,
  /** call .. return_call_ref (0x10..0x15) are every kind of call. */
  call: 0x10,
  returnCallRef: 0x15,
  globalGet: 0x23,
  globalSet: 0x24,
  i32Const: 0x41,
  i64Const: 0x42,
  i64LtS: 0x53,
  i64Sub: 0x7d,
  memoryGrow: 0x40,
} as const;

/** Block type: 0x40 (empty), a one-byte value type, or a type index (s33). */
function skipBlockType(r: ByteReader): void {
  const b = r.bytes[r.pos];
  if (b === 0x40 || (b >= 0x6e && b <= 0x7f) || b === 0x6a || b === 0x6b || b === 0x6c || b === 0x6d) {
    r.pos++;
    return;
  }
  if (b === 0x63 || b === 0x64) {
    // (ref null? heaptype)
    r.pos++;
    r.s33();
    return;
  }
  r.s33();
}

function skipValType(r: ByteReader): void {
  const b = r.u8();
  if (b === 0x63 || b === 0x64) r.s33();
}

/** memarg: align (bit 6 set: a memory index follows), then offset (u64 for memory64). */
function skipMemArg(r: ByteReader): void {
  const align = r.u32();
  if (align & 0x40) r.u32();
  r.skipLeb(10);
}

function skipFC(r: ByteReader, sub: number): void {
  if (sub <= 7) return; // saturating truncation
  switch (sub) {
    case 8: // memory.init data, mem
      r.u32();
      r.u32();
      return;
    case 9: // data.drop
      r.u32();
      return;
    case 10: // memory.copy dst, src
      r.u32();
      r.u32();
      return;
    case 11: // memory.fill
      r.u32();
      return;
    case 12: // table.init elem, table
      r.u32();
      r.u32();
      return;
    case 13: // elem.drop
      r.u32();
      return;
    case 14: // table.copy
      r.u32();
      r.u32();
      return;
    case 15: // table.grow
    case 16: // table.size
    case 17: // table.fill
      r.u32();
      return;
    default:
      r.fail(`unknown 0xFC instruction ${sub}`);
  }
}

function skipFD(r: ByteReader, sub: number): void {
  if (sub <= 11 || sub === 92 || sub === 93) {
    skipMemArg(r); // v128.load*, v128.store, load32_zero, load64_zero
    return;
  }
  if (sub === 12 || sub === 13) {
    r.skip(16); // v128.const, i8x16.shuffle
    return;
  }
  if (sub >= 21 && sub <= 34) {
    r.skip(1); // extract_lane / replace_lane
    return;
  }
  if (sub >= 84 && sub <= 91) {
    skipMemArg(r); // load*_lane / store*_lane
    r.skip(1);
    return;
  }
  if (sub <= 0x113) return; // every other SIMD and relaxed SIMD op has no immediate
  r.fail(`unknown 0xFD instruction ${sub}`);
}

function skipFE(r: ByteReader, sub: number): void {
  if (sub === 3) {
    r.skip(1); // atomic.fence
    return;
  }
  if (sub <= 2 || (sub >= 0x10 && sub <= 0x4e)) {
    skipMemArg(r);
    return;
  }
  r.fail(`unknown 0xFE instruction ${sub}`);
}

/**
 * Reads one instruction and its immediates. Returns the opcode; prefixed
 * instructions come back as (prefix << 16) | sub-opcode.
 */
export function readInstruction(r: ByteReader): number {
  const op = r.u8();
  if (op >= 0x45 && op <= 0xc4) return op; // numeric, no immediates (incl. sign extension)
  if (op >= 0x28 && op <= 0x3e) {
    skipMemArg(r);
    return op;
  }
  switch (op) {
    case 0x00: // unreachable
    case 0x01: // nop
    case 0x05: // else
    case 0x0a: // throw_ref
    case 0x0b: // end
    case 0x0f: // return
    case 0x19: // catch_all
    case 0x1a: // drop
    case 0x1b: // select
    case 0xd1: // ref.is_null
    case 0xd3: // ref.eq
    case 0xd4: // ref.as_non_null
      return op;
    case 0x02: // block
    case 0x03: // loop
    case 0x04: // if
    case 0x06: // try (legacy exceptions)
      skipBlockType(r);
      return op;
    case 0x07: // catch tag
    case 0x08: // throw tag
    case 0x09: // rethrow label
    case 0x0c: // br
    case 0x0d: // br_if
    case 0x10: // call
    case 0x12: // return_call
    case 0x14: // call_ref type
    case 0x15: // return_call_ref type
    case 0x18: // delegate label
    case 0x20: // local.get
    case 0x21: // local.set
    case 0x22: // local.tee
    case 0x23: // global.get
    case 0x24: // global.set
    case 0x25: // table.get
    case 0x26: // table.set
    case 0x3f: // memory.size
    case 0x40: // memory.grow
    case 0xd2: // ref.func
    case 0xd5: // br_on_null
    case 0xd6: // br_on_non_null
      r.u32();
      return op;
    case 0x0e: {
      // br_table: vec(label) default
      const n = r.u32();
      for (let i = 0; i <= n; i++) r.u32();
      return op;
    }
    case 0x11: // call_indirect type table
    case 0x13: // return_call_indirect
      r.u32();
      r.u32();
      return op;
    case 0x1c: {
      // select t*
      const n = r.u32();
      for (let i = 0; i < n; i++) skipValType(r);
      return op;
    }
    case 0x1f: {
      // try_table blocktype vec(catch)
      skipBlockType(r);
      const n = r.u32();
      for (let i = 0; i < n; i++) {
        const kind = r.u8();
        if (kind === 0 || kind === 1) r.u32(); // tag
        else if (kind !== 2 && kind !== 3) r.fail(`unknown catch kind ${kind}`);
        r.u32(); // label
      }
      return op;
    }
    case 0x41: // i32.const
      r.skipLeb(5);
      return op;
    case 0x42: // i64.const
      r.skipLeb(10);
      return op;
    case 0x43: // f32.const
      r.skip(4);
      return op;
    case 0x44: // f64.const
      r.skip(8);
      return op;
    case 0xd0: // ref.null heaptype
      r.s33();
      return op;
    case 0xfc: {
      const sub = r.u32();
      skipFC(r, sub);
      return (0xfc << 16) | sub;
    }
    case 0xfd: {
      const sub = r.u32();
      skipFD(r, sub);
      return (0xfd << 16) | sub;
    }
    case 0xfe: {
      const sub = r.u32();
      skipFE(r, sub);
      return (0xfe << 16) | sub;
    }
    case 0xfb:
      return r.fail('GC instructions (0xFB) are not supported in agents');
    default:
      return r.fail(`unknown opcode 0x${op.toString(16)}`);
  }
}
