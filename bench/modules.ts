/**
 * Module start figures (issue 8 item 5): a ~64 MiB WASI module published to a real coordinator, its prepared form
 * compiled in headless Chromium with compileStreaming(fetch(prepared URL)) and run once (instrumented, host memory),
 * as the node does. Cold: a fresh user-data-dir. Warm: a new browser on the same user-data-dir, after the cold page
 * stayed open long enough for V8 to write its code cache. Also the coordinator's one-off instrumentation cost.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { PREPARED_FORMAT, prepareForHost } from '../shared';
import { createCoordinator } from '../server';
import { largeAgentModule } from '../worker/agents/testing/large-module';
import { DIST, ensurePageBuilt } from '../scripts/page-build';

const FLAGS = ['--headless=new', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

/** Runs in the page (a string, so the bundler's helpers do not leak into it). */
const PAGE_START = `async (u) => {
  const t0 = performance.now();
  const res = await fetch(u);
  const [i, m, s] = (res.headers.get('x-memory') || '1,,0').split(',');
  const module = await WebAssembly.compileStreaming(res);
  const t1 = performance.now();
  const memory = new WebAssembly.Memory({ initial: Number(i), maximum: m === '' ? 1024 : Number(m), shared: s === '1' });
  const inst = await WebAssembly.instantiate(module, { wasi_snapshot_preview1: { fd_write: () => 0 }, agent_host: { memory } });
  const t2 = performance.now();
  if (inst.exports.__fuel) inst.exports.__fuel.value = 1n << 40n;
  inst.exports._start();
  return { compileMs: t1 - t0, instantiateMs: t2 - t1, runMs: performance.now() - t2 };
}`;

/** Only the bytes, from the HTTP cache on a warm profile: the floor under any warm start that needs them. */
const PAGE_FETCH = `async (u) => {
  const t0 = performance.now();
  await (await fetch(u)).arrayBuffer();
  return performance.now() - t0;
}`;

interface PageStart {
  compileMs: number;
  instantiateMs: number;
  runMs: number;
}

export interface ModuleStartFigures {
  coldStart64MiBModuleMs: number;
  warmStart64MiBModuleMs: number;
  warmOverCold: number;
  instrument64MiBMs: number;
  moduleBytes: number;
  /** Where each start went: fetch + compileStreaming, instantiate, the first run of _start (its hot loop). */
  cold: PageStart;
  warm: PageStart;
  /** Reading the bytes alone from the warm profile's HTTP cache (V8's code cache needs them too). */
  warmFetchOnlyMs: number;
}

/** One page load: `script` run in a page of the coordinator's origin, the page kept open `stayMs` after. */
async function inPage<T>(userDataDir: string, url: string, script: string, stayMs: number): Promise<T> {
  const ctx = await chromium.launchPersistentContext(userDataDir, { executablePath: '/usr/bin/chromium', headless: true, args: FLAGS });
  try {
    const page = ctx.pages()[0] ?? (await ctx.newPage());
    await page.goto(`${new URL(url).origin}/ops.html`); // any page of the coordinator's origin whose CSP lets it fetch
    const out = (await page.evaluate(`(${script})(${JSON.stringify(url)})`)) as T;
    if (stayMs > 0) await page.waitForTimeout(stayMs); // V8 writes its code cache ~2 s after the last tier-up
    return out;
  } finally {
    await ctx.close();
  }
}

export async function moduleStarts(log: (l: string) => void = () => undefined): Promise<ModuleStartFigures> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-modules-'));
  await ensurePageBuilt(log);
  const coordinator = await createCoordinator({ dbPath: join(dir, 'c.db'), port: 0, staticDir: DIST });
  try {
    const url = coordinator.url.replace(/\/$/, '');
    const bytes = largeAgentModule(64 << 20, 7, 5_000_000);
    const t = performance.now();
    prepareForHost(bytes);
    const instrument64MiBMs = performance.now() - t;
    const put = await fetch(`${url}/v1/agents/large/versions/1`, { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: bytes as Uint8Array<ArrayBuffer> });
    const { sha256 } = (await put.json()) as { sha256: string };
    const prepared = `${url}/v1/modules/${sha256}?prepared=${PREPARED_FORMAT}`;
    await (await fetch(prepared)).arrayBuffer(); // the coordinator prepares once, before the clock
    const profile = join(dir, 'profile');
    const cold = await inPage<PageStart>(profile, prepared, PAGE_START, 5000);
    const warm = await inPage<PageStart>(profile, prepared, PAGE_START, 0);
    const warmFetchOnlyMs = await inPage<number>(profile, prepared, PAGE_FETCH, 0);
    const total = (p: PageStart): number => p.compileMs + p.instantiateMs + p.runMs;
    log(`modules: cold ${total(cold).toFixed(0)} ms, warm ${total(warm).toFixed(0)} ms (bytes alone ${warmFetchOnlyMs.toFixed(0)} ms), instrumentation ${instrument64MiBMs.toFixed(0)} ms`);
    return {
      coldStart64MiBModuleMs: total(cold),
      warmStart64MiBModuleMs: total(warm),
      warmOverCold: total(warm) / total(cold),
      instrument64MiBMs,
      moduleBytes: bytes.byteLength,
      cold,
      warm,
      warmFetchOnlyMs,
    };
  } finally {
    await coordinator.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
