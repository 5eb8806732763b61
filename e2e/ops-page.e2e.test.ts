/**
 * The operator page (ops.html), for real: a coordinator under --auth, one headless Chromium node page
 * joined with the join token, agent tasks run (some failing: AGENT_TRAP, AGENT_EXIT_NONZERO) and generate
 * tasks left queued (the node runs agents only). The page, opened with an admin token from `?token=`
 * (then gone from the address bar): the node with its state, the queue's numbers equal to GET /v1/pool's,
 * the errors by code, and each chart's canvas screenshot decoded (PNG) with its lines drawn in their
 * colours. Its drain button drains the node and its cancel box cancels a queued task (the API shows
 * both); with a refiner token neither control is there. No CSP violation anywhere.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Page } from 'playwright-core';
import { AGENTS, type AgentSpec } from '../agents';
import { Auth } from '../server/auth';
import type { PoolView, TaskRecord } from '../shared';
import type { LaunchedNodes } from '../scripts/nodes';
import { E2ePool } from './pool';
import { registerSampleAgents } from '../scripts/register-agents';
import { countDrawn, countNear, decodePng } from './png';

const T = {
  admin: 'ops-admin-token-0123456789ab',
  join: 'ops-join-token-0123456789abcd',
  refiner: 'ops-refiner-token-0123456789',
  planner: 'ops-planner-token-0123456789',
};
const GOOD = AGENTS.find((a) => !a.hostile && a.language === 'c')!;
const TRAP = AGENTS.find((a) => a.name === 'trap')!;
const EXIT = AGENTS.find((a) => a.name === 'exit-nonzero')!;
/**
 * Each chart's first series colour (web/ops/ops-app.ts) and the fewest pixels of it its line must have below
 * the legend (rows 18 on; the legend's swatches are in rows 7–15): throughput and queue depth have a value
 * at every sample, so their 2 px lines cross the plot (~300 px); latency a quarter of it at least (below).
 */
const CHARTS = { throughput: ['#2563eb', 200], latency: ['#16a34a', 60], queue: ['#9333ea', 200] } as const;
const BELOW_LEGEND = 18;

interface OpsViolation {
  directive: string;
  blocked: string;
}
declare global {
  interface Window {
    __opsCsp?: OpsViolation[];
  }
}

let harness: E2ePool | null = null;
let nodes: LaunchedNodes;
let url = '';
let queuedIds: string[] = [];

