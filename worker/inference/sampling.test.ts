import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mulberry32 } from '../model';
import { logSoftmax, tokenLogprob } from './logprobs';
import { argmax, sampleToken, topIndices } from './sampling';

function randomRow(n: number, seed: number): Float32Array {
  const rng = mulberry32(seed);
  const row = new Float32Array(n);
  for (let i = 0; i < n; i++) row[i] = 3 * rng.normal();
  return row;
}

/** The obvious implementation: full sort, cut, renormalise, pick with the same draw. */
function sampleBySort(row: Float32Array, sorted: readonly number[], temp: number, topK: number, topP: number, u: number): number {
  let idx = sorted.slice();
  if (topK > 0) idx = idx.slice(0, topK);
  const max = row[idx[0]!]!;
  const w = idx.map((i) => Math.exp((row[i]! - max) / temp));
  const mass = topK > 0 ? w.reduce((a, b) => a + b, 0) : Array.from(row).reduce((a, v) => a + Math.exp((v - max) / temp), 0);
  let acc = 0;
  let keep = 0;
  while (keep < idx.length && (keep === 0 || acc < topP * mass)) acc += w[keep++]!;
  let target = u * acc;
  for (let n = 0; n < keep; n++) {
    target -= w[n]!;
    if (target < 0) return idx[n]!;
  }
  return idx[keep - 1]!;
}

test('topIndices equals a full sort, ties by lower index, and respects the mask', () => {
  const row = randomRow(5000, 1);
  const sorted = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]! || a - b);
  assert.deepEqual(topIndices(row, 40), sorted.slice(0, 40));
  const ties = Float32Array.from([1, 3, 3, 2, 3]);
  assert.deepEqual(topIndices(ties, 3), [1, 2, 4]);
  const mask = new Uint8Array(5).fill(1);
  mask[1] = 0;
  assert.deepEqual(topIndices(ties, 2, mask), [2, 4]);
  assert.equal(argmax(ties), 1);
  assert.equal(argmax(ties, mask), 2);
});

test('sampling: greedy draws nothing; top-k/top-p equal the full-sort version for the same draw', () => {
  const row = randomRow(32000, 2);
  const sorted = Array.from(row.keys()).sort((a, b) => row[b]! - row[a]! || a - b);
  const rng = mulberry32(5);
  assert.equal(sampleToken(row, { temperature: 0 }, rng), argmax(row));
  assert.equal(rng.next(), mulberry32(5).next(), 'greedy must not consume the generator');
  const cases = [
    { temperature: 0.7, topK: 40, topP: 1 },
    { temperature: 1, topK: 0, topP: 0.9 },
    { temperature: 1.3, topK: 0, topP: 0.999 }, // a large nucleus: the selection has to grow
    { temperature: 0.8, topK: 50, topP: 0.5 },
    { temperature: 1, topK: 0, topP: 0 },
  ];
  for (const c of cases) {
    for (let s = 0; s < 20; s++) {
      const u = mulberry32(100 + s).next();
      const got = sampleToken(row, c, mulberry32(100 + s));
      assert.equal(got, sampleBySort(row, sorted, c.temperature, c.topK, c.topP, u), JSON.stringify(c));
    }
  }
});

test('sampling follows the distribution, and the same seed gives the same sequence', () => {
  const row = Float32Array.from([0, Math.log(3), -Infinity, Math.log(6)]);
  const counts = [0, 0, 0, 0];
  const rng = mulberry32(9);
  for (let i = 0; i < 20000; i++) counts[sampleToken(row, { temperature: 1 }, rng)]!++;
  assert.equal(counts[2], 0);
  assert.ok(Math.abs(counts[0]! / 20000 - 0.1) < 0.01 && Math.abs(counts[3]! / 20000 - 0.6) < 0.015, String(counts));
  const big = randomRow(1000, 3);
  const draw = (seed: number): number[] => {
    const r = mulberry32(seed);
    return Array.from({ length: 50 }, () => sampleToken(big, { temperature: 1, topP: 0.95 }, r));
  };
  assert.deepEqual(draw(42), draw(42));
  assert.notDeepEqual(draw(42), draw(43));
  const mask = new Uint8Array(4);
  assert.equal(sampleToken(row, { temperature: 1 }, rng, mask), -1);
  mask[1] = 1;
  assert.equal(sampleToken(row, { temperature: 1, topK: 2 }, rng, mask), 1);
});

test('logprobs are the log-softmax at temperature 1, with the top alternatives', () => {
  const row = randomRow(300, 4);
  const ls = logSoftmax(row);
  const total = Array.from(ls).reduce((a, v) => a + Math.exp(v), 0);
  assert.ok(Math.abs(total - 1) < 1e-9);
  const lp = tokenLogprob(row, 17, 5, (id) => `t${id}`);
  assert.equal(lp.token, 't17');
  assert.ok(Math.abs(lp.logprob - ls[17]!) < 1e-12);
  const order = Array.from(ls.keys()).sort((a, b) => ls[b]! - ls[a]!);
  assert.deepEqual(lp.top?.map((t) => t.id), order.slice(0, 5));
  for (const t of lp.top ?? []) assert.ok(Math.abs(t.logprob - ls[t.id]!) < 1e-12);
  assert.equal(tokenLogprob(row, 3, 0, String).top, undefined);
});
