/**
 * Large agent modules (issue 8 item 5): a ~64 MiB module made with the project's wasm writer publishes over
 * real HTTP, is served back byte-identical as application/wasm and immutable, and runs (validated, fuel
 * instrumented, memory capped, compiled) in the runtime; one over LIMITS.maxWasmBytes is refused with
 * WASM_TOO_LARGE while it streams and the coordinator keeps serving. A module the engine refuses is a coded
 * error from the node's compile.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AppError, DEFAULT_AGENT_LIMITS, LIMITS, PREPARED_FORMAT, prepareForHost } from '../shared';
import { ModuleCache, compileCoded } from '../worker/agents/module-cache';
import { runAgentInThread } from '../worker/agents/run';
import { largeAgentModule } from '../worker/agents/testing/large-module';
import { runRequest } from '../worker/agents/testing/request';
import { createCoordinator, type Coordinator } from './index';
import { apiClient, tempDir } from './testing';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** PUTs `bytes` in 1 MiB chunks without a content-length; resolves with the answer and how much was sent before it. */
function putChunked(url: string, path: string, bytes: Uint8Array): Promise<{ status: number; body: string; sent: number }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    let sent = 0;
    let answered = false;
    const req = request({ host: u.hostname, port: u.port, method: 'PUT', path, headers: { 'content-type': 'application/wasm' } }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8'), sent });
        req.destroy();
      });
    });
    req.on('error', (err) => (answered ? undefined : reject(err)));
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    const pump = (): void => {
      while (!answered && sent < bytes.length) {
        const n = Math.min(1 << 20, bytes.length - sent);
        const ok = req.write(bytes.subarray(sent, sent + n));
        sent += n;
        if (!ok) {
          req.once('drain', pump);
          return;
        }
      }
      if (sent >= bytes.length) req.end();
    };
    pump();
  });
}

