/**
 * Three coordinator processes on one PostgreSQL journal (a throwaway cluster), two headless Chromium nodes
 * joined to different coordinators, each page given all three (`?coordinator=a,b,c`). 5,000 tasks are
 * submitted over all of them; mid-run one coordinator, holding a node and its leases, is killed with SIGKILL.
 * Its node moves to the next coordinator keeping its leases; whatever it cannot finish is swept back to the
 * queue by the live ones. Every accepted task ends once, succeeded: none lost, none recorded twice, and an
 * idempotency key given to one coordinator answers the same task on another.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { launchNodes, type LaunchedNodes } from '../scripts/nodes';
import { DIST, ensurePageBuilt } from '../scripts/page-build';
import { registerSampleAgents } from '../scripts/register-agents';
import { freePort, startPostgres, type TestPostgres } from '../server/postgres-testing';
import { localTokens, spawnCoordinator } from '../server/testing';

const TASKS = 5000;
const BATCH = 250;

let dir = '';
let pgc: TestPostgres | null = null;
let db = '';
const children: ChildProcess[] = [];
const urls: string[] = [];
let admin = '';
let joinToken = '';
const nodes: LaunchedNodes[] = [];

/** A coordinator on `port`; a page served by any of the pool's coordinators (`ports`) may join it (--allow-origin). */
async function startCoordinator(port: number, ports: number[]): Promise<{ child: ChildProcess; url: string }> {
  const origins = ports.filter((p) => p !== port).flatMap((p) => ['--allow-origin', `http://127.0.0.1:${p}`]);
  const { child, url } = await spawnCoordinator(['--port', String(port), '--db', db, '--data-dir', dir, '--static', DIST, '--coordinator-dead-ms', '5000', ...origins]);
  children.push(child);
  return { child, url };
}

async function query<R>(sql: string): Promise<R[]> {
  const c = new pg.Client({ connectionString: db });
  await c.connect();
  try {
    return (await c.query(sql)).rows as R[];
  } finally {
    await c.end();
  }
}

before(async () => {
  await ensurePageBuilt();
  dir = mkdtempSync(join(tmpdir(), 'e2e-coordinators-'));
  pgc = await startPostgres();
  db = await pgc.database();
  // One after another: the first writes auth.json (an admin and a node join token), the others read it.
  const ports = [await freePort(), await freePort(), await freePort()];
  for (const port of ports) urls.push((await startCoordinator(port, ports)).url);
  ({ admin, join: joinToken } = localTokens(dir));
  await registerSampleAgents(urls[0]!, undefined, admin);
  const log = (l: string): void => void process.stderr.write(`${l}\n`);
  // Node 0 joins coordinator 0 (the one killed), node 1 coordinator 1; each knows all three.
  for (const i of [0, 1]) {
    const order = [urls[i]!, ...urls.filter((_, k) => k !== i)];
    nodes.push(await launchNodes({ url: urls[i]!, count: 1, userDataRoot: dir, token: joinToken, log, namePrefix: `pool-${i}`, query: { coordinator: order.join(','), inference: '0' } }));
  }
});

after(async () => {
  for (const n of nodes) await n.close();
  for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : null)));
  pgc?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function submit(url: string, from: number): Promise<{ status: number; ids: string[] }> {
  const specs = Array.from({ length: BATCH }, (_, k) => ({
    kind: 'agent',
    payload: { agent: 'text-stats', input: { text: `task ${from + k}: ${'lorem ipsum dolor sit amet '.repeat(8)}` } },
    maxAttempts: 5,
    idempotencyKey: `pool-${from + k}`,
  }));
  const res = await fetch(`${url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${admin}` }, body: JSON.stringify({ tasks: specs }) });
  const body = (await res.json()) as { ids?: string[] };
  return { status: res.status, ids: body.ids ?? [] };
}

