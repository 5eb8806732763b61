/**
 * The IndexedDB weight store (worker/weights) in headless Chromium against a real coordinator
 * serving model folders, counting the requests that reach the coordinator: a second load sends no
 * weight request (same page, after a reload, offline, coordinator unreachable); a chunk damaged in
 * IndexedDB is fetched again; an aborted download resumes with only the rest; a small budget evicts
 * the least recently used model and refuses one too large; a file served with other bytes than its
 * manifest is fetched once more and then fails MODEL_CORRUPT.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, utimes, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { after, before, it } from 'node:test';
import { mulberry32 } from '../../worker/model';
import { makeTinyModel } from '../../tools/tiny-model';
import { callPage, openWeightsPage, type WeightsPage } from './harness';

const KIB = 1024;
const CHUNK = 64 * KIB;

let wp: WeightsPage;

function bytesOf(seed: number, n: number): Uint8Array {
  const rng = mulberry32(seed);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = rng.int(256);
  return out;
}

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A synthetic model folder: a config and one weights file of `size` bytes. */
async function writeModel(name: string, size: number, seed: number): Promise<{ weights: Uint8Array; total: number }> {
  const config = new TextEncoder().encode(JSON.stringify({ name, size }));
  const weights = bytesOf(seed, size);
  for (const [path, bytes] of [['config.json', config], ['weights.bin', weights]] as const) {
    const full = join(wp.modelsDir, name, path);
    await mkdir(dirname(full), { recursive: true });
    await writeFile(full, bytes);
  }
  return { weights, total: config.length + size };
}

async function clearStore(): Promise<void> {
  for (const m of await callPage(wp.page, 'list')) await callPage(wp.page, 'delete', m.name);
}

before(async () => {
  wp = await openWeightsPage();
});

after(async () => {
  await wp?.close();
});

it('first ensure fetches every chunk and verifies; later ensures send no weight request (same page, after reload, offline, coordinator unreachable)', async () => {
  await makeTinyModel({ seed: 1, dir: join(wp.modelsDir, 'tiny') });
  const manifest = (await (await fetch(`${wp.coordinator.url}/v1/models/tiny/manifest`)).json()) as { files: { path: string; size: number }[]; totalBytes: number };
  const chunks = manifest.files.reduce((n, f) => n + Math.max(1, Math.ceil(f.size / CHUNK)), 0);
  const store = { chunkBytes: CHUNK };

  let h0 = wp.hits.length;
  const first = await callPage(wp.page, 'ensure', 'tiny', { store });
  assert.ok(first.ok, JSON.stringify(first));
  assert.equal(first.value.requests, chunks);
  assert.equal(first.value.downloadedBytes, manifest.totalBytes);
  assert.equal(wp.weightHits(h0).length, chunks, 'one request per chunk reached the coordinator');
  assert.ok(wp.weightHits(h0).some((h) => h.range !== null), 'large files are fetched by Range');
  assert.equal(wp.weightHits(h0).reduce((n, h) => n + h.bytes, 0), manifest.totalBytes);
  const last = first.value.progress.at(-1)!;
  assert.deepEqual([last.loadedBytes, last.totalBytes], [manifest.totalBytes, manifest.totalBytes]);
  const [listed] = await callPage(wp.page, 'list');
  assert.deepEqual([listed!.name, listed!.bytes, listed!.complete, listed!.verified, listed!.files], ['tiny', manifest.totalBytes, true, true, manifest.files.length]);

  for (const when of ['same page', 'after reload'] as const) {
    if (when === 'after reload') await wp.reload();
    h0 = wp.hits.length;
    const again = await callPage(wp.page, 'ensure', 'tiny', { store });
    assert.ok(again.ok, JSON.stringify(again));
    assert.deepEqual([again.value.requests, again.value.downloadedBytes, again.value.manifestSource], [0, 0, 'coordinator'], when);
    assert.equal(wp.weightHits(h0).length, 0, `${when}: no weight request`);
    assert.equal(wp.hits.length - h0, 1, `${when}: the manifest only`);
    assert.equal(again.value.progress[0]!.loadedBytes, manifest.totalBytes, 'stored bytes count as loaded');
  }

  h0 = wp.hits.length;
  const offline = await callPage(wp.page, 'ensure', 'tiny', { offline: true });
  assert.ok(offline.ok && offline.value.manifestSource === 'stored');
  const unreachable = await callPage(wp.page, 'ensure', 'tiny', { store: { base: 'http://127.0.0.1:9' } });
  assert.ok(unreachable.ok && unreachable.value.manifestSource === 'stored', JSON.stringify(unreachable));
  assert.equal(wp.hits.length - h0, 0, 'offline paths send nothing');

  // Both backends read from the store: the engine's folder loader and transformers.js through env.customCache.
  const folder = await callPage(wp.page, 'loadFolder', 'tiny');
  assert.ok(folder.ok, JSON.stringify(folder));
  assert.ok(folder.value.layers > 0 && folder.value.vocab > 0);
  const tf = await callPage(wp.page, 'transformers', 'tiny', 'hello robot');
  assert.ok(tf.ok, JSON.stringify(tf));
  assert.equal(tf.value.modelType, 'llama');
  assert.ok(tf.value.ids.length > 0);
  assert.equal(wp.hits.length - h0, 0, 'loadModelFolder and transformers.js sent no request');

  const stats = await callPage(wp.page, 'stats');
  assert.equal(typeof stats.persisted, 'boolean', 'persist() was asked');
  assert.ok(stats.quotaBytes! > 0 && stats.budgetBytes! > 0);

  const missing = await callPage(wp.page, 'ensure', 'no-such-model');
  assert.deepEqual(missing.ok ? null : missing.code, 'MODEL_NOT_FOUND');
  const notStored = await callPage(wp.page, 'readFile', 'tiny', 'nope.bin');
  assert.deepEqual(notStored.ok ? null : notStored.code, 'MODEL_FILE_MISSING');
});

