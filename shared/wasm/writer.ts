/** Encoding helpers for rewriting WebAssembly binaries. */

export function encodeU32(value: number): number[] {
  const out: number[] = [];
  let v = value >>> 0;
  do {
    let b = v & 0x7f;
    v >>>= 7;
    if (v !== 0) b |= 0x80;
    out.push(b);
  } while (v !== 0);
  return out;
}

/** Signed LEB128 of a 64-bit value. */
export function encodeS64(value: bigint): number[] {
  const out: number[] = [];
  let v = BigInt.asIntN(64, value);
  for (;;) {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    const signBit = (b & 0x40) !== 0;
    if ((v === 0n && !signBit) || (v === -1n && signBit)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

export function encodeName(name: string): number[] {
  const raw = new TextEncoder().encode(name);
  return [...encodeU32(raw.length), ...raw];
}

/** Collects byte chunks and joins them once. */
export class ByteWriter {
  readonly #chunks: Uint8Array[] = [];
  #length = 0;

  get length(): number {
    return this.#length;
  }

  bytes(chunk: Uint8Array | readonly number[]): this {
    const c = chunk instanceof Uint8Array ? chunk : Uint8Array.from(chunk);
    if (c.length) {
      this.#chunks.push(c);
      this.#length += c.length;
    }
    return this;
  }

  /** A section: id, payload size, payload. */
  section(id: number, payload: Uint8Array): this {
    return this.bytes([id, ...encodeU32(payload.length)]).bytes(payload);
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.#length);
    let off = 0;
    for (const c of this.#chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }
}
