/**
 * Untrusted nodes, BOINC's way, over real WebSockets and a real SQLite file:
 * replicas on distinct nodes and a quorum of matching outputs, replicas added
 * while they disagree, QUORUM_FAILED with every output kept, spot checks,
 * node reputation that lowers a node's share of work and then excludes it,
 * and survives a restart; a journal written before the replica tables opens.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { after, describe, test } from 'node:test';
import type { Assignment, TaskId } from '../shared';
import { createCoordinator, type Coordinator } from './index';
import { Journal } from './journal';
import { canonicalJson, decide, outcomeDigest, reputationScore } from './quorum';
import { HELLO_WAT, TestNode, apiClient, tempDir, until, wat } from './testing';
import { testDb } from './postgres-testing';

const tmp = tempDir('quorum-');
after(() => tmp.cleanup());
let dbN = 0;

/** A node that answers every assignment with `answer(input)` as the agent's output, or holds them. */
class Replier {
  readonly node: TestNode;
  mode: 'auto' | 'hold' = 'auto';
  answer: (a: Assignment) => unknown;
  readonly held: Assignment[] = [];
  /** Task ids it was assigned, in order. */
  readonly seen: string[] = [];

  constructor(node: TestNode, answer: (a: Assignment) => unknown) {
    this.node = node;
    this.answer = answer;
    const take = (tasks: Assignment[]): void => {
      for (const a of tasks) this.seen.push(a.taskId);
      if (this.mode === 'hold') this.held.push(...tasks);
      else this.reply(tasks);
    };
    node.ws.on('message', (data) => {
      const msg = JSON.parse(String(data)) as { type: string; tasks?: Assignment[] };
      if (msg.type === 'task.assign' && msg.tasks) take(msg.tasks);
    });
    // Assignments that came with the welcome, before this listener.
    for (const m of node.inbox.splice(0)) if (m.type === 'task.assign') queueMicrotask(() => take(m.tasks));
  }

  static async join(c: Coordinator, name: string, answer: (a: Assignment) => unknown, maxConcurrent = 4): Promise<Replier> {
    return new Replier(await TestNode.connect(c.url, { name, maxConcurrent, queueDepth: 0 }), answer);
  }

  /** Assignments to fail WORKER_CRASHED (retryable) before answering again. */
  crashNext = 0;

  reply(tasks: readonly Assignment[]): void {
    if (this.crashNext > 0 && tasks.length) {
      this.crashNext--;
      this.node.fail(tasks.slice(0, 1), 'WORKER_CRASHED', 'crashed in test');
      tasks = tasks.slice(1);
      if (!tasks.length) return;
    }
    // Timings differ by node; only exitCode and output are compared.
    this.node.succeed(tasks, (a) => ({ exitCode: 0, output: this.answer(a), stderr: '', fuelUsed: 7, durationMs: Math.random(), memoryBytes: 65536 }));
  }

  release(): void {
    this.mode = 'auto';
    this.reply(this.held.splice(0));
  }
}

const honest = (a: Assignment): unknown => ((a.payload as { input: { x: number } }).input.x * 2);

async function coordinator(extra: Parameters<typeof createCoordinator>[0] = {}): Promise<Coordinator> {
  const c = await createCoordinator({ dbPath: testDb(join(tmp.dir, `q${dbN++}.db`)), heartbeatIntervalMs: 10_000, leaseMs: 30_000, ...extra });
  await apiClient(c.url)('/v1/agents/hello/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) });
  return c;
}

async function submit(c: Coordinator, spec: Record<string, unknown>): Promise<TaskId> {
  const res = await apiClient(c.url)('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello', input: { x: 21 } }, ...spec } });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  return res.body.id as TaskId;
}

async function waitEnded(c: Coordinator, id: TaskId) {
  const res = await apiClient(c.url)(`/v1/tasks/${id}/wait?timeoutMs=10000`);
  assert.ok(['succeeded', 'failed', 'dead'].includes(res.body.state), `task ended: ${JSON.stringify(res.body)}`);
  return res.body;
}