describe('modules up to 64 MiB', () => {
  const tmp = tempDir();
  let c: Coordinator;
  const big = largeAgentModule(LIMITS.maxWasmBytes - (64 << 10), 1);

  before(async () => {
    c = await createCoordinator({ dbPath: join(tmp.dir, 'c.db') });
  });
  after(async () => {
    await c.close();
    tmp.cleanup();
  });

  test('a ~64 MiB module publishes, is served back immutable, and runs with fuel and a memory cap', async () => {
    assert.ok(big.length > 60 << 20 && big.length <= LIMITS.maxWasmBytes, `${big.length} bytes`);
    const up = await apiClient(c.url)('/v1/agents/large/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: big as Uint8Array<ArrayBuffer> });
    assert.equal(up.status, 201, JSON.stringify(up.body).slice(0, 300));
    assert.equal(up.body.sha256, sha(big));
    assert.equal(up.body.size, big.length);

    const res = await fetch(`${c.url}${up.body.moduleUrl}`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/wasm');
    assert.equal(res.headers.get('cache-control'), 'public, max-age=31536000, immutable');
    assert.equal(res.headers.get('cross-origin-resource-policy'), 'cross-origin');
    const served = new Uint8Array(await res.arrayBuffer());
    assert.equal(sha(served), up.body.sha256);

    const cache = new ModuleCache();
    const info = await cache.add(up.body.sha256, served);
    assert.ok(info.functions > 10_000, `${info.functions} functions`);
    const prepared = await cache.get(up.body.sha256, DEFAULT_AGENT_LIMITS.memoryMB);
    const out = await runAgentInThread(prepared.module, runRequest('large'), { capPages: prepared.capPages, memory: prepared.memory });
    assert.ok(out.ok, JSON.stringify(out).slice(0, 300));
    assert.deepEqual(out.result.output, { large: info.functions - 1, seed: 1 });
    assert.ok(out.result.fuelUsed > 0, 'fuel was charged');

    // The prepared form: instrumented, memory as the host import, no cap written; immutable, digest stated.
    const t0 = performance.now();
    const pres = await fetch(`${c.url}/v1/modules/${up.body.sha256}?prepared=${PREPARED_FORMAT}`);
    const firstMs = performance.now() - t0;
    assert.equal(pres.status, 200);
    assert.equal(pres.headers.get('content-type'), 'application/wasm');
    assert.match(pres.headers.get('cache-control') ?? '', /immutable/);
    assert.equal(pres.headers.get('x-memory'), '1,,0');
    const prep = new Uint8Array(await pres.arrayBuffer());
    assert.equal(sha(prep), pres.headers.get('x-prepared-sha256'));
    assert.deepEqual(prep, prepareForHost(served)?.bytes);
    const again = performance.now();
    assert.equal((await fetch(`${c.url}/v1/modules/${up.body.sha256}?prepared=${PREPARED_FORMAT}`)).headers.get('x-prepared-sha256'), sha(prep));
    process.stderr.write(`prepared form: first ask ${firstMs.toFixed(0)} ms (instrumented then), memoized ${(performance.now() - again).toFixed(0)} ms\n`);
    assert.equal((await apiClient(c.url)(`/v1/modules/${up.body.sha256}?prepared=99`)).body.error.code, 'NOT_FOUND');
    // One compiled module serves every cap: the cap is the host memory's maximum.
    const pc = new ModuleCache();
    pc.addCompiled(up.body.sha256, await WebAssembly.compile(prep), { initialPages: 1, maximumPages: null, shared: false }, prep.byteLength);
    const p16 = await pc.get(up.body.sha256, 16);
    const p64 = await pc.get(up.body.sha256, 64);
    assert.equal(p16.module, p64.module);
    assert.equal(p16.memory?.maximumPages, 256);
    assert.equal(p64.memory?.maximumPages, 1024);
    const out2 = await runAgentInThread(p16.module, runRequest('large', {}, { memoryMB: 16 }), { capPages: p16.capPages, memory: p16.memory });
    assert.ok(out2.ok, JSON.stringify(out2).slice(0, 300));
    assert.deepEqual(out2.result.output, { large: info.functions - 1, seed: 1 });
  });

  test('a module over 64 MiB is refused with WASM_TOO_LARGE while it streams; the coordinator keeps serving', async () => {
    const over = largeAgentModule(LIMITS.maxWasmBytes + (4 << 20), 2);
    assert.ok(over.length > LIMITS.maxWasmBytes);
    const a = await putChunked(c.url, '/v1/agents/huge/versions/1', over);
    assert.equal(a.status, 413, a.body.slice(0, 300));
    assert.equal(JSON.parse(a.body).error.code, 'WASM_TOO_LARGE');
    assert.equal((await apiClient(c.url)('/v1/agents/huge')).body.error.code, 'AGENT_NOT_FOUND');
    assert.equal((await apiClient(c.url)('/healthz')).status, 200);
  });

  test('the node compile answers with codes: an engine-invalid module is WASM_INVALID, not an uncoded error', async () => {
    const bad = largeAgentModule(1 << 16, 3).slice();
    // i32.add → i64.add in the first body: well-formed for our decoder, a type error for the engine
    // (validateAgentModule({ engine: false }) does not look; the compile does).
    const cache = new ModuleCache();
    const pattern = [0x0b, 0x0b, 0x41, 0x03, 0x41, 0x03, 0x6a];
    const at = bad.findIndex((_, i) => pattern.every((b, j) => bad[i + j] === b)) + pattern.length - 1;
    assert.ok(at > 0);
    bad[at] = 0x7c;
    await assert.rejects(
      () => compileCoded(bad),
      (e: unknown) => e instanceof AppError && e.code === 'WASM_INVALID',
    );
    await assert.rejects(
      () => cache.add(sha(bad), bad),
      (e: unknown) => e instanceof AppError && (e.code === 'WASM_INVALID' || e.code === 'WASM_COMPILE_OUT_OF_MEMORY' ? true : (assert.fail(`${e.code}: ${e.message}`), false)),
    );
    // The cache keeps working after the refusal.
    const ok = largeAgentModule(1 << 16, 4);
    const info = await cache.add(sha(ok), ok);
    assert.ok(info.functions > 1);
  });
});
