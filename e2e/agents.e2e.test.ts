/**
 * End to end, for real: the built page in two headless Chromium nodes, a
 * coordinator on a temp SQLite file, every catalogued agent (hostile ones
 * too), 500 tasks through the HTTP API. Each task must end with the expected
 * output or the expected error code, and the nodes must survive the hostile
 * ones.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { AGENTS, type AgentSpec } from '../agents';
import type { TaskRecord } from '../shared';
import { postTasks as submitAll, waitAll as awaitAll } from './tasks';
import type { LaunchedNodes } from '../scripts/nodes';
import { E2ePool } from './pool';
import { registerSampleAgents, type Registration } from '../scripts/register-agents';

const TASKS = 500;
const BATCH = 100;

let pool: E2ePool | null = null;
let nodes: LaunchedNodes | null = null;
let url = '';
let registrations: Registration[] = [];

before(async () => {
  pool = await E2ePool.start('e2e-agents-');
  url = pool.url;
  registrations = await registerSampleAgents(url);
  nodes = await pool.join({ count: 2 });
});

after(async () => {
  await pool?.close();
});

const postTasks = (specs: unknown[]): Promise<string[]> => submitAll(url, specs);
const waitAll = (ids: string[]): Promise<TaskRecord[]> => awaitAll(url, ids);

function specFor(agent: AgentSpec): Record<string, unknown> {
  const payload: Record<string, unknown> = { agent: agent.name, input: agent.input };
  if (agent.files) payload.files = agent.files;
  if (agent.limits) payload.limits = agent.limits;
  return { kind: 'agent', payload, maxAttempts: 1 };
}

/** What is wrong with a finished task, or null. */
function mismatch(agent: AgentSpec, rec: TaskRecord): string | null {
  const exp = agent.expected;
  const where = `${agent.name} ${rec.id}`;
  if (exp.ok) {
    if (rec.state !== 'succeeded') return `${where}: ${rec.state} ${rec.error?.code} ${rec.error?.message}`;
    const result = rec.result as { exitCode: number; output: unknown };
    try {
      assert.deepStrictEqual(result.output, exp.output);
    } catch {
      return `${where}: output ${JSON.stringify(result.output).slice(0, 300)} ≠ expected ${JSON.stringify(exp.output).slice(0, 300)}`;
    }
    return result.exitCode === 0 ? null : `${where}: exit code ${result.exitCode}`;
  }
  if (rec.state !== 'failed') return `${where}: expected failed ${exp.errorCode}, got ${rec.state} ${rec.error?.code ?? ''}`;
  if (rec.error?.code !== exp.errorCode) return `${where}: expected ${exp.errorCode}, got ${rec.error?.code} (${rec.error?.message})`;
  if (exp.stderrIncludes && !JSON.stringify(rec.error.details ?? {}).includes(exp.stderrIncludes)) {
    return `${where}: stderr does not include ${JSON.stringify(exp.stderrIncludes)}: ${JSON.stringify(rec.error.details).slice(0, 200)}`;
  }
  return null;
}

test('the registry takes the runnable agents and refuses the bad ones with their codes', () => {
  for (const agent of AGENTS) {
    const reg = registrations.find((r) => r.name === agent.name);
    assert.ok(reg, `${agent.name} was not registered`);
    const exp = agent.expected;
    if (!exp.ok && exp.stage === 'register') {
      assert.equal(reg.code, exp.errorCode, `${agent.name}: ${reg.status} ${reg.message}`);
      assert.equal(reg.status, 422);
    } else {
      assert.equal(reg.code, null, `${agent.name} refused: ${reg.code} ${reg.message}`);
    }
  }
});

test('the page shows its node id and connection state', async () => {
  const page = nodes!.pages[0]!;
  const nodeId = await page.evaluate(() => window.__execNode!.nodeId);
  assert.match(nodeId ?? '', /^[0-9a-f-]{36}$/);
  await page.locator('exec-node-app [data-testid="node-id"]').filter({ hasText: nodeId! }).waitFor({ timeout: 10_000 });
  // The page re-renders at most every 250 ms: the id can show one render before the state does.
  const state = page.locator('exec-node-app [data-testid="node-state"]');
  await state.filter({ hasText: /^connected$/ }).waitFor({ timeout: 10_000 });
  assert.equal(await state.textContent(), 'connected');
  const gpu = page.locator('exec-node-app gpu-adapter');
  await gpu.locator('[data-testid="gpu-info"], [data-testid="gpu-none"]').first().waitFor({ timeout: 10_000 });
});

test(`${TASKS} tasks over the catalog end with the expected output or error code`, { timeout: 180_000 }, async () => {
  const runnable = AGENTS.filter((a) => a.expected.ok || a.expected.stage === 'run');
  const useful = runnable.filter((a) => !a.hostile);
  const hostile = runnable.filter((a) => a.hostile);
  // 80 % useful, 20 % hostile, interleaved so hostile ones land beside useful ones on both nodes.
  const plan: AgentSpec[] = [];
  for (let i = 0; i < TASKS; i++) {
    plan.push(i % 5 === 4 ? hostile[Math.floor(i / 5) % hostile.length]! : useful[i % useful.length]!);
  }
  const ids: string[] = [];
  for (let i = 0; i < plan.length; i += BATCH) ids.push(...(await postTasks(plan.slice(i, i + BATCH).map(specFor))));
  assert.equal(ids.length, TASKS);

  const records = await waitAll(ids);
  // One line per agent that went wrong: how many times, and the first case.
  const wrong = new Map<string, { count: number; first: string }>();
  records.forEach((rec, i) => {
    const m = mismatch(plan[i]!, rec);
    if (m === null) return;
    const w = wrong.get(plan[i]!.name);
    if (w) w.count++;
    else wrong.set(plan[i]!.name, { count: 1, first: m });
  });
  assert.deepEqual(
    [...wrong].map(([name, w]) => `${name} ×${w.count}: ${w.first}`),
    [],
    `${[...wrong.values()].reduce((a, w) => a + w.count, 0)} of ${TASKS} tasks ended wrong`,
  );

  const byNode = new Map<string, number>();
  for (const r of records) if (r.nodeId) byNode.set(r.nodeId, (byNode.get(r.nodeId) ?? 0) + 1);
  assert.equal(byNode.size, 2, `tasks ran on ${byNode.size} node(s): ${JSON.stringify([...byNode])}`);
});

test('afterwards both nodes are still connected and each completes a normal task', { timeout: 60_000 }, async () => {
  const { pages, nodeIds } = nodes!;
  for (const [i, page] of pages.entries()) {
    const s = await page.evaluate(() => window.__execNode!.stats());
    assert.equal(s.state, 'connected');
    assert.equal(s.nodeId, nodeIds[i]);
  }
  const trivial = AGENTS.find((a) => a.name === 'trivial')!;
  const seen = new Set<string>();
  for (let round = 0; round < 10 && seen.size < 2; round++) {
    const recs = await waitAll(await postTasks(Array.from({ length: 8 }, () => specFor(trivial))));
    for (const r of recs) {
      assert.equal(r.state, 'succeeded', `${r.id}: ${r.error?.code} ${r.error?.message}`);
      assert.deepEqual((r.result as { output: unknown }).output, { ok: true });
      if (r.nodeId) seen.add(r.nodeId);
    }
  }
  assert.deepEqual([...seen].sort(), [...nodeIds].sort());
});