test('three coordinators, one killed with SIGKILL mid-run: every accepted task ends once, none lost, none twice', { timeout: 600_000 }, async () => {
  const accepted = new Map<number, string[]>();
  // Freeze node 0's page (its timers run often, so the pause lands at once): from then on it takes leases from
  // coordinator 0 and sends no result, so that coordinator surely holds leases when it is killed.
  const page = nodes[0]!.pages[0]!;
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Debugger.enable');
  const paused = new Promise<void>((resolve) => cdp.once('Debugger.paused', () => resolve()));
  await cdp.send('Debugger.pause');
  await paused;
  // The first half over all three coordinators.
  for (let b = 0; b < TASKS / BATCH / 2; b++) {
    const { status, ids } = await submit(urls[b % 3]!, b * BATCH);
    assert.equal(status, 202);
    accepted.set(b, ids);
  }
  // Kill coordinator 0 once its (frozen) node holds leases.
  // Coordinator 0's id: the owner of the leases its node (node 0) holds.
  const node0 = nodes[0]!.nodeIds[0]!;
  let killedOwner = '';
  for (let i = 0; i < 600; i++) {
    const [row] = await query<{ owner: string | null; leased: string; done: string }>(
      `SELECT MIN(coordinator) FILTER (WHERE state = 'leased' AND node_id = '${node0}') AS owner,
         COUNT(*) FILTER (WHERE state = 'leased' AND node_id = '${node0}') AS leased, COUNT(*) FILTER (WHERE state = 'succeeded') AS done FROM tasks`,
    );
    killedOwner = row!.owner ?? '';
    if (Number(row!.leased) >= 10) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  const [atKill] = await query<{ leased: string }>(`SELECT COUNT(*) AS leased FROM tasks WHERE state = 'leased' AND coordinator = '${killedOwner}'`);
  children[0]!.kill('SIGKILL');
  await new Promise((r) => children[0]!.once('exit', r));
  assert.ok(Number(atKill!.leased) >= 10, 'the killed coordinator held leases');
  // Node 0 runs again: it finds its coordinator gone and moves to the next with what it holds.
  await cdp.send('Debugger.resume');

  // The second half on the two that live; the first half's keys, given again elsewhere, answer the same tasks.
  for (let b = TASKS / BATCH / 2; b < TASKS / BATCH; b++) {
    const { status, ids } = await submit(urls[1 + (b % 2)]!, b * BATCH);
    assert.equal(status, 202);
    accepted.set(b, ids);
  }
  const again = await submit(urls[2]!, 0);
  assert.equal(again.status, 200, 'a repeated batch is answered, not queued again');
  assert.deepEqual(again.ids, accepted.get(0));

  // Bounded: every task ends within the test's timeout.
  let counts: Record<string, number> = {};
  for (let i = 0; i < 2400; i++) {
    counts = Object.fromEntries((await query<{ state: string; n: string }>(`SELECT state, COUNT(*) AS n FROM tasks GROUP BY state`)).map((r) => [r.state, Number(r.n)]));
    if ((counts.succeeded ?? 0) + (counts.failed ?? 0) + (counts.dead ?? 0) + (counts.cancelled ?? 0) === TASKS) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.deepEqual(counts, { succeeded: TASKS }, 'every task succeeded, once');
  const ids = new Set([...accepted.values()].flat());
  assert.equal(ids.size, TASKS);
  const [check] = await query<{ n: string; results: string; ok: string }>(
    `SELECT COUNT(*) AS n, COUNT(result) AS results, COUNT(*) FILTER (WHERE result LIKE '%"exitCode":0%') AS ok FROM tasks`,
  );
  assert.equal(Number(check!.n), TASKS, 'no task recorded twice');
  assert.equal(Number(check!.results), TASKS);
  assert.equal(Number(check!.ok), TASKS);
  const [moved] = await query<{ adopted: string; swept: string }>(
    `SELECT COUNT(*) FILTER (WHERE type = 'lease_adopted') AS adopted, COUNT(*) FILTER (WHERE type = 'orphans_requeued') AS swept FROM events`,
  );
  // The killed coordinator's leases: those its node still held went on with it to another coordinator (adopted);
  // the rest (results it received but never journaled) were swept back to the queue and ran again.
  const [sweptTasks] = await query<{ n: string }>(`SELECT COALESCE(SUM(CAST(data::json->>'count' AS INTEGER)), 0) AS n FROM events WHERE type = 'orphans_requeued'`);
  assert.ok(Number(moved!.adopted) + Number(sweptTasks!.n) > 0, `adopted ${moved!.adopted}, swept ${sweptTasks!.n}`);
  const [joins] = await query<{ n: string }>(`SELECT COUNT(*) AS n FROM events WHERE type = 'node_connected' AND node_id = '${node0}'`);
  assert.equal(Number(joins!.n), 2, 'the node that lost its coordinator joined another, with the same id');
  process.stderr.write(`killed holding ${atKill!.leased} leases; ${moved!.adopted} adopted by another coordinator, ${sweptTasks!.n} swept back and run again\n`);
  // Both live coordinators saw the moved node, and the killed one is forgotten.
  // …once its dead time (5 s without a beat) has passed: bounded wait.
  let live: Array<{ id: string }> = [];
  for (let i = 0; i < 150; i++) {
    live = await query<{ id: string }>(`SELECT id FROM coordinators`);
    if (live.length === 2) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(live.length, 2);
  assert.ok(!live.some((c) => c.id === killedOwner));
});