it('customCache stores what transformers.js puts and answers it back', async () => {
  const r = await callPage(wp.page, 'cacheRoundTrip', '/models/put-only/extra.json', '{"a":1}');
  assert.ok(r.ok, JSON.stringify(r));
  assert.equal(r.value.matched, '{"a":1}');
  assert.equal(r.value.listed?.bytes, 7);
  assert.equal(r.value.listed?.verified, false, 'no manifest to check it against');
});

it('a chunk corrupted in IndexedDB is detected on read and fetched again (that range only)', async () => {
  const { weights } = await writeModel('syn-c', 200 * KIB, 11);
  const ok = await callPage(wp.page, 'ensure', 'syn-c', { store: { chunkBytes: CHUNK } });
  assert.ok(ok.ok, JSON.stringify(ok));
  await callPage(wp.page, 'corruptChunk', 'syn-c', 'weights.bin', 1);
  const h0 = wp.hits.length;
  const read = await callPage(wp.page, 'readFile', 'syn-c', 'weights.bin');
  assert.ok(read.ok, JSON.stringify(read));
  assert.equal(read.value.sha256, sha(weights));
  assert.equal(read.value.stats.repairedFiles, 1);
  assert.deepEqual(wp.weightHits(h0).map((h) => h.range), [`bytes=${CHUNK}-${2 * CHUNK - 1}`]);
  const again = await callPage(wp.page, 'readFile', 'syn-c', 'weights.bin');
  assert.ok(again.ok && again.value.sha256 === sha(weights));
  assert.equal(wp.weightHits(h0).length, 1, 'the repaired chunk reads clean');
});

