/**
 * The pool under --auth, for real: headless Chromium pages join with the join token from their link
 * (`?token=`), run a task submitted with a planner token, and a page without a token, or with a
 * token that lacks the node role, is refused and says why (`lastError` in its stats), while the
 * coordinator counts only the node that may join.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AGENTS } from '../agents';
import { createCoordinator, type Coordinator } from '../server';
import { Auth } from '../server/auth';
import type { TaskRecord } from '../shared';
import { launchNodes, type LaunchedNodes } from '../scripts/nodes';
import { DIST, ensurePageBuilt } from '../scripts/page-build';
import { registerSampleAgents } from '../scripts/register-agents';

const T = {
  admin: 'admin-token-0123456789abcdef',
  join: 'join-token-0123456789abcdefgh',
  planner: 'planner-token-0123456789abcd',
};
const AGENT = AGENTS.find((a) => !a.hostile && a.language === 'c')!;

let dir = '';
let coordinator: Coordinator;
let nodes: LaunchedNodes;
let url = '';

before(async () => {
  await ensurePageBuilt();
  dir = mkdtempSync(join(tmpdir(), 'e2e-auth-'));
  const auth = Auth.fromConfig({
    tokens: [
      { token: T.admin, roles: ['admin'] },
      { token: T.join, roles: ['node'] },
      { token: T.planner, roles: ['planner'], tenant: 'acme' },
    ],
  });
  coordinator = await createCoordinator({ dbPath: join(dir, 'coordinator.db'), port: 0, staticDir: DIST, auth });
  url = coordinator.url.replace(/\/$/, '');
  await registerSampleAgents(url, [AGENT], T.admin);
  nodes = await launchNodes({ url, count: 1, token: T.join, userDataRoot: dir, query: { workers: '1', inference: '0' }, timeoutMs: 60_000 });
});

after(async () => {
  await nodes?.close();
  await coordinator?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const api = (path: string, token: string | null, init: RequestInit = {}): Promise<Response> =>
  fetch(`${url}${path}`, { ...init, headers: { ...(init.headers as Record<string, string>), ...(token ? { authorization: `Bearer ${token}` } : {}) } });

test('a page with the join token joins and runs a task a tenant’s planner submitted; the task is that tenant’s', async () => {
  assert.equal(nodes.nodeIds.length, 1);
  const spec = { kind: 'agent', payload: { agent: AGENT.name, input: AGENT.input, ...(AGENT.files ? { files: AGENT.files } : {}), ...(AGENT.limits ? { limits: AGENT.limits } : {}) } };
  const refused = await api('/v1/tasks', null, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) });
  assert.equal(refused.status, 401);
  const res = await api('/v1/tasks', T.planner, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) });
  assert.equal(res.status, 202);
  const { id } = (await res.json()) as { id: string };
  const rec = (await (await api(`/v1/tasks/${id}/wait?timeoutMs=60000`, T.planner)).json()) as TaskRecord;
  assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
  assert.equal(rec.tenant, 'acme');
  assert.equal(rec.nodeId, nodes.nodeIds[0]);
});

test('a page without a token, and one with a token lacking the node role, are refused and say why; only the node that may join is counted', async () => {
  for (const [token, code] of [
    [null, 'UNAUTHORIZED'],
    [T.planner, 'FORBIDDEN'],
  ] as const) {
    const page = await nodes.context.newPage();
    const q = new URLSearchParams({ name: `refused-${code}`, workers: '1', inference: '0', ...(token ? { token } : {}) });
    await page.goto(`${url}/?${q}`);
    const got = await page.waitForFunction(
      () => {
        const e = window.__execNode?.stats().lastError;
        return e && e.code !== 'NODE_LOST' ? e.code : null;
      },
      undefined,
      { timeout: 30_000, polling: 50 },
    );
    assert.equal(await got.jsonValue(), code);
    assert.notEqual(await page.evaluate(() => window.__execNode?.state), 'connected');
    await page.close();
  }
  const listed = (await (await api('/v1/nodes', T.admin)).json()) as { nodes: { id: string }[] };
  assert.deepEqual(
    listed.nodes.map((n) => n.id),
    nodes.nodeIds,
  );
});
