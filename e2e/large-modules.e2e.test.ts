/**
 * Blobs in mounts and large modules through the pool, for real: the built page in headless Chromium
 * nodes, a coordinator on a temp SQLite file (its access log read to count blob downloads), tasks over
 * the HTTP API.
 * - A SQLite database of ~330 KB of random binary rows (made here with better-sqlite3) and a CSV text file,
 *   uploaded with POST /v1/blobs and named in a read-only mount; SQLite (agents/dist/programs/sqlite.wasm)
 *   attaches the database and imports the CSV on the node and reports every row's length and first and
 *   last bytes, which must be the ones written here. A second task naming the same blobs on the same node
 *   does not download them again; a task naming a blob that does not exist is refused at submit (BLOB_NOT_FOUND).
 * - A corrupt answer for a blob (Playwright route fulfilling wrong bytes) fails the task with BLOB_CORRUPT
 *   (retryable: with its one attempt spent the task is dead) and leaves nothing in the node's blob cache
 *   (Cache Storage); with the route removed the same task succeeds.
 * - The compiled-code cache across page loads: a 12 MiB module (worker/agents/testing/large-module.ts, its
 *   first function hot enough for V8 to tier it up) runs on a node page with a fixed user-data-dir, which stays
 *   open until V8 has written its code cache there; a new browser on the same user-data-dir runs it again. The
 *   node's module load (web/node/modules.ts MODULE_LOAD_MEASURE: fetch, compileStreaming, digest check) must
 *   come from the HTTP cache without a digest, and Chromium's SiteIsolatedCodeCache.WASM.Behaviour histogram
 *   must show a miss in the first browser and a hit in the second. The load times are printed, not compared:
 *   at 12 MiB the cached code is one tiered-up function (~18 KB, V8 compiles lazily) and warm ÷ cold measured
 *   0.6–0.95 here, no margin a test on a shared 2-core machine can hold to.
 * Figures (load times cold and warm) go to stderr.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Database from 'better-sqlite3';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { createCoordinator } from '../server';
import type { AgentResult, TaskRecord } from '../shared';
import { PREPARED_FORMAT } from '../shared';
import { postTasks, waitTask } from './tasks';
import { CHROMIUM_ARGS, chromiumPath, launchNodes, waitConnected, type LaunchedNodes } from '../scripts/nodes';
import { DIST, ROOT, ensurePageBuilt } from '../scripts/page-build';
import { registerAgent } from '../scripts/register-agents';
import { largeAgentModule } from '../worker/agents/testing/large-module';
import { MODULE_LOAD_MEASURE } from '../web/node/modules';

let dir = '';
let coordinator: Awaited<ReturnType<typeof createCoordinator>> | null = null;
let nodes: LaunchedNodes | null = null;
let url = '';
/** GET /v1/blobs/:sha256 requests the coordinator saw (from its access log), by hex digest. */
const blobGets = new Map<string, number>();

const figure = (line: string): void => {
  process.stderr.write(`large-modules: ${line}\n`);
};

/** The coordinator's pino log lines: counts each incoming GET of a blob. */
const accessLog = {
  write(line: string): void {
    let entry: { msg?: string; req?: { method?: string; url?: string } };
    try {
      entry = JSON.parse(line) as typeof entry;
    } catch {
      return;
    }
    const m = entry.msg === 'incoming request' && entry.req?.method === 'GET' ? /^\/v1\/blobs\/(?:sha256:)?([0-9a-f]{64})/.exec(entry.req.url ?? '') : null;
    if (m) blobGets.set(m[1]!, (blobGets.get(m[1]!) ?? 0) + 1);
  },
};

before(async () => {
  await ensurePageBuilt();
  dir = mkdtempSync(join(tmpdir(), 'e2e-large-modules-'));
  coordinator = await createCoordinator({ dbPath: join(dir, 'coordinator.db'), port: 0, staticDir: DIST, logger: { level: 'info', stream: accessLog } });
  url = coordinator.url.replace(/\/$/, '');
  const r = await registerAgent(url, 'sqlite', readFileSync(join(ROOT, 'agents/dist/programs/sqlite.wasm')));
  assert.equal(r.code, null, `sqlite refused: ${r.status} ${r.code} ${r.message}`);
  nodes = await launchNodes({ url, count: 1, userDataRoot: dir, log: (l) => process.stderr.write(`${l}\n`) });
});

