// digest: SHA-256 of the raw stdin bytes and of the UTF-8 bytes of its `text` field.
//
//   stdin  {"text": "..."}                                  (other keys are ignored)
//   stdout {"sha256":"<hex of stdin>","bytes":N,"text":{"sha256":"<hex>","bytes":N}}
//          ("text" is left out when the field is absent)
//
// Lone surrogates in \u escapes become U+FFFD, as Node's UTF-8 encoder does.
// Bad input (not a JSON object, or "text" not a string): stderr message, exit 2.
// AssemblyScript with @assemblyscript/wasi-shim; built by agents/build.sh.

// ------------------------------------------------------------------ SHA-256

const K: StaticArray<u32> = [
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

const W = new StaticArray<u32>(64);
const H = new StaticArray<u32>(8);

function compress(block: Uint8Array, at: i32): void {
  for (let t = 0; t < 16; t++) {
    const p = at + t * 4;
    W[t] = (<u32>block[p] << 24) | (<u32>block[p + 1] << 16) | (<u32>block[p + 2] << 8) | <u32>block[p + 3];
  }
  for (let t = 16; t < 64; t++) {
    const w15 = W[t - 15];
    const w2 = W[t - 2];
    const s0 = rotr<u32>(w15, 7) ^ rotr<u32>(w15, 18) ^ (w15 >>> 3);
    const s1 = rotr<u32>(w2, 17) ^ rotr<u32>(w2, 19) ^ (w2 >>> 10);
    W[t] = W[t - 16] + s0 + W[t - 7] + s1;
  }
  let a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
  for (let t = 0; t < 64; t++) {
    const S1 = rotr<u32>(e, 6) ^ rotr<u32>(e, 11) ^ rotr<u32>(e, 25);
    const ch = (e & f) ^ (~e & g);
    const t1 = h + S1 + ch + K[t] + W[t];
    const S0 = rotr<u32>(a, 2) ^ rotr<u32>(a, 13) ^ rotr<u32>(a, 22);
    const maj = (a & b) ^ (a & c) ^ (b & c);
    const t2 = S0 + maj;
    h = g; g = f; f = e; e = d + t1;
    d = c; c = b; b = a; a = t1 + t2;
  }
  H[0] += a; H[1] += b; H[2] += c; H[3] += d;
  H[4] += e; H[5] += f; H[6] += g; H[7] += h;
}

const HEX = "0123456789abcdef";

function sha256Hex(data: Uint8Array, len: i32): string {
  H[0] = 0x6a09e667; H[1] = 0xbb67ae85; H[2] = 0x3c6ef372; H[3] = 0xa54ff53a;
  H[4] = 0x510e527f; H[5] = 0x9b05688c; H[6] = 0x1f83d9ab; H[7] = 0x5be0cd19;
  const full = len & ~63;
  for (let at = 0; at < full; at += 64) compress(data, at);
  // The tail, the 0x80 marker and the bit length: one or two more blocks.
  const rest = len - full;
  const tail = new Uint8Array(rest < 56 ? 64 : 128);
  for (let i = 0; i < rest; i++) tail[i] = data[full + i];
  tail[rest] = 0x80;
  const bits = <u64>len * 8;
  for (let i = 0; i < 8; i++) tail[tail.length - 1 - i] = <u8>(bits >>> (<u64>i * 8));
  for (let at = 0; at < tail.length; at += 64) compress(tail, at);
  let hex = "";
  for (let i = 0; i < 8; i++) {
    for (let s = 28; s >= 0; s -= 4) hex += HEX.charAt(<i32>((H[i] >>> s) & 15));
  }
  return hex;
}

// --------------------------------------------------------------- byte buffer

class Bytes {
  data: Uint8Array = new Uint8Array(64);
  len: i32 = 0;

  push(b: u8): void {
    if (this.len == this.data.length) this.grow(this.len + 1);
    this.data[this.len++] = b;
  }

  grow(need: i32): void {
    let cap = this.data.length * 2;
    while (cap < need) cap *= 2;
    const next = new Uint8Array(cap);
    next.set(this.data.subarray(0, this.len));
    this.data = next;
  }
}

function readStdin(): Bytes {
  const out = new Bytes();
  const chunk = new ArrayBuffer(65536);
  const view = Uint8Array.wrap(chunk);
  for (;;) {
    const n = process.stdin.read(chunk);
    if (n <= 0) break;
    if (out.len + n > out.data.length) out.grow(out.len + n);
    out.data.set(view.subarray(0, n), out.len);
    out.len += n;
  }
  return out;
}

// ---------------------------------------------------------- tiny JSON reader

function fail(msg: string): void {
  process.stderr.write("digest: " + msg + "\n");
  process.exit(2);
}

class Json {
  constructor(public s: Uint8Array, public end: i32, public p: i32 = 0, public depth: i32 = 0) {}

  peek(): i32 {
    return this.p < this.end ? <i32>this.s[this.p] : -1;
  }

  ws(): void {
    while (this.p < this.end) {
      const c = this.s[this.p];
      if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d) break;
      this.p++;
    }
  }

  hex4(): i32 {
    if (this.end - this.p < 4) return -1;
    let v = 0;
    for (let i = 0; i < 4; i++) {
      const c = <i32>this.s[this.p + i];
      let d = -1;
      if (c >= 0x30 && c <= 0x39) d = c - 0x30;
      else if (c >= 0x61 && c <= 0x66) d = c - 0x61 + 10;
      else if (c >= 0x41 && c <= 0x46) d = c - 0x41 + 10;
      if (d < 0) return -1;
      v = (v << 4) | d;
    }
    this.p += 4;
    return v;
  }

  /** Reads a string (at its opening quote); decoded UTF-8 goes to `out` if given. */
  str(out: Bytes | null): bool {
    if (this.peek() != 0x22) return false;
    this.p++;
    while (this.p < this.end) {
      const c = <i32>this.s[this.p++];
      if (c == 0x22) return true;
      if (c < 0x20) return false;
      if (c != 0x5c) {
        if (out) out.push(<u8>c);
        continue;
      }
      if (this.p >= this.end) return false;
      const e = <i32>this.s[this.p++];
      let cp = -1;
      if (e == 0x22 || e == 0x5c || e == 0x2f) cp = e;
      else if (e == 0x62) cp = 0x08;
      else if (e == 0x66) cp = 0x0c;
      else if (e == 0x6e) cp = 0x0a;
      else if (e == 0x72) cp = 0x0d;
      else if (e == 0x74) cp = 0x09;
      else if (e == 0x75) {
        cp = this.hex4();
        if (cp < 0) return false;
        if (cp >= 0xd800 && cp <= 0xdbff) {
          const save = this.p;
          let joined = false;
          if (this.end - this.p >= 6 && this.s[this.p] == 0x5c && this.s[this.p + 1] == 0x75) {
            this.p += 2;
            const lo = this.hex4();
            if (lo >= 0xdc00 && lo <= 0xdfff) {
              cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
              joined = true;
            }
          }
          if (!joined) {
            this.p = save;
            cp = 0xfffd;
          }
        } else if (cp >= 0xdc00 && cp <= 0xdfff) {
          cp = 0xfffd;
        }
      }
      if (cp < 0) return false;
      if (out) putUtf8(out, cp);
    }
    return false;
  }

  literal(word: string): bool {
    for (let i = 0; i < word.length; i++) {
      if (this.peek() != word.charCodeAt(i)) return false;
      this.p++;
    }
    return true;
  }

  digits(): i32 {
    const start = this.p;
    while (this.peek() >= 0x30 && this.peek() <= 0x39) this.p++;
    return this.p - start;
  }

  number(): bool {
    if (this.peek() == 0x2d) this.p++;
    if (this.peek() == 0x30) this.p++;
    else if (this.digits() == 0) return false;
    if (this.peek() == 0x2e) {
      this.p++;
      if (this.digits() == 0) return false;
    }
    if (this.peek() == 0x65 || this.peek() == 0x45) {
      this.p++;
      if (this.peek() == 0x2b || this.peek() == 0x2d) this.p++;
      if (this.digits() == 0) return false;
    }
    return true;
  }

  container(close: i32): bool {
    if (++this.depth > 512) return false;
    this.p++;
    this.ws();
    if (this.peek() == close) {
      this.p++;
      this.depth--;
      return true;
    }
    for (;;) {
      if (close == 0x7d) {
        if (!this.str(null)) return false;
        this.ws();
        if (this.peek() != 0x3a) return false;
        this.p++;
      }
      if (!this.skip()) return false;
      this.ws();
      const c = this.peek();
      if (c == 0x2c) {
        this.p++;
        this.ws();
        continue;
      }
      if (c != close) return false;
      this.p++;
      this.depth--;
      return true;
    }
  }

  skip(): bool {
    this.ws();
    const c = this.peek();
    if (c == 0x7b) return this.container(0x7d);
    if (c == 0x5b) return this.container(0x5d);
    if (c == 0x22) return this.str(null);
    if (c == 0x74) return this.literal("true");
    if (c == 0x66) return this.literal("false");
    if (c == 0x6e) return this.literal("null");
    return this.number();
  }
}

