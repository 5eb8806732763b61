/**
 * A node that vanishes mid-run loses nothing: two headless Chromium nodes take
 * a burst of tasks, one node's renderer is crashed while it holds leases, and
 * every task still ends once, succeeded, the lost ones on the other node.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createCoordinator, type Coordinator } from '../server';
import type { TaskRecord } from '../shared';
import { waitTask as waitEnded } from './tasks';
import { launchNodes, type LaunchedNodes } from '../scripts/nodes';
import { DIST, ensurePageBuilt } from '../scripts/page-build';
import { registerSampleAgents } from '../scripts/register-agents';

const TASKS = 3000;

let dir = '';
let coordinator: Coordinator | null = null;
let doomed: LaunchedNodes | null = null;
let survivor: LaunchedNodes | null = null;
let url = '';

interface NodeView {
  id: string;
  connected: boolean;
  held: number;
}

before(async () => {
  await ensurePageBuilt();
  dir = mkdtempSync(join(tmpdir(), 'e2e-failover-'));
  // Short heartbeats so a lost node's leases come back within the test's bounds.
  coordinator = await createCoordinator({ dbPath: join(dir, 'coordinator.db'), port: 0, staticDir: DIST, heartbeatIntervalMs: 1000 });
  url = coordinator.url.replace(/\/$/, '');
  await registerSampleAgents(url);
  const log = (l: string): void => void process.stderr.write(`${l}\n`);
  doomed = await launchNodes({ url, count: 1, userDataRoot: dir, log });
  survivor = await launchNodes({ url, count: 1, userDataRoot: dir, log });
});

after(async () => {
  await doomed?.close();
  await survivor?.close();
  await coordinator?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function nodesView(): Promise<NodeView[]> {
  return ((await (await fetch(`${url}/v1/nodes?all=1`)).json()) as { nodes: NodeView[] }).nodes;
}

const waitTask = (id: string): Promise<TaskRecord> => waitEnded(url, id);

test('a node crashed while holding leases: its tasks run on the other node, none lost, none twice', async () => {
  const doomedId = doomed!.nodeIds[0]!;
  const survivorId = survivor!.nodeIds[0]!;
  const specs = Array.from({ length: TASKS }, (_, i) => ({
    kind: 'agent',
    payload: { agent: 'text-stats', input: { text: `task ${i}: ${'lorem ipsum dolor sit amet '.repeat(20)}` } },
    maxAttempts: 3,
    idempotencyKey: `failover-${i}`,
  }));
  const ids: string[] = [];
  const submit = async (batch: unknown[]): Promise<void> => {
    const res = await fetch(`${url}/v1/tasks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ tasks: batch }),
    });
    assert.equal(res.status, 202);
    ids.push(...((await res.json()) as { ids: string[] }).ids);
  };

  const page = doomed!.pages[0]!;
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Debugger.enable');
  // Freeze the doomed node's page first (its timers run often, so the pause lands at once): from
  // then on it takes leases but sends no result. The first batch goes out to both nodes; crash the
  // frozen one while it holds its share.
  const paused = new Promise<void>((resolve) => cdp.once('Debugger.paused', () => resolve()));
  await cdp.send('Debugger.pause');
  await paused;
  await submit(specs.slice(0, 500));
  let held = 0;
  for (let i = 0; i < 2000 && held === 0; i++) {
    held = (await nodesView()).find((n) => n.id === doomedId)?.held ?? 0;
    if (held === 0) await new Promise((r) => setTimeout(r, 1));
  }
  assert.ok(held > 0, 'the doomed node holds leases when it dies');
  const crashed = new Promise<void>((resolve) => page.once('crash', () => resolve()));
  // The call never answers: the renderer it talks to is gone. Wait for the page's crash event instead.
  void cdp.send('Page.crash').catch(() => undefined);
  await crashed;
  for (let i = 500; i < TASKS; i += 500) await submit(specs.slice(i, i + 500));

  const records: TaskRecord[] = [];
  for (let i = 0; i < ids.length; i += 50) records.push(...(await Promise.all(ids.slice(i, i + 50).map(waitTask))));

  const notOk = records.filter((r) => r.state !== 'succeeded');
  assert.deepEqual(notOk.map((r) => `${r.id} ${r.state} ${r.error?.code}`), [], 'every task succeeded');
  const retried = records.filter((r) => r.attempts > 1);
  assert.ok(retried.length >= held, `the ${held} tasks the crashed node held were run again (${retried.length} retried)`);
  for (const r of retried) assert.equal(r.nodeId, survivorId, 'a retried task ended on the surviving node');

  const view = await nodesView();
  assert.equal(view.find((n) => n.id === doomedId)?.connected ?? false, false, 'the crashed node is gone from the pool');
  assert.equal(view.find((n) => n.id === survivorId)?.connected, true);
});