const api = (path: string, token: string, init: RequestInit = {}): Promise<Response> =>
  fetch(`${url}${path}`, { ...init, headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${token}` } });

async function pool(): Promise<PoolView> {
  const res = await api('/v1/pool', T.admin);
  assert.equal(res.status, 200);
  return (await res.json()) as PoolView;
}

function agentSpec(a: AgentSpec, priority = 5): unknown {
  return { kind: 'agent', priority, payload: { agent: a.name, input: a.input, ...(a.files ? { files: a.files } : {}), ...(a.limits ? { limits: a.limits } : {}) } };
}

async function submit(specs: unknown[]): Promise<string[]> {
  const res = await api('/v1/tasks', T.planner, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ tasks: specs }) });
  const body = (await res.json()) as { ids?: string[] };
  assert.equal(res.status, 202, JSON.stringify(body));
  return body.ids!;
}

async function ended(id: string): Promise<TaskRecord> {
  for (let i = 0; i < 4; i++) {
    const rec = (await (await api(`/v1/tasks/${id}/wait?timeoutMs=15000`, T.planner)).json()) as TaskRecord;
    if (rec.state !== 'queued' && rec.state !== 'leased') return rec;
  }
  throw new Error(`task ${id} did not end within a minute`);
}

/** Polls `probe` until it answers a value (not undefined), at most `ms`. */
async function until<V>(what: string, probe: () => Promise<V | undefined>, ms = 15_000): Promise<V> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms${last ? ` (${String(last)})` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A page of the operator view, with its CSP reports, console CSP lines and page errors gathered. */
async function openOps(token: string): Promise<{ page: Page; problems: () => Promise<string[]> }> {
  const page = await nodes.context.newPage();
  const lines: string[] = [];
  page.on('console', (msg) => {
    if (/Content Security Policy/i.test(msg.text())) lines.push(`console: ${msg.text()}`);
  });
  page.on('pageerror', (err) => lines.push(`pageerror: ${err.message}`));
  await page.goto(`${url}/ops.html?token=${encodeURIComponent(token)}`);
  await page.locator('ops-app').waitFor();
  return {
    page,
    problems: async () => [...lines, ...(await page.evaluate(() => window.__opsCsp ?? [])).map((v) => `csp: ${v.directive} ${v.blocked}`)],
  };
}

before(async () => {
  const auth = Auth.fromConfig({
    tokens: [
      { token: T.admin, roles: ['admin'] },
      { token: T.join, roles: ['node'] },
      { token: T.refiner, roles: ['refiner'] },
      { token: T.planner, roles: ['planner'] },
    ],
  });
  harness = await E2ePool.start('e2e-ops-', { auth, historySampleMs: 250 });
  url = harness.url;
  await registerSampleAgents(url, [GOOD, TRAP, EXIT], T.admin);
  nodes = await harness.join({ count: 1, token: T.join, query: { workers: '1', inference: '0' }, timeoutMs: 60_000 });
  await nodes.context.addInitScript(() => {
    window.__opsCsp = [];
    document.addEventListener('securitypolicyviolation', (e) => window.__opsCsp!.push({ directive: e.effectiveDirective, blocked: e.blockedURI }), true);
  });
  const ids = await submit([...Array.from({ length: 6 }, () => agentSpec(GOOD)), agentSpec(TRAP), agentSpec(TRAP), agentSpec(EXIT), agentSpec(EXIT)]);
  const records = await Promise.all(ids.map(ended));
  assert.deepEqual(
    records.map((r) => r.error?.code ?? r.state),
    [...Array<string>(6).fill('succeeded'), 'AGENT_TRAP', 'AGENT_TRAP', 'AGENT_EXIT_NONZERO', 'AGENT_EXIT_NONZERO'],
  );
  // Generate tasks wait queued: the node runs agents only (?inference=0).
  const gen = (priority: number) => ({ kind: 'generate', priority, payload: { model: 'tiny', prompt: 'hi', maxNewTokens: 1 } });
  queuedIds = await submit([gen(7), gen(7), gen(2)]);
});

after(async () => {
  await harness?.close();
});

test('GET /v1/whoami says what the token may do; GET /v1/pool is for admin, refiner and allocator', async () => {
  const who = async (token: string | null) => (await (await fetch(`${url}/v1/whoami`, token ? { headers: { authorization: `Bearer ${token}` } } : {})).json()) as { authenticated: boolean; roles: string[] };
  assert.deepEqual((await who(T.refiner)).roles, ['refiner']);
  assert.deepEqual(await who(null).then((w) => [w.authenticated, w.roles]), [false, []]);
  assert.equal((await api('/v1/pool', T.planner)).status, 403);
  assert.equal((await api('/v1/pool', T.refiner)).status, 200);
});

test('the admin’s page: the node, the queue as the API counts it, the errors by code, charts drawn; drain and cancel work', async () => {
  const { page, problems } = await openOps(T.admin);
  assert.equal(new URL(page.url()).searchParams.has('token'), false, 'the token left the address bar');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('exec-ops-token')), T.admin);

  const row = page.locator('[data-testid=node-row]');
  await row.first().waitFor();
  assert.equal(await row.count(), 1);
  assert.equal(await row.getAttribute('data-node-id'), nodes.nodeIds[0]);
  assert.equal(await row.locator('[data-testid=node-state]').textContent(), 'healthy');
  assert.match((await row.locator('[data-testid=node-circuit]').textContent()) ?? '', /^closed/);
  assert.match((await row.locator('[data-testid=node-reputation]').textContent()) ?? '', /^\d\.\d\d/);

  // The queue: every state's number and the queued tasks by priority, as GET /v1/pool answers them.
  const view = await pool();
  assert.equal(view.queue.byState.queued, 3);
  assert.equal(view.queue.byState.succeeded, 6);
  assert.deepEqual(view.queue.queuedByPriority, [
    { priority: 7, count: 2 },
    { priority: 2, count: 1 },
  ]);
  await until('the page shows the API’s queue', async () => {
    for (const [state, n] of Object.entries(view.queue.byState)) {
      if ((await page.locator(`[data-testid=state-${state}]`).textContent())?.trim() !== String(n)) return undefined;
    }
    return true;
  });
  const priorities = await page.locator('[data-testid=priority-row]').evaluateAll((rows) => rows.map((r) => [r.getAttribute('data-priority'), r.querySelector('[data-testid=priority-count]')?.textContent]));
  assert.deepEqual(priorities, [
    ['7', '2'],
    ['2', '1'],
  ]);

  // Errors by code: the two failing agents' codes, with their tasks listed (a retried attempt on a slow
  // machine, LEASE_EXPIRED say, may add its own).
  assert.equal(view.errorsByCode.AGENT_TRAP, 2, JSON.stringify(view.errorsByCode));
  assert.equal(view.errorsByCode.AGENT_EXIT_NONZERO, 2, JSON.stringify(view.errorsByCode));
  const codes = await page.locator('[data-testid=error-code]').evaluateAll((els) => els.map((e) => e.getAttribute('data-code')));
  assert.deepEqual(codes.sort(), Object.keys(view.errorsByCode).sort());
  assert.equal(await page.locator('[data-testid=error-row]').count(), view.lastErrors.length);
  const failed = view.lastErrors.filter((e) => e.code === 'AGENT_TRAP' || e.code === 'AGENT_EXIT_NONZERO');
  assert.equal(failed.length, 4, JSON.stringify(view.lastErrors));
  assert.ok(failed.every((e) => e.nodeId === nodes.nodeIds[0] && e.message.length > 0), JSON.stringify(failed));

  // The charts: each canvas's pixels, decoded from its screenshot, show axes and text and its first series' line.
  // Latency has values only since the first tasks ended: wait until they span a quarter of the history (its
  // line a quarter of the plot) and the page has drawn that many samples.
  const history = await until('latency over a quarter of the history', async () => {
    const h = (await pool()).history;
    const first = h.find((p) => p.latencyP50Ms !== null);
    return first && h.length >= 3 && h.at(-1)!.at - first.at >= (h.at(-1)!.at - h[0]!.at) / 4 ? h : undefined;
  });
  assert.ok(history.some((p) => p.throughputPerMin === 10 && p.latencyP50Ms !== null && p.queued === 3), JSON.stringify(history.at(-1)));
  await until('the page drew those samples', async () => (Number(await page.locator('ops-chart[data-chart=latency] canvas').getAttribute('data-points')) >= history.length ? true : undefined));
  for (const [chart, [colour, least]] of Object.entries(CHARTS)) {
    const canvas = page.locator(`ops-chart[data-chart=${chart}] canvas`);
    const label = await until(`the ${chart} chart has data`, async () => {
      const l = (await canvas.getAttribute('aria-label')) ?? '';
      return /\d/.test(l.split(':')[1] ?? '') ? l : undefined;
    });
    const img = decodePng(await canvas.screenshot());
    const { background, drawn } = countDrawn(img);
    const line = countNear(img, colour, { fromRow: BELOW_LEGEND });
    assert.ok(img.width > 200 && img.height >= 150, `${chart}: ${img.width}×${img.height}`);
    assert.equal(background, '#ffffff', `${chart}: background`);
    assert.ok(drawn > 1500, `${chart}: ${drawn} pixels drawn (${label})`);
    assert.ok(line > least, `${chart}: ${line} pixels of its line colour ${colour} below the legend (${label})`);
  }

  // Drain: the button drains the node; the API says so, and the page.
  await row.locator('[data-testid=drain]').click();
  await until('the API shows the node draining', async () => ((await pool()).nodes[0]?.draining ? true : undefined));
  await until('the page shows it draining', async () => ((await row.locator('[data-testid=node-state]').textContent()) === 'draining' ? true : undefined));

  // Cancel: a queued task's id in the box.
  await page.locator('[data-testid=cancel-id]').fill(queuedIds[2]!);
  await page.locator('[data-testid=cancel]').click();
  await until('the task is cancelled', async () => {
    const rec = (await (await api(`/v1/tasks/${queuedIds[2]}`, T.planner)).json()) as TaskRecord;
    return rec.state === 'cancelled' ? true : undefined;
  });
  await until('the page counts it', async () => ((await page.locator('[data-testid=state-cancelled]').textContent())?.trim() === '1' ? true : undefined));

  assert.deepEqual(await problems(), []);
  await page.close();
});

test('with a refiner token the page shows the pool but no drain button and no cancel box', async () => {
  const { page, problems } = await openOps(T.refiner);
  await page.locator('[data-testid=node-row]').first().waitFor();
  await until('whoami shown', async () => ((await page.locator('[data-testid=whoami]').textContent())?.includes('refiner') ? true : undefined));
  await page.locator('[data-testid=state-queued]').filter({ hasText: /\d/ }).waitFor();
  assert.equal(await page.locator('[data-testid=drain]').count(), 0);
  assert.equal(await page.locator('ops-cancel').count(), 0);
  assert.deepEqual(await problems(), []);
  await page.close();
});