function putUtf8(out: Bytes, cp: i32): void {
  if (cp < 0x80) {
    out.push(<u8>cp);
  } else if (cp < 0x800) {
    out.push(<u8>(0xc0 | (cp >> 6)));
    out.push(<u8>(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out.push(<u8>(0xe0 | (cp >> 12)));
    out.push(<u8>(0x80 | ((cp >> 6) & 0x3f)));
    out.push(<u8>(0x80 | (cp & 0x3f)));
  } else {
    out.push(<u8>(0xf0 | (cp >> 18)));
    out.push(<u8>(0x80 | ((cp >> 12) & 0x3f)));
    out.push(<u8>(0x80 | ((cp >> 6) & 0x3f)));
    out.push(<u8>(0x80 | (cp & 0x3f)));
  }
}

/** The decoded top-level "text" string, or null when there is none. */
function findText(input: Bytes): Bytes | null {
  const j = new Json(input.data, input.len);
  let text: Bytes | null = null;
  j.ws();
  if (j.peek() != 0x7b) fail('stdin must be a JSON object like {"text": "..."}');
  j.p++;
  j.ws();
  if (j.peek() == 0x7d) {
    j.p++;
  } else {
    // One buffer for every key: the stub runtime never frees, so a fresh one per key
    // would let an object with many keys exhaust memory.
    const key = new Bytes();
    for (;;) {
      j.ws();
      key.len = 0;
      if (!j.str(key)) fail("malformed JSON: expected a string key");
      j.ws();
      if (j.peek() != 0x3a) fail("malformed JSON: expected ':'");
      j.p++;
      j.ws();
      const isText = key.len == 4 && key.data[0] == 0x74 && key.data[1] == 0x65 && key.data[2] == 0x78 && key.data[3] == 0x74;
      if (isText) {
        if (j.peek() != 0x22) fail('"text" must be a string');
        if (!text) text = new Bytes();
        const t = changetype<Bytes>(text);
        t.len = 0; // a repeated key: the last one wins, as in JSON.parse
        if (!j.str(t)) fail('malformed JSON string in "text"');
      } else if (!j.skip()) {
        fail("malformed JSON value");
      }
      j.ws();
      const c = j.peek();
      if (c == 0x2c) {
        j.p++;
        continue;
      }
      if (c == 0x7d) {
        j.p++;
        break;
      }
      fail("malformed JSON: expected ',' or '}'");
    }
  }
  j.ws();
  if (j.p != j.end) fail("trailing bytes after the JSON object");
  return text;
}

// --------------------------------------------------------------------- main

function main(): void {
  const input = readStdin();
  const text = findText(input);
  let out = '{"sha256":"' + sha256Hex(input.data, input.len) + '","bytes":' + input.len.toString();
  if (text) {
    out += ',"text":{"sha256":"' + sha256Hex(text.data, text.len) + '","bytes":' + text.len.toString() + "}";
  }
  out += "}\n";
  process.stdout.write(out);
  process.stderr.write("digest: " + input.len.toString() + " bytes hashed\n");
}

main();
