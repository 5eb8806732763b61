import { test } from 'node:test';
import assert from 'node:assert/strict';
import { joinRows, splitRows, type CacheLayout } from './kv';

/** Row b's value at (o, position t, i), distinct per row and never 0 (0 marks padding). */
const value = (b: number, o: number, t: number, i: number): number => 1000 * (b + 1) + 100 * o + 10 * t + i + 1;

function row(layout: CacheLayout, b: number, length: number): Float32Array {
  const out = new Float32Array(layout.outer * length * layout.inner);
  for (let o = 0; o < layout.outer; o++) for (let t = 0; t < length; t++) for (let i = 0; i < layout.inner; i++) out[(o * length + t) * layout.inner + i] = value(b, o, t, i);
  return out;
}

test('rows join left-padded to the longest and split back to their own positions', () => {
  const layout: CacheLayout = { outer: 2, inner: 3, hasSeq: true };
  const lengths = [1, 4, 2];
  const rows = lengths.map((length, b) => ({ data: row(layout, b, length), length }));
  const joined = joinRows(layout, rows, 4, rows[0]!.data);
  assert.equal(joined.length, 3 * 2 * 4 * 3);
  for (let b = 0; b < 3; b++) {
    for (let o = 0; o < 2; o++) {
      for (let t = 0; t < 4; t++) {
        const pad = 4 - (lengths[b] as number);
        const got = joined[((b * 2 + o) * 4 + t) * 3];
        assert.equal(got, t < pad ? 0 : value(b, o, t - pad, 0), `row ${b} head ${o} position ${t}`);
      }
    }
  }
  // A present one position longer: each row keeps its own positions plus the new one.
  const total = 5;
  const present = new Float32Array(3 * 2 * total * 3);
  for (let b = 0; b < 3; b++) {
    const pad = 4 - (lengths[b] as number);
    for (let o = 0; o < 2; o++) for (let t = pad; t < total; t++) for (let i = 0; i < 3; i++) present[((b * 2 + o) * total + t) * 3 + i] = value(b, o, t - pad, i);
  }
  const split = splitRows(layout, present, total, lengths.map((l) => l + 1));
  split.forEach((data, b) => assert.deepEqual(data, row(layout, b, (lengths[b] as number) + 1)));
  assert.throws(() => splitRows(layout, present, total, [6, 1, 1]), RangeError);
});

test('states without a sequence axis join and split by plain concatenation', () => {
  const layout: CacheLayout = { outer: 4, inner: 1, hasSeq: false };
  const rows = [0, 1].map((b) => ({ data: Float32Array.from({ length: 4 }, (_, i) => value(b, i, 0, 0)), length: 0 }));
  const joined = joinRows(layout, rows, 0, rows[0]!.data);
  assert.deepEqual([...joined], [...rows[0]!.data, ...rows[1]!.data]);
  assert.deepEqual(splitRows(layout, joined, 0, [0, 0]), rows.map((r) => r.data));
  const f16 = joinRows(layout, rows.map((r) => ({ data: Uint16Array.from(r.data, (x) => x % 65536), length: 0 })), 0, new Uint16Array(0));
  assert.ok(f16 instanceof Uint16Array);
});
