/**
 * Agents that call the node's model (issue 7 item 6), on the coordinator's side and on a node without JSPI:
 * the agent_model import is taken only where the version declares it at upload (and shown in its record);
 * such a version's tasks name a model the coordinator knows (a plain agent may not name one); the router sends
 * them only to nodes that advertise `jspi` (with the inference runtime), preferring the node that holds the
 * model; a task no such node can take waits with a reason that says JSPI, then fails NO_CAPABLE_NODE at its
 * deadline; and a node without JSPI refuses such an assignment with AGENT_JSPI_UNSUPPORTED (retryable), before
 * it fetches anything. The run itself (JSPI in Chromium) is e2e/model-agents.e2e.test.ts.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Assignment, type ErrorInfo, type TaskRecord } from '../shared';
import { makeBuiltinModels } from '../tools/tiny-model/builtin';
import { AgentRunner } from '../web/node/agent-runner';
import type { Lease, RunOutcome } from '../web/node/runner';
import { AgentPool } from '../worker/agents/pool';
import { sameThreadWorker } from '../worker/agents/testing/node-workers';
import { createCoordinator, type Coordinator } from './index';
import { apiClient, tempDir, TestNode, until, wat, HELLO_WAT, type ApiAnswer } from './testing';

const ROOT = join(import.meta.dirname, '..');
const CLASSIFY = readFileSync(join(ROOT, 'agents/dist/programs/classify.wasm'));
const MODEL = 'tiny-llama';
const DECLARED = encodeURIComponent(JSON.stringify({ imports: ['agent_model'], description: 'classifies lines with the node model' }));

describe('agents that call the node model, on the coordinator', () => {
  const tmp = tempDir('model-agents-');
  let c: Coordinator;
  let api: (path: string, init?: RequestInit & { json?: unknown }) => Promise<ApiAnswer>;
  const nodes: TestNode[] = [];

  before(async () => {
    await makeBuiltinModels(join(tmp.dir, 'models'), { only: [MODEL] });
    c = await createCoordinator({ dbPath: join(tmp.dir, 'coordinator.db'), modelsDir: join(tmp.dir, 'models') });
    api = apiClient(c.url);
  });

  after(async () => {
    for (const n of nodes) await n.close();
    await c.close();
    tmp.cleanup();
  });

  const put = (name: string, bytes: Uint8Array, query = ''): Promise<ApiAnswer> =>
    api(`/v1/agents/${name}/versions/1${query}`, { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: bytes as Uint8Array<ArrayBuffer> });
  const submit = (spec: unknown): Promise<ApiAnswer> => api('/v1/tasks', { method: 'POST', json: spec });
  const task = async (id: string): Promise<TaskRecord> => (await api(`/v1/tasks/${id}`)).body as TaskRecord;
  const connect = async (opts: Parameters<typeof TestNode.connect>[1]): Promise<TestNode> => {
    const n = await TestNode.connect(c.url, opts);
    nodes.push(n);
    return n;
  };

  test('the import is taken only where the version declares it, and its record shows it', async () => {
    const undeclared = await put('classify-undeclared', CLASSIFY);
    assert.equal(undeclared.status, 422, JSON.stringify(undeclared.body));
    assert.equal(undeclared.body.error.code, 'WASM_FORBIDDEN_IMPORT');
    assert.match(undeclared.body.error.message, /"imports":\["agent_model"\]/);
    const bad = await put('classify-bad', CLASSIFY, `?config=${encodeURIComponent(JSON.stringify({ imports: ['env'] }))}`);
    assert.equal(bad.status, 400, JSON.stringify(bad.body));
    assert.equal(bad.body.error.code, 'SCHEMA_VIOLATION');

    const ok = await put('classify', CLASSIFY, `?config=${DECLARED}`);
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    assert.deepEqual(ok.body.config.imports, ['agent_model']);
    const rec = await api('/v1/agents/classify');
    assert.deepEqual(rec.body.versions[0].config.imports, ['agent_model']);
    assert.equal((await put('hello', await wat(HELLO_WAT))).status, 201);
  });

  test('its tasks name a known model; a plain agent may not name one', async () => {
    const refused = async (payload: Record<string, unknown>, code: string, path: RegExp): Promise<void> => {
      const r = await submit({ kind: 'agent', payload });
      assert.equal(r.body.error?.code, code, JSON.stringify(r.body));
      assert.match(r.body.error.message, path);
    };
    await refused({ agent: 'classify', stdin: { text: 'a\n' } }, 'AGENT_PAYLOAD_INVALID', /\/payload\/model: classify@1 imports agent_model/);
    await refused({ agent: 'hello', model: MODEL }, 'AGENT_PAYLOAD_INVALID', /does not import agent_model/);
    await refused({ agent: 'hello', adapter: 'style' }, 'AGENT_PAYLOAD_INVALID', /\/payload\/adapter/);
    await refused({ agent: 'hello', modelCalls: 3 }, 'AGENT_PAYLOAD_INVALID', /\/payload\/modelCalls/);
    await refused({ agent: 'classify', model: 'no-such-model' }, 'MODEL_NOT_FOUND', /\/payload\/model/);
    await refused({ agent: 'classify', model: MODEL, adapter: 'no-such-adapter' }, 'ADAPTER_NOT_FOUND', /\/payload\/adapter/);
    const r = await submit({ kind: 'agent', payload: { agent: 'classify', model: MODEL, modelCalls: 0 } });
    assert.equal(r.body.error?.code, 'SCHEMA_VIOLATION', 'modelCalls is at least 1');
  });

  test('without a node that has JSPI the task waits, saying why, then fails NO_CAPABLE_NODE', async () => {
    // An agent node with the inference runtime but no JSPI (Node, an old browser): plain agents run there, model agents do not.
    const plain = await connect({ name: 'no-jspi', kinds: ['agent', 'generate'], sequences: 4, inferenceModels: [{ name: MODEL, backend: 'engine', device: 'webgpu', loaded: true }] });
    const r = await submit({ kind: 'agent', deadline: Date.now() + 1500, payload: { agent: 'classify', model: MODEL, stdin: { text: 'a\n' } } });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const id = r.body.id as string;
    const waiting = await until(async () => {
      const t = await task(id);
      return t.waiting?.reason === 'no_capable_node' ? t.waiting : undefined;
    }, 5000, 'the reason');
    assert.match(waiting.message, /JavaScript Promise Integration/);
    const ended = await until(async () => {
      const t = await task(id);
      return t.state === 'failed' || t.state === 'dead' ? t : undefined;
    }, 10_000, 'the deadline');
    assert.equal(ended.error?.code, 'NO_CAPABLE_NODE', JSON.stringify(ended.error));
    // Plain agents still go to that node.
    const h = await submit({ kind: 'agent', payload: { agent: 'hello' } });
    const [a] = await plain.assignments(1);
    assert.equal(a!.taskId, h.body.id);
    plain.succeed([a!]);
    await plain.close();
  });

  test('the router sends them only to nodes with JSPI, preferring the node that holds the model loaded', async () => {
    const noJspi = await connect({ name: 'no-jspi', kinds: ['agent', 'generate'], sequences: 4, inferenceModels: [{ name: MODEL, backend: 'engine', device: 'webgpu', loaded: true }] });
    const stored = await connect({ name: 'jspi-stored', kinds: ['agent', 'generate'], jspi: true, sequences: 4, models: [MODEL], inferenceModels: [] });
    const loaded = await connect({ name: 'jspi-loaded', kinds: ['agent', 'generate'], jspi: true, sequences: 4, models: [MODEL], inferenceModels: [{ name: MODEL, backend: 'engine', device: 'webgpu', loaded: true }] });
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await submit({ kind: 'agent', payload: { agent: 'classify', model: MODEL, stdin: { text: `line ${i}\n` } } });
      assert.equal(r.status, 202, JSON.stringify(r.body));
      ids.push(r.body.id as string);
    }
    const got = await loaded.assignments(3);
    assert.deepEqual(got.map((a) => a.taskId).sort(), [...ids].sort());
    assert.equal(got[0]!.payload && (got[0]!.payload as { model?: string }).model, MODEL);
    assert.equal(noJspi.inbox.filter((m) => m.type === 'task.assign').length, 0);
    assert.equal(stored.inbox.filter((m) => m.type === 'task.assign').length, 0);
    loaded.succeed(got, () => ({ exitCode: 0, output: { results: [], calls: 1 }, stderr: '', fuelUsed: 1, durationMs: 1, memoryBytes: 65536, model: { calls: 1, failed: 0, promptTokens: 5, completionTokens: 3, waitMs: 2 } }));
    const done = await until(async () => {
      const t = await task(ids[0]!);
      return t.state === 'succeeded' ? t : undefined;
    });
    assert.deepEqual((done.result as { model?: unknown }).model, { calls: 1, failed: 0, promptTokens: 5, completionTokens: 3, waitMs: 2 });
  });
});

describe('a node without JSPI', () => {
  test('refuses an agent that calls the model with AGENT_JSPI_UNSUPPORTED (retryable) before fetching its module', async () => {
    const runtime = new AgentPool({ size: 1, createWorker: sameThreadWorker });
    const ended: RunOutcome[] = [];
    let fetched = 0;
    const runner = new AgentRunner(
      runtime,
      { finish: (_l, o) => ended.push(o), progress: () => undefined, part: () => false, capabilitiesChanged: () => undefined },
      'http://127.0.0.1:9',
      async () => {
        fetched++;
        throw new Error('not fetched');
      },
    );
    try {
      assert.equal(runner.modelAgents, false);
      const a = { taskId: 't1', leaseId: 'l1', kind: 'agent', attempt: 1, deadline: null, module: { sha256: 'a'.repeat(64), size: 1 }, payload: { agent: 'classify', model: MODEL } } as unknown as Assignment;
      const lease = { taskId: 't1', leaseId: 'l1', kind: 'agent', name: 'classify', running: false, cancelled: null, ended: false } as unknown as Lease;
      runner.start(a, lease);
      await until(() => ended.length === 1);
      const o = ended[0]!;
      assert.equal(o.ok, false);
      const error = (o as { error: ErrorInfo }).error;
      assert.equal(error.code, 'AGENT_JSPI_UNSUPPORTED');
      assert.match(error.message, /inference runtime/);
      assert.equal(fetched, 0);
    } finally {
      await runtime.close();
    }
  });
});