async function reputationOf(c: Coordinator, nodeId: string) {
  const nodes = (await apiClient(c.url)('/v1/nodes')).body.nodes as Array<{ id: string; reputation: Record<string, number | boolean> }>;
  return nodes.find((n) => n.id === nodeId)!.reputation;
}

describe('quorum', () => {
  test('canonical comparison and the decision rule', () => {
    assert.equal(canonicalJson({ b: [1, { d: 1e21, c: 'x' }], a: null }), '{"a":null,"b":[1,{"c":"x","d":1e+21}]}');
    const out = (output: unknown, durationMs: number) => ({ ok: true as const, result: { exitCode: 0, output, durationMs, fuelUsed: 1 } });
    assert.equal(outcomeDigest('agent', out({ a: 1, b: 2 }, 1)), outcomeDigest('agent', out({ b: 2, a: 1 }, 9)), 'key order and timings do not matter');
    assert.notEqual(outcomeDigest('agent', out({ a: 1 }, 1)), outcomeDigest('agent', out({ a: 2 }, 1)));
    const r = { replicas: 3, quorum: 2, maxReplicas: 4 };
    const row = (idx: number, state: 'queued' | 'leased' | 'done' | 'dead', digest: string | null = null) => ({ idx, state, digest, nodeId: `n${idx}` });
    assert.deepEqual(decide([row(0, 'done', 'A'), row(1, 'done', 'B'), row(2, 'leased')], r), { kind: 'wait' });
    assert.deepEqual(decide([row(0, 'done', 'A'), row(1, 'done', 'B'), row(2, 'done', 'A')], r), { kind: 'agreed', digest: 'A', agreed: [0, 2], outvoted: [1] });
    assert.deepEqual(decide([row(0, 'done', 'A'), row(1, 'done', 'B'), row(2, 'done', 'C')], r), { kind: 'add' });
    assert.deepEqual(decide([row(0, 'done', 'A'), row(1, 'done', 'B'), row(2, 'done', 'C'), row(3, 'done', 'D')], r), { kind: 'failed' });
    assert.deepEqual(decide([row(0, 'dead'), row(1, 'dead'), row(2, 'dead'), row(3, 'dead')], r), { kind: 'dead' });
    assert.deepEqual([0, 1, 2, 3, 4].map((n) => reputationScore({ agreed: 0, outvoted: n, pass: 0, fail: 0 })), [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5]);
  });

  test('a lying replica is outvoted; the honest output is the result; replicas on distinct nodes', async () => {
    const c = await coordinator();
    const nodes: Replier[] = [];
    try {
      nodes.push(await Replier.join(c, 'honest-1', honest), await Replier.join(c, 'honest-2', honest), await Replier.join(c, 'liar', () => 'lie'));
      const liar = nodes[2]!.node.id;
      const id = await submit(c, { replicas: 3 });
      await waitEnded(c, id);
      // A replica still running when two agreed finishes and is judged against the agreed output.
      const rec = await until(async () => {
        const r = (await apiClient(c.url)(`/v1/tasks/${id}`)).body;
        return r.replicas.every((x: { state: string }) => x.state === 'done') ? r : undefined;
      }, 5_000, 'every replica judged');
      assert.equal(rec.state, 'succeeded');
      assert.equal(rec.result.output, 42);
      assert.deepEqual(rec.replication, { replicas: 3, quorum: 2, maxReplicas: 5 });
      assert.equal(rec.replicas.length, 3);
      assert.equal(new Set(rec.replicas.map((r: { nodeId: string }) => r.nodeId)).size, 3, 'three distinct nodes');
      const lying = rec.replicas.find((r: { nodeId: string }) => r.nodeId === liar);
      assert.equal(lying.agreed, false);
      assert.equal(lying.result.output, 'lie', "the outvoted replica's output is kept");
      for (const r of rec.replicas.filter((x: { nodeId: string }) => x.nodeId !== liar)) {
        assert.equal(r.agreed, true);
        assert.equal(r.digest, rec.replicas.find((x: { agreed: boolean; nodeId: string }) => x.agreed && x.nodeId !== r.nodeId).digest);
      }
      assert.notEqual(lying.digest, rec.replicas.find((r: { agreed: boolean }) => r.agreed).digest);
      assert.equal((await reputationOf(c, liar)).outvoted, 1);
      assert.equal((await reputationOf(c, nodes[0]!.node.id)).agreed, 1);
      const metrics = await (await fetch(`${c.url}/metrics`)).text();
      assert.match(metrics, new RegExp(`coordinator_node_reputation\\{node="${liar}",node_name="liar"\\} 0\\.5`));
    } finally {
      for (const n of nodes) await n.node.close();
      await c.close();
    }
  });

  test('disagreement adds a replica (which waits for a distinct node), then fails QUORUM_FAILED with every output kept', async () => {
    const c = await coordinator();
    const nodes: Replier[] = [];
    try {
      nodes.push(await Replier.join(c, 'a', () => 'a'), await Replier.join(c, 'b', () => 'b'));
      const id = await submit(c, { replicas: 2, maxReplicas: 3 });
      const api = apiClient(c.url);
      const waiting = await until(async () => {
        const r = (await api(`/v1/tasks/${id}`)).body;
        return r.replicas.length === 3 && r.replicas[2].state === 'queued' ? r : undefined;
      }, 5_000, 'a third replica added');
      assert.equal(waiting.state, 'leased', 'still running: the third replica waits for a node that ran none');
      assert.deepEqual(waiting.replicas.slice(0, 2).map((r: { result: { output: string } }) => r.result.output).sort(), ['a', 'b']);
      nodes.push(await Replier.join(c, 'c', () => 'c'));
      const rec = await waitEnded(c, id);
      assert.equal(rec.state, 'failed');
      assert.equal(rec.error.code, 'QUORUM_FAILED');
      assert.deepEqual(rec.replicas.map((r: { result: { output: string } }) => r.result.output).sort(), ['a', 'b', 'c']);
      assert.equal(new Set(rec.replicas.map((r: { nodeId: string }) => r.nodeId)).size, 3);
      assert.equal(rec.error.details.replicas.length, 3);
      assert.equal((await reputationOf(c, nodes[0]!.node.id)).outvoted, 0, 'no quorum: nobody is marked');
    } finally {
      for (const n of nodes) await n.node.close();
      await c.close();
    }
  });

  test('a task needing 3 replicas with 2 nodes waits, then runs when a third joins', async () => {
    const c = await coordinator();
    const nodes: Replier[] = [];
    try {
      nodes.push(await Replier.join(c, 'one', honest), await Replier.join(c, 'two', honest));
      const id = await submit(c, { replicas: 3, quorum: 3 });
      const api = apiClient(c.url);
      await until(async () => (await api(`/v1/tasks/${id}`)).body.replicas.filter((r: { state: string }) => r.state === 'done').length === 2, 5_000, 'two replicas done');
      // Dispatch rounds run on every tick; the third replica is still queued after several.
      const ticks = c.scheduler.options.tickMs;
      await new Promise((r) => setTimeout(r, ticks * 6));
      const mid = (await api(`/v1/tasks/${id}`)).body;
      assert.equal(mid.state, 'leased');
      assert.equal(mid.replicas[2].state, 'queued');
      assert.equal(nodes[0]!.seen.length + nodes[1]!.seen.length, 2, 'neither node got a second replica');
      nodes.push(await Replier.join(c, 'three', honest));
      const rec = await waitEnded(c, id);
      assert.equal(rec.state, 'succeeded');
      assert.equal(rec.result.output, 42);
      assert.equal(new Set(rec.replicas.map((r: { nodeId: string }) => r.nodeId)).size, 3);
      assert.ok(rec.replicas.every((r: { agreed: boolean }) => r.agreed));
    } finally {
      for (const n of nodes) await n.node.close();
      await c.close();
    }
  });

  test('a node that keeps losing quorums gets less work, then none; a pass verdict raises it again', async () => {
    const c = await coordinator();
    const nodes: Replier[] = [];
    try {
      nodes.push(await Replier.join(c, 'h1', honest), await Replier.join(c, 'h2', honest), await Replier.join(c, 'liar', () => 'lie'));
      const [h1, h2, liar] = nodes as [Replier, Replier, Replier];
      const session = c.scheduler.nodes.get(liar.node.id)!;
      const api = apiClient(c.url);
      /** Plain tasks while every node holds what it gets: how many the liar is given out of a window of 4. */
      const share = async (): Promise<{ n: number; tasks: string[] }> => {
        for (const n of nodes) n.mode = 'hold';
        const res = await api('/v1/tasks', { method: 'POST', json: { tasks: Array.from({ length: 12 }, () => ({ kind: 'agent', payload: { agent: 'hello', input: { x: 1 } } })) } });
        assert.equal(res.status, 202);
        // One dispatch round fills every node; once the full-weight nodes hold 4 each, the liar's share is set.
        await until(() => h1.held.length === 4 && h2.held.length === 4, 5_000, 'honest nodes full');
        const n = session.leases.size;
        const tasks = [...liar.held.map((a) => a.taskId)];
        for (const r of nodes) r.release();
        await until(() => c.journal.countsByState().queued === 0 && c.journal.countsByState().leased === 0, 10_000, 'plain tasks done');
        return { n, tasks };
      };
      const shares: number[] = [];
      let liarTask = '';
      for (let losses = 0; losses <= 4; losses++) {
        const s = await share();
        shares.push(s.n);
        if (s.tasks[0]) liarTask = s.tasks[0];
        if (losses === 4) break;
        const rec = await waitEnded(c, await submit(c, { replicas: 3 }));
        assert.equal(rec.result.output, 42);
        // The liar's replica may end after the two honest ones decided the task: it is judged then.
        await until(async () => (await reputationOf(c, liar.node.id)).outvoted === losses + 1, 5_000, `loss ${losses + 1} recorded`);
      }
      console.log(`liar's share of a 4-task window after 0..4 lost quorums: ${shares.join(', ')}`);
      assert.deepEqual(shares, [4, 2, 2, 1, 0]);
      const rep = await reputationOf(c, liar.node.id);
      assert.equal(rep.excluded, true);
      assert.equal(rep.score, 0.2);
      // Excluded: a task needing three distinct nodes cannot place its third replica.
      const stuck = await submit(c, { replicas: 3, quorum: 3, maxReplicas: 3 });
      await until(async () => (await api(`/v1/tasks/${stuck}`)).body.replicas.filter((r: { state: string }) => r.state === 'done').length === 2, 5_000, 'two replicas done');
      assert.equal(c.scheduler.nodes.get(liar.node.id)!.leases.size, 0);
      // Layer 3 says the liar's plain result was right: reputation rises, it is let back in.
      const verdict = await api(`/v1/tasks/${liarTask}/verdict`, { method: 'POST', json: { verdict: 'pass' } });
      assert.equal(verdict.status, 200);
      const back = await reputationOf(c, liar.node.id);
      assert.equal(back.pass, 1);
      assert.equal(back.excluded, false);
      const done = await waitEnded(c, stuck);
      assert.equal(done.state, 'failed', 'the liar ran the third replica, which disagreed');
      assert.equal(done.error.code, 'QUORUM_FAILED');
    } finally {
      for (const n of nodes) await n.node.close();
      await c.close();
    }
  });

  test('reputation survives a coordinator restart on the same SQLite file (the node resumes its id with its secret)', async () => {
    const dbPath = testDb(join(tmp.dir, 'restart.db'));
    const c1 = await coordinator({ dbPath });
    let liarId = '';
    let liarSecret = '';
    const nodes: Replier[] = [];
    try {
      nodes.push(await Replier.join(c1, 'h1', honest), await Replier.join(c1, 'h2', honest), await Replier.join(c1, 'liar', () => 'lie'));
      liarId = nodes[2]!.node.id;
      liarSecret = nodes[2]!.node.secret;
      for (let i = 0; i < 2; i++) assert.equal((await waitEnded(c1, await submit(c1, { replicas: 3 }))).state, 'succeeded');
      await until(async () => (await reputationOf(c1, liarId)).outvoted === 2, 5_000, 'two losses recorded');
    } finally {
      for (const n of nodes) await n.node.close();
      await c1.close();
    }
    const c2 = await createCoordinator({ dbPath, heartbeatIntervalMs: 10_000, leaseMs: 30_000 });
    const back: TestNode[] = [];
    try {
      back.push(await TestNode.connect(c2.url, { name: 'liar', nodeId: liarId, secret: liarSecret }));
      assert.equal(back[0]!.id, liarId, 'the same node resumes its id after the restart');
      const rep = await reputationOf(c2, liarId);
      assert.equal(rep.outvoted, 2);
      assert.equal(rep.score, 0.333);
      back.push(await TestNode.connect(c2.url, { name: 'impostor', nodeId: liarId, secret: 'not-the-secret' }));
      assert.notEqual(back[1]!.id, liarId, 'without the secret another node gets a new id');
      assert.equal((await reputationOf(c2, back[1]!.id)).score, 1);
    } finally {
      for (const n of back) await n.close();
      await c2.close();
    }
  });

  test('spot checks: a deterministic agent task runs on a second node; a mismatch runs a third that decides', async () => {
    const c = await coordinator({ spotCheck: 1 });
    const nodes: Replier[] = [];
    try {
      const api = apiClient(c.url);
      const config = encodeURIComponent(JSON.stringify({ deterministic: true }));
      assert.equal((await api(`/v1/agents/det/versions/1?config=${config}`, { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) })).status, 201);
      nodes.push(await Replier.join(c, 'honest', honest), await Replier.join(c, 'liar', () => 'lie'));
      const plain = await submit(c, {});
      assert.equal((await waitEnded(c, plain)).replication, null, 'hello is not marked deterministic: no spot check');
      const id = (await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'det', input: { x: 5 } } } })).body.id as TaskId;
      await until(async () => (await api(`/v1/tasks/${id}`)).body.replicas?.length === 3, 5_000, 'a third replica after the mismatch');
      nodes.push(await Replier.join(c, 'referee', honest));
      const rec = await waitEnded(c, id);
      assert.equal(rec.state, 'succeeded');
      assert.equal(rec.result.output, 10);
      assert.deepEqual(rec.replication, { replicas: 2, quorum: 2, maxReplicas: 3, spotCheck: true });
      assert.equal((await reputationOf(c, nodes[1]!.node.id)).outvoted, 1, 'the loser is marked');
    } finally {
      for (const n of nodes) await n.node.close();
      await c.close();
    }
  });

  test('a replica that crashes is retried as usual, on its own node (the others hold the other replicas)', async () => {
    const c = await coordinator({ retryBaseMs: 5 });
    const nodes: Replier[] = [];
    try {
      nodes.push(await Replier.join(c, 'h1', honest), await Replier.join(c, 'h2', honest), await Replier.join(c, 'flaky', honest));
      nodes[2]!.crashNext = 1;
      const id = await submit(c, { replicas: 3, quorum: 3 });
      const rec = await waitEnded(c, id);
      assert.equal(rec.state, 'succeeded');
      const flaky = rec.replicas.find((r: { nodeId: string }) => r.nodeId === nodes[2]!.node.id);
      assert.equal(flaky.attempts, 2);
      assert.equal(flaky.agreed, true);
      assert.equal(rec.attempts, 4, "the task's attempts count every replica's");
    } finally {
      for (const n of nodes) await n.node.close();
      await c.close();
    }
  });

  test('cancelling a replicated task takes every replica back from its node', async () => {
    const c = await coordinator();
    const nodes: Replier[] = [];
    try {
      nodes.push(await Replier.join(c, 'a', honest), await Replier.join(c, 'b', honest));
      for (const n of nodes) n.mode = 'hold';
      const id = await submit(c, { replicas: 2 });
      await until(() => nodes.every((n) => n.held.length === 1), 5_000, 'both replicas leased');
      const api = apiClient(c.url);
      const res = await api(`/v1/tasks/${id}/cancel`, { method: 'POST', json: { reason: 'not needed' } });
      assert.equal(res.body.state, 'cancelled');
      assert.ok(res.body.replicas.every((r: { state: string }) => r.state === 'cancelled'));
      for (const n of nodes) assert.equal((await n.node.next('task.cancel')).taskId, id);
      assert.equal(c.scheduler.leases.size, 0);
    } finally {
      for (const n of nodes) await n.node.close();
      await c.close();
    }
  });

  test('replica fields are checked at submit', async () => {
    const c = await coordinator();
    try {
      const api = apiClient(c.url);
      const bad = async (extra: Record<string, unknown>, kind = 'agent') => {
        const payload = kind === 'agent' ? { agent: 'hello' } : { model: 'm', adapterName: 'a', dataset: '{}', lora: { rank: 2, alpha: 4, targetModules: ['q_proj'] }, steps: 1 };
        const res = await api('/v1/tasks', { method: 'POST', json: { kind, payload, ...extra } });
        assert.equal(res.status, 400, JSON.stringify(extra));
        assert.equal(res.body.error.code, 'SCHEMA_VIOLATION');
      };
      await bad({ replicas: 3, quorum: 4 });
      await bad({ replicas: 4, maxReplicas: 3 });
      await bad({ replicas: 6 });
      await bad({ replicas: 2 }, 'train');
    } finally {
      await c.close();
    }
  });

  test('a journal written before replicas and reputation opens, and takes replicated tasks', () => {
    const path = join(tmp.dir, 'old.db');
    // The tasks table as the coordinator wrote it before this change (no replication column, no replica tables).
    const old = new Database(path);
    old.exec(`CREATE TABLE tasks (
      seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, state TEXT NOT NULL,
      priority INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL, run_after INTEGER NOT NULL,
      deadline INTEGER, lease_id TEXT, node_id TEXT, idempotency_key TEXT UNIQUE, spec_hash TEXT, tenant TEXT, webhook TEXT,
      module_hash TEXT, module_size INTEGER, model TEXT, payload TEXT NOT NULL, labels TEXT, result TEXT, error TEXT,
      verdict TEXT, verdict_reason TEXT, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, finished_at INTEGER)`);
    old
      .prepare(`INSERT INTO tasks (id, kind, state, priority, max_attempts, run_after, payload, created_at, updated_at, lease_id, node_id, attempts)
        VALUES ('tsk_old', 'agent', 'leased', 5, 3, 0, '{"agent":"x"}', 1, 1, 'lse_1', 'nod_1', 1)`)
      .run();
    old.close();
    const j = new Journal(path);
    try {
      const t = j.getTask('tsk_old' as TaskId)!;
      assert.equal(t.state, 'queued', 'the old leased task was requeued on open');
      assert.equal(t.replication, null);
      const [out] = j.insertTasks([
        {
          id: 'tsk_new' as TaskId, kind: 'agent', priority: 5, maxAttempts: 3, deadline: null, idempotencyKey: null, specHash: null, tenant: null,
          webhook: null, moduleHash: null, moduleSize: null, model: null, payload: { agent: 'x' }, labels: null,
          replication: { replicas: 2, quorum: 2, maxReplicas: 3 },
        },
      ]);
      assert.equal(out!.created, true);
      assert.equal(j.getTask('tsk_new' as TaskId)!.replicas!.length, 2);
      assert.equal(j.readyReplicas(Date.now(), 10).length, 2);
      assert.equal(j.reputation('nod_1'), null);
    } finally {
      j.close();
    }
  });
});