after(async () => {
  await nodes?.close();
  await coordinator?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

/** Deterministic bytes (xorshift32), so a failure reproduces. */
function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

const hexOf = (b: Uint8Array): string => Buffer.from(b).toString('hex').toUpperCase();

async function uploadBlob(bytes: Uint8Array): Promise<string> {
  const res = await fetch(`${url}/v1/blobs`, { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: bytes as Uint8Array<ArrayBuffer> });
  const body = (await res.json()) as { blob?: string; sha256?: string; bytes?: number };
  assert.equal(res.status, 201, `upload answered ${res.status}: ${JSON.stringify(body)}`);
  assert.equal(body.sha256, createHash('sha256').update(bytes).digest('hex'));
  assert.equal(body.bytes, bytes.byteLength);
  return body.blob!;
}

interface Summary {
  imports: { file: string; table: string; rows: number }[];
  results: { columns: string[]; rows: unknown[][] }[];
}

function summaryOf(rec: TaskRecord): Summary {
  assert.equal(rec.state, 'succeeded', `${rec.id}: ${rec.state} ${rec.error?.code} ${rec.error?.message} ${JSON.stringify(rec.error?.details ?? {}).slice(0, 600)}`);
  const result = rec.result as AgentResult;
  assert.equal(result.exitCode, 0);
  return JSON.parse(result.output as string) as Summary;
}

/** A SQLite task over `/data`: `files` (blob refs or inline text) and the script. */
function sqliteTask(files: Record<string, { blob: string } | { text: string }>, script: string): Record<string, unknown> {
  return {
    kind: 'agent',
    maxAttempts: 1,
    payload: {
      agent: 'sqlite',
      args: ['/data/run.sql'],
      stdout: 'text',
      mounts: { '/data': { files: { ...files, 'run.sql': { text: script } } } },
      limits: { memoryMB: 64, fuel: 5_000_000_000, timeoutMs: 30_000 },
    },
  };
}

const ROWS = 40;
const ROW_BYTES = 8000;
const WORDS = 'id,word\n1,alpha\n2,beta\n3,"gamma, delta"\n4,wörd\n';

test('a blob named in a read-only mount: the agent sees its exact bytes, a second task does not download it again, a missing one is refused at submit', { timeout: 45_000 }, async () => {
  const rows = Array.from({ length: ROWS }, (_, i) => randomBytes(ROW_BYTES, 1000 + i));
  const native = new Database(':memory:');
  native.exec('CREATE TABLE bin (id INTEGER PRIMARY KEY, b BLOB NOT NULL)');
  const ins = native.prepare('INSERT INTO bin (id, b) VALUES (?, ?)');
  rows.forEach((b, i) => ins.run(i + 1, Buffer.from(b)));
  const dbBytes = new Uint8Array(native.serialize());
  native.close();
  assert.ok(dbBytes.byteLength > 300_000, `the database is ${dbBytes.byteLength} bytes`);
  const dbBlob = await uploadBlob(dbBytes);
  const csvBlob = await uploadBlob(new TextEncoder().encode(WORDS));
  figure(`database blob ${dbBytes.byteLength} bytes, CSV blob ${Buffer.byteLength(WORDS)} bytes`);

  const script = [
    '.import /data/words.csv words',
    "ATTACH '/data/bin.db' AS bin;",
    'PRAGMA bin.integrity_check;',
    'SELECT count(*), sum(length(b)) FROM bin.bin;',
    'SELECT id, length(b), hex(substr(b, 1, 16)), hex(substr(b, -16, 16)) FROM bin.bin ORDER BY id;',
    'SELECT id, word FROM words ORDER BY id;',
    '',
  ].join('\n');
  const spec = sqliteTask({ 'bin.db': { blob: dbBlob }, 'words.csv': { blob: csvBlob } }, script);
  const expected = [
    { columns: ['integrity_check'], rows: [['ok']] },
    { columns: ['count(*)', 'sum(length(b))'], rows: [[ROWS, ROWS * ROW_BYTES]] },
    {
      columns: ['id', 'length(b)', 'hex(substr(b, 1, 16))', 'hex(substr(b, -16, 16))'],
      rows: rows.map((b, i) => [i + 1, ROW_BYTES, hexOf(b.subarray(0, 16)), hexOf(b.subarray(-16))]),
    },
    { columns: ['id', 'word'], rows: [[1, 'alpha'], [2, 'beta'], [3, 'gamma, delta'], [4, 'wörd']] },
  ];

  const dbHex = dbBlob.slice('sha256:'.length);
  const csvHex = csvBlob.slice('sha256:'.length);
  for (let round = 1; round <= 2; round++) {
    const [id] = await postTasks(url, [spec]);
    const rec = await waitTask(url, id!);
    const summary = summaryOf(rec);
    assert.deepEqual(summary.imports.map((i) => [i.table, i.rows]), [['words', 4]]);
    assert.deepEqual(summary.results.map((r) => ({ columns: r.columns, rows: r.rows })), expected, `round ${round}`);
    assert.equal(rec.nodeId, nodes!.nodeIds[0]);
    // Each blob was downloaded once, by the first task; the second one read the node's cache.
    assert.deepEqual([blobGets.get(dbHex), blobGets.get(csvHex)], [1, 1], `round ${round}: blob GETs at the coordinator`);
  }

  const missing = `sha256:${'ab'.repeat(32)}`;
  const res = await fetch(`${url}/v1/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ tasks: [sqliteTask({ 'bin.db': { blob: missing } }, 'SELECT 1;\n')] }),
  });
  const body = (await res.json()) as { error?: { code?: string; details?: unknown } };
  assert.equal(res.status, 404, JSON.stringify(body));
  assert.equal(body.error?.code, 'BLOB_NOT_FOUND');
  assert.match(JSON.stringify(body.error?.details), /bin\.db/);
  assert.equal(blobGets.get('ab'.repeat(32)), undefined, 'a refused task sends no node to fetch the blob');
});

/** The blob entries the page's Cache Storage holds (web/node/blobs.ts keeps them in `exec-node-blobs`). */
async function cachedBlobs(page: Page): Promise<string[]> {
  return page.evaluate(async () => {
    const cache = await caches.open('exec-node-blobs');
    return (await cache.keys()).map((r) => r.url).filter((u) => /\/v1\/blobs\/[0-9a-f]{64}$/.test(u));
  });
}

test('a corrupt blob answer fails the task with BLOB_CORRUPT and is not cached; without it the task succeeds', { timeout: 30_000 }, async () => {
  const page = nodes!.pages[0]!;
  const csv = 'n,sq\n' + Array.from({ length: 500 }, (_, i) => `${i},${i * i}`).join('\n') + '\n';
  const bytes = new TextEncoder().encode(csv);
  const blob = await uploadBlob(bytes);
  const hex = blob.slice('sha256:'.length);
  const spec = sqliteTask({ 'sq.csv': { blob } }, '.import /data/sq.csv sq\nSELECT count(*), sum(sq) FROM sq;\n');

  let intercepted = 0;
  const pattern = `**/v1/blobs/${hex}`;
  // Same length, one byte changed: only the digest tells.
  const wrong = Buffer.from(bytes);
  wrong[wrong.length - 2] ^= 1;
  await page.route(pattern, (route) => {
    intercepted++;
    return route.fulfill({ status: 200, contentType: 'application/octet-stream', body: wrong });
  });
  try {
    const rec = await waitTask(url, (await postTasks(url, [spec]))[0]!);
    // BLOB_CORRUPT is retryable: with its one attempt spent the task is dead-lettered.
    assert.equal(rec.state, 'dead', `${rec.state} ${JSON.stringify(rec.result)?.slice(0, 200)}`);
    assert.equal(rec.error?.code, 'BLOB_CORRUPT', `${rec.error?.code} ${rec.error?.message}`);
    assert.equal(intercepted, 1);
    assert.equal(blobGets.get(hex), undefined, 'the coordinator was not asked: the route answered');
    assert.deepEqual((await cachedBlobs(page)).filter((u) => u.endsWith(hex)), [], 'the corrupt bytes were not cached');
  } finally {
    await page.unroute(pattern);
  }

  const rec = await waitTask(url, (await postTasks(url, [spec]))[0]!);
  const summary = summaryOf(rec);
  assert.deepEqual(summary.results[0]!.rows, [[500, Array.from({ length: 500 }, (_, i) => i * i).reduce((a, b) => a + b, 0)]]);
  assert.equal(blobGets.get(hex), 1, 'fetched from the coordinator once the route was gone');
  assert.equal((await cachedBlobs(page)).filter((u) => u.endsWith(hex)).length, 1, 'the good bytes are cached');
});

/**
 * Bytes of the entries of the profile's wasm code cache (Chromium's `Default/Code Cache/wasm`). Only the code V8
 * tiered up is cached (lazy compilation): for the large module one entry of ~18 KB.
 */
function wasmCodeCacheBytes(profile: string): number {
  const root = join(profile, 'Default', 'Code Cache', 'wasm');
  if (!existsSync(root)) return 0;
  let total = 0;
  for (const f of readdirSync(root, { recursive: true, withFileTypes: true })) {
    if (f.isFile() && f.name !== 'index' && !f.name.startsWith('index')) total += statSync(join(f.parentPath, f.name)).size;
  }
  return total;
}

interface LoadMeasure {
  duration: number;
  detail: { hash: string; bytes: number; fromCache: boolean; digestSkipped: boolean };
}

/** One node page on `profile` runs the large module through the pool: its load measure, the task's time, the browser. */
async function runLargeOn(profile: string, name: string, spec: unknown, hash: string, output: unknown): Promise<{ ctx: BrowserContext; page: Page; load: LoadMeasure; taskMs: number }> {
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath(),
    headless: true,
    args: CHROMIUM_ARGS,
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    page.on('pageerror', (err) => process.stderr.write(`[${name}] page error: ${err.message}\n`));
    await page.goto(`${url}/?name=${name}`);
    await waitConnected(page);
    const t0 = performance.now();
    const rec = await waitTask(url, (await postTasks(url, [spec]))[0]!);
    const taskMs = performance.now() - t0;
    assert.equal(rec.state, 'succeeded', `${name}: ${rec.state} ${rec.error?.code} ${rec.error?.message}`);
    assert.deepEqual((rec.result as AgentResult).output, output);
    const loads = await page.evaluate(
      (m) => performance.getEntriesByName(m).map((e) => ({ duration: e.duration, detail: (e as PerformanceMeasure).detail as LoadMeasure['detail'] })),
      MODULE_LOAD_MEASURE,
    );
    const mine = loads.filter((l) => l.detail.hash === hash);
    assert.equal(mine.length, 1, `${name}: one prepared load of the module, got ${JSON.stringify(loads)}`);
    return { ctx, page, load: mine[0]!, taskMs };
  } catch (err) {
    await ctx.close();
    throw err;
  }
}

/** Polls (bounded) until `check` holds. */
async function until(what: string, timeoutMs: number, check: () => boolean | Promise<boolean>): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Samples per bucket of SiteIsolatedCodeCache.WASM.Behaviour as chrome://histograms shows them in a page of this
 * browser: Chromium's GeneratedCodeCache::CacheEntryStatus, 0 hit, 1 miss, 2 clear, 3 update, 4 create, 5 error.
 */
async function codeCacheBehaviour(ctx: BrowserContext): Promise<Record<number, number>> {
  const page = await ctx.newPage();
  try {
    await page.goto('chrome://histograms/SiteIsolatedCodeCache.WASM.Behaviour');
    const text = await page.locator('body').innerText();
    const out: Record<number, number> = {};
    for (const m of text.matchAll(/^\s*(\d+)\s+-*O\s+\((\d+) = /gm)) out[Number(m[1])] = Number(m[2]);
    return out;
  } finally {
    await page.close();
  }
}

const HIT = 0;
const MISS = 1;

test('the compiled code of a 12 MiB module is cached across page loads on the same user-data-dir', { timeout: 90_000 }, async () => {
  // The node of the other tests leaves: the large module's tasks must land on the pages of this test.
  await nodes?.close();
  nodes = null;
  const bytes = largeAgentModule(12 << 20, 11, 5_000_000);
  const json = Buffer.from(bytes);
  const output = JSON.parse(json.subarray(json.lastIndexOf('{"large":')).toString('utf8')) as { large: number; seed: number };
  assert.equal(output.seed, 11);
  const reg = await registerAgent(url, 'large', bytes);
  assert.equal(reg.code, null, `large refused: ${reg.status} ${reg.code} ${reg.message}`);
  const hash = createHash('sha256').update(bytes).digest('hex');
  // The coordinator prepares (instruments) once, before the clocks: that is not the node's load.
  const prepared = await fetch(`${url}/v1/modules/${hash}?prepared=${PREPARED_FORMAT}`);
  assert.equal(prepared.status, 200);
  await prepared.arrayBuffer();
  const spec = { kind: 'agent', maxAttempts: 1, payload: { agent: 'large', limits: { memoryMB: 16, fuel: 2_000_000_000, timeoutMs: 30_000 } } };

  const profile = join(dir, 'profile-large');
  let coldBehaviour: Record<number, number> = {};
  const cold = await runLargeOn(profile, 'large-cold', spec, hash, output);
  try {
    assert.equal(cold.load.detail.fromCache, false);
    assert.equal(cold.load.detail.digestSkipped, false);
    // V8 writes the code cache ~2 s after the last tier-up; wait (bounded) until its file is on disk.
    await until('V8 wrote its wasm code cache', 20_000, () => wasmCodeCacheBytes(profile) > 8192);
    coldBehaviour = await codeCacheBehaviour(cold.ctx);
  } finally {
    await cold.ctx.close();
  }
  const cacheBytes = wasmCodeCacheBytes(profile);

  const warm = await runLargeOn(profile, 'large-warm', spec, hash, output);
  try {
    const warmBehaviour = await codeCacheBehaviour(warm.ctx);
    figure(
      `module ${bytes.byteLength} bytes (${output.large} functions); node load (fetch + compileStreaming + digest): cold ${cold.load.duration.toFixed(0)} ms, ` +
        `warm ${warm.load.duration.toFixed(0)} ms (${(warm.load.duration / cold.load.duration).toFixed(2)}); task submit→record cold ${cold.taskMs.toFixed(0)} ms, ` +
        `warm ${warm.taskMs.toFixed(0)} ms; wasm code cache ${cacheBytes} bytes`,
    );
    figure(`SiteIsolatedCodeCache.WASM.Behaviour by bucket (0 hit, 1 miss, 4 create): cold browser ${JSON.stringify(coldBehaviour)}, warm browser ${JSON.stringify(warmBehaviour)}`);
    // The node page streams one wasm compile (this module): a miss on the fresh user-data-dir, a hit on the warm one.
    assert.ok((coldBehaviour[MISS] ?? 0) >= 1 && !coldBehaviour[HIT], `the cold browser missed the wasm code cache: ${JSON.stringify(coldBehaviour)}`);
    assert.ok((warmBehaviour[HIT] ?? 0) >= 1 && !warmBehaviour[MISS], `the warm browser hit the wasm code cache: ${JSON.stringify(warmBehaviour)}`);
    assert.equal(warm.load.detail.fromCache, true, 'the warm page read the module from the HTTP cache');
    assert.equal(warm.load.detail.digestSkipped, true, 'the warm page skipped the digest of an entry it checked before');
  } finally {
    await warm.ctx.close();
  }
});