it('an aborted download keeps its chunks and the next ensure fetches only the rest', async () => {
  const size = 1024 * KIB;
  const { weights, total } = await writeModel('syn-r', size, 12);
  const store = { chunkBytes: CHUNK, concurrency: 1 };
  let h0 = wp.hits.length;
  const cut = await callPage(wp.page, 'ensure', 'syn-r', { store, abortAfterChunks: 6 }); // config.json + 5 weight chunks
  assert.deepEqual(cut.ok ? null : cut.code, 'CANCELLED');
  assert.equal(wp.weightHits(h0).length, 6);
  const partial = (await callPage(wp.page, 'list')).find((m) => m.name === 'syn-r')!;
  const kept = total - size + 5 * CHUNK;
  assert.deepEqual([partial.bytes, partial.complete, partial.verified], [kept, false, false]);
  const early = await callPage(wp.page, 'readFile', 'syn-r', 'weights.bin');
  assert.deepEqual(early.ok ? null : early.code, 'MODEL_FILE_MISSING');

  h0 = wp.hits.length;
  const rest = await callPage(wp.page, 'ensure', 'syn-r', { store });
  assert.ok(rest.ok, JSON.stringify(rest));
  assert.equal(rest.value.progress[0]!.loadedBytes, kept, 'stored chunks count as loaded');
  assert.equal(rest.value.downloadedBytes, total - kept);
  const hits = wp.weightHits(h0);
  assert.equal(hits.length, size / CHUNK - 5);
  assert.equal(hits.reduce((n, h) => n + h.bytes, 0), total - kept, 'only the remainder crossed the wire');
  assert.ok(hits.every((h) => Number(/bytes=(\d+)-/.exec(h.range ?? '')?.[1]) >= 5 * CHUNK), 'no stored range asked again');
  const read = await callPage(wp.page, 'readFile', 'syn-r', 'weights.bin');
  assert.ok(read.ok && read.value.sha256 === sha(weights));
});

it('a page closed mid-download keeps what it stored; the next page fetches only the rest', async () => {
  const size = 8 * 1024 * KIB;
  const { weights, total } = await writeModel('syn-p', size, 13);
  const store = { chunkBytes: CHUNK, concurrency: 1 };
  await callPage(wp.page, 'startEnsure', 'syn-p', { store });
  await wp.page.waitForFunction(() => (window.weightsLoaded ?? 0) > 4 * 64 * 1024, undefined, { polling: 10, timeout: 30_000 });
  await wp.reload();
  const kept = (await callPage(wp.page, 'list')).find((m) => m.name === 'syn-p')!.bytes;
  assert.ok(kept > 4 * CHUNK && kept < total, `kept ${kept} of ${total}`);
  const h0 = wp.hits.length;
  const rest = await callPage(wp.page, 'ensure', 'syn-p', { store });
  assert.ok(rest.ok, JSON.stringify(rest));
  assert.equal(rest.value.downloadedBytes, total - kept);
  assert.equal(wp.weightHits(h0).reduce((n, h) => n + h.bytes, 0), total - kept);
  const read = await callPage(wp.page, 'readFile', 'syn-p', 'weights.bin');
  assert.ok(read.ok && read.value.sha256 === sha(weights));
});

it('a small budget evicts the least recently used model, never one in use, and refuses a model larger than itself', async () => {
  await clearStore();
  for (const [i, n] of ['syn-a', 'syn-b', 'syn-d'].entries()) await writeModel(n, 300 * KIB, 20 + i);
  await writeModel('syn-huge', 800 * KIB, 30);
  const store = { chunkBytes: CHUNK, budgetBytes: 700 * KIB };
  const names = async (): Promise<string[]> => (await callPage(wp.page, 'list')).map((m) => m.name);
  assert.ok((await callPage(wp.page, 'ensure', 'syn-a', { store })).ok);
  assert.ok((await callPage(wp.page, 'ensure', 'syn-b', { store })).ok);
  assert.ok((await callPage(wp.page, 'readFile', 'syn-a', 'config.json')).ok, 'a read makes syn-a the most recently used');
  assert.ok((await callPage(wp.page, 'ensure', 'syn-d', { store })).ok);
  assert.deepEqual(await names(), ['syn-a', 'syn-d'], 'syn-b (least recently used) was evicted');

  const huge = await callPage(wp.page, 'ensure', 'syn-huge', { store });
  assert.deepEqual(huge.ok ? null : huge.code, 'STORAGE_QUOTA');
  assert.deepEqual(await names(), ['syn-a', 'syn-d'], 'nothing evicted for a model that cannot fit');

  await callPage(wp.page, 'hold', 'syn-a');
  await callPage(wp.page, 'hold', 'syn-d');
  const busy = await callPage(wp.page, 'ensure', 'syn-b', { store });
  assert.deepEqual(busy.ok ? null : busy.code, 'STORAGE_QUOTA');
  await callPage(wp.page, 'release', 'syn-a');
  const fits = await callPage(wp.page, 'ensure', 'syn-b', { store });
  await callPage(wp.page, 'release', 'syn-d');
  assert.ok(fits.ok, JSON.stringify(fits));
  assert.deepEqual(await names(), ['syn-d', 'syn-b'], 'the held model stayed; the released one went');
});

