/**
 * A large WASI command module made with the project's wasm writer (shared/wasm/writer.ts), for tests and the
 * bench: `functions` functions of (i32) → i32, each a counted loop, a run of adds and xors of the argument and constants (the bulk) and a
 * call to the next function (chains of 64), so validation, fuel instrumentation and compilation all have
 * real work; `_start` calls the first chain and writes `{"large":<functions>,"seed":<seed>}` on stdout.
 * `seed` changes the bytes (and so the hash) without changing the size.
 */
import { ByteWriter, encodeName, encodeU32 } from '../../../shared/wasm/writer';

const I32 = 0x7f;
const FUNC = 0x60;

function section(id: number, parts: readonly (Uint8Array | readonly number[])[]): Uint8Array {
  const w = new ByteWriter();
  for (const p of parts) w.bytes(p);
  return new ByteWriter().section(id, w.finish()).finish();
}

function vec(items: readonly (readonly number[])[]): number[] {
  return [...encodeU32(items.length), ...items.flat()];
}

/**
 * About `targetBytes` bytes (within a few KiB): the number of functions follows from the body size.
 * `hotLoops`: the iterations of the first function's counted loop (default 3). Some millions make that function
 * hot enough for V8 to tier it up to its optimising compiler, which is what V8's code cache stores.
 */
export function largeAgentModule(targetBytes: number, seed = 0, hotLoops = 3): Uint8Array {
  const adds = 640; // (local.get 0; i32.const k; i32.add; i32.xor) per body: 5–6 bytes each
  // One body template; only the callee index differs between functions.
  const head = [
    0x00, // no locals
    0x02, 0x40, 0x03, 0x40, // block loop
    0x20, 0x00, 0x45, 0x0d, 0x01, // local.get 0, i32.eqz, br_if 1
    0x20, 0x00, 0x41, 0x01, 0x6b, 0x21, 0x00, // local.get 0, i32.const 1, i32.sub, local.set 0
    0x0c, 0x00, 0x0b, 0x0b, // br 0, end, end
    0x41, ...encodeS32(seed), // i32.const seed
  ];
  const filler: number[] = [];
  // acc ^= (param + k): nothing an optimising compiler can fold, so tiered-up code is as large as the body.
  for (let i = 0; i < adds; i++) filler.push(0x20, 0x00, 0x41, ...encodeS32((i * 7919 + seed) % 100_000), 0x6a, 0x73);
  const bodyOf = (callee: number | null): number[] => {
    const tail = callee === null ? [0x0b] : [0x41, 0x00, 0x10, ...encodeU32(callee), 0x6a, 0x0b]; // i32.const 0, call, i32.add, end
    const body = [...head, ...filler, ...tail];
    return [...encodeU32(body.length), ...body];
  };
  const perFunction = bodyOf(1 << 20).length;
  const functions = Math.max(2, Math.floor((targetBytes - 512) / perFunction));
  const json = new TextEncoder().encode(JSON.stringify({ large: functions, seed }));

  const types = section(1, [vec([[FUNC, 4, I32, I32, I32, I32, 1, I32], [FUNC, 0, 0], [FUNC, 1, I32, 1, I32]])]);
  const imports = section(2, [vec([[...encodeName('wasi_snapshot_preview1'), ...encodeName('fd_write'), 0x00, 0x00]])]);
  const funcs = new ByteWriter().bytes(encodeU32(functions + 1)).bytes([0x01]);
  const twos = new Uint8Array(functions).fill(0x02);
  funcs.bytes(twos);
  const funcSection = new ByteWriter().section(3, funcs.finish()).finish();
  const memory = section(5, [vec([[0x00, 0x01]])]); // min 1 page, no maximum (the runtime writes the cap)
  const exports = section(7, [vec([[...encodeName('memory'), 0x02, 0x00], [...encodeName('_start'), 0x00, ...encodeU32(1)]])]);

  // Code: _start (index 1), then functions 2 … functions+1; function i calls i+1 except at the end of a chain of 64.
  const code = new ByteWriter().bytes(encodeU32(functions + 1));
  const start = [
    0x41, ...encodeS32(hotLoops), 0x10, 0x02, 0x1a, // i32.const hotLoops, call 2, drop
    0x41, 0x01, 0x41, 0x10, 0x41, 0x01, 0x41, 0x08, 0x10, 0x00, 0x1a, // fd_write(1, 16, 1, 8), drop
    0x0b,
  ];
  code.bytes([...encodeU32(start.length + 1), 0x00, ...start]);
  // One template per callee LEB length; only the callee bytes are rewritten per function.
  let cachedLen = -1;
  let template: Uint8Array | null = null;
  let calleeAt = 0;
  for (let i = 0; i < functions; i++) {
    const index = i + 2;
    const last = i === functions - 1 || i % 64 === 63;
    if (last) {
      code.bytes(bodyOf(null));
      continue;
    }
    const callee = encodeU32(index + 1);
    if (callee.length !== cachedLen || template === null) {
      template = Uint8Array.from(bodyOf(index + 1));
      cachedLen = callee.length;
      calleeAt = template.length - 1 - 1 - callee.length; // ... call <callee> i32.add end
    }
    const body = template.slice();
    body.set(callee, calleeAt);
    code.bytes(body);
  }
  const codeSection = new ByteWriter().section(10, code.finish()).finish();
  // Data: iovec { ptr 32, len } at 16, the JSON at 32.
  const iov = [32, 0, 0, 0, ...u32le(json.length)];
  const data = section(11, [
    encodeU32(2),
    [0x00, 0x41, 0x10, 0x0b, ...encodeU32(iov.length), ...iov],
    [0x00, 0x41, 0x20, 0x0b, ...encodeU32(json.length)],
    json,
  ]);
  return new ByteWriter()
    .bytes([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00])
    .bytes(types)
    .bytes(imports)
    .bytes(funcSection)
    .bytes(memory)
    .bytes(exports)
    .bytes(codeSection)
    .bytes(data)
    .finish();
}

function u32le(n: number): number[] {
  return [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
}

function encodeS32(value: number): number[] {
  const out: number[] = [];
  let v = value | 0;
  for (;;) {
    const b = v & 0x7f;
    v >>= 7;
    if ((v === 0 && (b & 0x40) === 0) || (v === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}
