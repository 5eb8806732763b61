/**
 * The node page's inference cards, for real: the built page in one headless node (transformers.js
 * on the WASM EP, weights in IndexedDB) against a coordinator serving a tiny model. After one
 * generate task the page shows the model as cached and verified, as loaded with its backend and
 * device, and the throughput chart has drawn the tokens. A screenshot goes to a temp dir
 * (INFERENCE_PAGE_SHOT=path keeps it) for a person to look at.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createCoordinator, type Coordinator } from '../server';
import type { GenerateResult, TaskRecord } from '../shared';
import { launchNodes, type LaunchedNodes } from '../scripts/nodes';
import { DIST, ensurePageBuilt } from '../scripts/page-build';
import { makeTinyModel } from '../tools/tiny-model';

let dir = '';
let coordinator: Coordinator;
let nodes: LaunchedNodes;
let url = '';

before(async () => {
  await ensurePageBuilt();
  dir = mkdtempSync(join(tmpdir(), 'e2e-inference-page-'));
  const modelsDir = join(dir, 'models');
  await makeTinyModel({ seed: 1, dir: join(modelsDir, 'tiny-llama') });
  coordinator = await createCoordinator({ dbPath: join(dir, 'coordinator.db'), port: 0, staticDir: DIST, modelsDir });
  url = coordinator.url.replace(/\/$/, '');
  nodes = await launchNodes({ url, count: 1, userDataRoot: dir, query: { backends: 'wasm', workers: '1' }, log: (l) => process.stderr.write(`${l}\n`) });
});

after(async () => {
  await nodes?.close();
  await coordinator?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function generate(payload: Record<string, unknown>): Promise<GenerateResult> {
  const res = await fetch(`${url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'generate', payload }) });
  const { id } = (await res.json()) as { id: string };
  assert.equal(res.status, 202);
  const rec = (await (await fetch(`${url}/v1/tasks/${id}/wait?timeoutMs=30000`)).json()) as TaskRecord;
  assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
  return rec.result as GenerateResult;
}

/** Polls `read` until `ok` holds (bounded); answers the last value read. */
async function until<T>(read: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 15_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await read();
    if (ok(v) || Date.now() > end) return v;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The y coordinates of an SVG path made of M/L commands. */
function ys(d: string | null): number[] {
  return [...(d ?? '').matchAll(/[ML][\d.]+,([\d.]+)/g)].map((m) => Number(m[1]));
}

test('after a generate task the page shows the model cached, loaded on its backend, downloaded, and the tokens drawn', async () => {
  const page = nodes.pages[0]!;
  const app = page.locator('exec-node-app');
  await app.locator('generation-throughput').waitFor({ timeout: 10_000 });
  assert.equal(await app.locator('[data-testid="cached-none"]').count(), 1, 'nothing is stored before the first task');

  // The download bar shows while the weights arrive and lingers a few seconds after.
  const download = app.locator('model-downloads [data-testid="download"][data-model="tiny-llama"]');
  const sawDownload = download.waitFor({ timeout: 30_000 }).then(
    () => true,
    () => false,
  );
  const r = await generate({ model: 'tiny-llama', prompt: 'hello', maxNewTokens: 8 });
  assert.ok(r.tokens.length > 0);
  assert.equal(await sawDownload, true, 'a download bar for tiny-llama appeared');

  const cached = app.locator('cached-models tr[data-model="tiny-llama"]');
  await cached.locator('[data-testid="digest-state"]', { hasText: 'verified' }).waitFor({ timeout: 10_000 });
  assert.match((await cached.locator('td').nth(1).textContent()) ?? '', /\d+(\.\d)? (B|KiB|MiB)/);

  const loaded = app.locator('loaded-models tr[data-model="tiny-llama"]');
  await loaded.waitFor({ timeout: 10_000 });
  assert.equal((await loaded.locator('[data-testid="backend"]').textContent())?.trim(), 'transformers');
  assert.equal((await loaded.locator('[data-testid="device"]').textContent())?.trim(), 'wasm');
  assert.match((await app.locator('loaded-models [data-testid="gpu-memory"]').textContent()) ?? '', /of \d/);

  // The chart: a path with the token burst above the zero line around it.
  const path = app.locator('generation-throughput [data-testid="throughput-path"]');
  const d = await until(
    () => path.getAttribute('d').catch(() => null),
    (v) => new Set(ys(v)).size > 1,
  );
  const y = ys(d);
  assert.ok(y.length >= 2 && new Set(y).size > 1, `the chart drew the tokens (d=${d})`);
  const generated = await until(
    async () => (await app.locator('[data-testid="tokens-generated"]').textContent())?.trim(),
    (t) => t === `${r.tokens.length} tokens`,
  );
  assert.equal(generated, `${r.tokens.length} tokens`);
  assert.match((await app.locator('[data-testid="sequences"]').textContent()) ?? '', /0 active · 0 waiting · \d+ max/);

  const shot = process.env.INFERENCE_PAGE_SHOT ?? join(dir, 'inference-page.png');
  await page.screenshot({ path: shot, fullPage: true });
  process.stderr.write(`screenshot: ${shot}\n`);
});
