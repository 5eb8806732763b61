/**
 * GET /v1/tasks pages with an opaque cursor: 2,500 tasks seen exactly once, newest first, while more
 * tasks are submitted between pages; limits bounded; a cursor not ours refused.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createCoordinator, type Coordinator } from './index';
import { HELLO_WAT, apiClient, tempDir, wat } from './testing';
import { testDb } from './postgres-testing';

const tmp = tempDir('paging-');
let c: Coordinator;
const api = (path: string, init?: RequestInit & { json?: unknown }) => apiClient(c.url)(path, init);

async function submit(n: number, extra: Record<string, unknown> = {}): Promise<string[]> {
  const ids: string[] = [];
  for (let done = 0; done < n; done += 500) {
    const tasks = Array.from({ length: Math.min(500, n - done) }, () => ({ kind: 'agent', payload: { agent: 'hello' }, ...extra }));
    const res = await api('/v1/tasks', { method: 'POST', json: { tasks } });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    ids.push(...(res.body.ids as string[]));
  }
  return ids;
}

interface Page {
  tasks: Array<{ id: string; state: string; tenant: string | null; createdAt: number }>;
  nextCursor: string | null;
}

before(async () => {
  c = await createCoordinator({ dbPath: testDb(join(tmp.dir, 'c.db')) });
  const put = await api('/v1/agents/hello/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) });
  assert.equal(put.status, 201);
});

after(async () => {
  await c.close();
  tmp.cleanup();
});

test('2,500 tasks paged 300 at a time are each seen exactly once, newest first, while new tasks arrive', async () => {
  const original = await submit(2_500);
  const seen = new Map<string, number>();
  const added: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  let lastCreated = Infinity;
  do {
    const query: string = cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`;
    const res = await api(`/v1/tasks?limit=300${query}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    const page = res.body as Page;
    assert.ok(page.tasks.length <= 300);
    for (const t of page.tasks) {
      seen.set(t.id, (seen.get(t.id) ?? 0) + 1);
      assert.ok(t.createdAt <= lastCreated, 'newest first');
      lastCreated = t.createdAt;
    }
    cursor = page.nextCursor;
    pages++;
    // Submitting between pages must not shift what the next page holds.
    added.push(...(await submit(37)));
  } while (cursor !== null && pages < 100);
  assert.equal(cursor, null, 'the last page says there is no next one');
  assert.equal(pages, Math.ceil(2_500 / 300));
  for (const id of original) assert.equal(seen.get(id), 1, `task ${id} seen once`);
  assert.equal(seen.size, original.length, 'nothing else appears: tasks submitted while paging sort before the first page');
  assert.ok(added.every((id) => !seen.has(id)));

  // A fresh walk starts with the newest.
  const first = (await api('/v1/tasks?limit=5')).body as Page;
  assert.equal(first.tasks[0]!.id, added[added.length - 1]);
  assert.equal(typeof first.nextCursor, 'string');
});

test('filters page too; the default limit is 100, the bounds 1..1000; a cursor we did not give is refused', async () => {
  await submit(150, { tenant: 'pager' });
  const walk: string[] = [];
  let cursor: string | null = null;
  do {
    const res = await api(`/v1/tasks?tenant=pager&state=queued${cursor ? `&cursor=${cursor}` : ''}`);
    const page = res.body as Page;
    assert.ok(page.tasks.every((t) => t.tenant === 'pager' && t.state === 'queued'));
    walk.push(...page.tasks.map((t) => t.id));
    cursor = page.nextCursor;
  } while (cursor);
  assert.equal(walk.length, 150);
  assert.equal(new Set(walk).size, 150);
  const defaultPage = (await api('/v1/tasks?tenant=pager')).body as Page;
  assert.equal(defaultPage.tasks.length, 100);

  for (const q of ['limit=0', 'limit=1001', 'limit=2.5', 'cursor=nope', 'cursor=', `cursor=${Buffer.from('{"v":1,"before":-4}').toString('base64url')}`, `cursor=${'A'.repeat(300)}`, 'cursor=a&cursor=b']) {
    const res = await api(`/v1/tasks?${q}`);
    assert.equal(res.status, 400, q);
    assert.equal(res.body.error.code, 'SCHEMA_VIOLATION', q);
  }
});