it('a file served with other bytes than its manifest says is fetched once more, then MODEL_CORRUPT', async () => {
  const { weights } = await writeModel('syn-bad', 150 * KIB, 40);
  const path = join(wp.modelsDir, 'syn-bad', 'weights.bin');
  const when = new Date('2024-01-01T00:00:00Z');
  await utimes(path, when, when);
  type Listed = { files: { path: string; sha256: string }[] };
  const served = (await (await fetch(`${wp.coordinator.url}/v1/models/syn-bad/manifest`)).json()) as Listed;
  assert.equal(served.files.find((f) => f.path === 'weights.bin')!.sha256, sha(weights));
  // Same size and mtime: the coordinator keeps its cached digest and serves the new bytes.
  await writeFile(path, bytesOf(41, weights.length));
  await utimes(path, when, when);
  const h0 = wp.hits.length;
  const bad = await callPage(wp.page, 'ensure', 'syn-bad', { store: { chunkBytes: CHUNK } });
  assert.deepEqual(bad.ok ? null : bad.code, 'MODEL_CORRUPT');
  const listed = (await (await fetch(`${wp.coordinator.url}/v1/models/syn-bad/manifest`)).json()) as Listed;
  assert.equal(listed.files.find((f) => f.path === 'weights.bin')!.sha256, sha(weights), 'the manifest still names the old digest');
  const weightFetches = wp.weightHits(h0).filter((h) => h.url.endsWith('/weights.bin'));
  assert.equal(weightFetches.length, 2 * Math.ceil(weights.length / CHUNK), 'every chunk fetched twice, no more');
  const stored = (await callPage(wp.page, 'list')).find((m) => m.name === 'syn-bad')!;
  assert.deepEqual([stored.complete, stored.bytes < weights.length], [false, true], 'the bad copy was not kept');
});

it('throughput into IndexedDB and back (figures)', async () => {
  await clearStore();
  const size = 32 * 1024 * KIB;
  const { weights, total } = await writeModel('syn-big', size, 50);
  const put = await callPage(wp.page, 'ensure', 'syn-big', { store: { chunkBytes: 4 * 1024 * KIB } });
  assert.ok(put.ok, JSON.stringify(put));
  assert.equal(put.value.downloadedBytes, total);
  const read = await callPage(wp.page, 'readFile', 'syn-big', 'weights.bin');
  assert.ok(read.ok && read.value.sha256 === sha(weights));
  const mb = size / 1e6;
  process.stderr.write(
    `weights: ensure ${mb.toFixed(1)} MB in ${put.ms.toFixed(0)} ms (${(mb / (put.ms / 1000)).toFixed(1)} MB/s: fetch, chunk digests, IndexedDB writes, file digest); ` +
      `readFile ${read.ms.toFixed(0)} ms (${(mb / (read.ms / 1000)).toFixed(1)} MB/s with chunk digests)\n`,
  );
  assert.deepEqual(wp.errors.filter((e) => !e.includes('Failed to load resource')), []);
});
