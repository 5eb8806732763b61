/** ModuleCache's bounds: least recently used modules go, with every compiled variant, and are named to the owner. */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_AGENT_LIMITS } from '../../shared';
import { ModuleCache, moduleKey, sha256Hex, type ModuleCacheOptions } from './module-cache';
import { buildWatAgents, versioned } from './testing/wat-agents';

const { echo } = await buildWatAgents();
const MB = DEFAULT_AGENT_LIMITS.memoryMB;
const versions = await Promise.all(
  Array.from({ length: 8 }, async (_, i) => {
    const bytes = versioned(echo, i);
    return { bytes, hash: await sha256Hex(bytes) };
  }),
);
const v = (i: number) => versions[i].hash;

function cacheWith(options: ModuleCacheOptions) {
  const evicted: { hash: string; keys: string[] }[] = [];
  const cache = new ModuleCache({ ...options, onEvict: (hash, keys) => evicted.push({ hash, keys }) });
  const add = (i: number) => cache.add(v(i), versions[i].bytes);
  return { cache, evicted, add };
}

const isMissing = (e: { code?: string }) => e.code === 'AGENT_MODULE_MISSING';

test('the least recently used module goes first; a peek or an add refreshes it', async () => {
  const { cache, evicted, add } = cacheWith({ maxModules: 3 });
  for (const i of [0, 1, 2]) await add(i);
  assert.ok(cache.peek(v(0), MB), 'v0 is used: now the newest');
  await add(3);
  assert.deepEqual(evicted, [{ hash: v(1), keys: [moduleKey(v(1), MB)] }]);
  assert.deepEqual([0, 1, 2, 3].map((i) => cache.has(v(i))), [true, false, true, true]);
  assert.equal(cache.peek(v(1), MB), undefined);
  await assert.rejects(cache.get(v(1), MB), isMissing);

  await add(2); // already held: only refreshed
  await add(1); // back, so the oldest (v0) goes
  assert.deepEqual(evicted.slice(1).map((e) => e.hash), [v(0)]);
  assert.deepEqual([0, 1, 2, 3].map((i) => cache.has(v(i))), [false, true, true, true]);
  assert.deepEqual({ compiled: cache.compiledCount, evictions: cache.evictions }, { compiled: 3, evictions: 2 });
});

test('a module goes with all its compiled variants; compiling a variant counts as a use', async () => {
  const { cache, evicted, add } = cacheWith({ maxModules: 2 });
  await add(0);
  await add(1);
  await cache.get(v(0), 2); // a second variant of v0: v0 is the newest now
  assert.equal(cache.compiledCount, 3);
  await add(2);
  assert.deepEqual(evicted, [{ hash: v(1), keys: [moduleKey(v(1), MB)] }]);
  await add(3);
  assert.deepEqual(evicted[1], { hash: v(0), keys: [moduleKey(v(0), MB), moduleKey(v(0), 2)] });
  assert.equal(cache.compiledCount, 2);
});

test('the byte bound holds; the newest module stays even when it alone is larger', async () => {
  const probe = cacheWith({});
  await probe.add(0);
  const one = probe.cache.bytes;
  assert.ok(one > 2 * echo.length && one < 3 * echo.length, 'instrumented bytes plus one compiled variant');

  const { cache, evicted, add } = cacheWith({ maxBytes: Math.floor(2.25 * one) });
  for (let i = 0; i < 6; i++) {
    await add(i);
    assert.ok(cache.bytes <= 2.25 * one, `after ${i}: ${cache.bytes} bytes`);
  }
  assert.deepEqual([0, 1, 2, 3, 4, 5].map((i) => cache.has(v(i))), [false, false, false, false, true, true]);
  assert.equal(cache.evictions, 4);
  // A variant adds its bytes (about half a module here): over the bound, so the other module goes.
  await cache.get(v(5), 2);
  assert.deepEqual(evicted.at(-1)?.hash, v(4));
  assert.ok(cache.has(v(5)) && cache.bytes <= 2.25 * one);

  const tiny = cacheWith({ maxBytes: 1 });
  await tiny.add(0);
  await tiny.add(1);
  assert.deepEqual([tiny.cache.has(v(0)), tiny.cache.has(v(1))], [false, true]);
  assert.equal(await tiny.cache.get(v(1), MB).then((p) => p.key), moduleKey(v(1), MB));
});

test('a variant compiling while its module is evicted is refused or reported, never kept unseen', async () => {
  const { cache, evicted, add } = cacheWith({ maxModules: 1 });
  await add(0);
  const variant = cache.get(v(0), 2).then(
    (p) => p.key,
    (e: { code?: string }) => e.code,
  );
  await add(1);
  const got = await variant;
  assert.equal(cache.has(v(0)), false);
  assert.equal(cache.compiledCount, 1);
  const reported = evicted.flatMap((e) => e.keys);
  // Either it compiled before v0 went (and the owner was told to drop it), or it was refused.
  assert.ok(got === 'AGENT_MODULE_MISSING' || reported.includes(got ?? ''), `${got} / ${reported.join(',')}`);
});
