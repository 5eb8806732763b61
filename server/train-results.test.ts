/**
 * train results from nodes, which may lie: the adapter files a result carries are stored as a registry version
 * of the task's own adapterName for its own model before the result is journaled, and the record keeps the
 * version's reference, not the files; a result without files, with files that are not base64 or that do not fit
 * the base fails the attempt with the registry's code and stores nothing. A node holds one train lease at a time,
 * and a node token reads the dataset a train task names.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { createHash } from 'node:crypto';
import { PART_BYTES, type Assignment, type TaskRecord, type TrainResult } from '../shared';
import { makeBuiltinModels } from '../tools/tiny-model/builtin';
import { Auth, createCoordinator, type Coordinator } from './index';
import { TestNode, apiClient, tempDir, trainedAdapterFiles, until } from './testing';

const BASE = 'tiny-llama';
const tmp = tempDir();
let c: Coordinator;
let baseDir = '';
let node: TestNode;
const api = () => apiClient(c.url);

const spec = (adapterName: string) => ({
  kind: 'train',
  maxAttempts: 1,
  payload: { model: BASE, adapterName, dataset: '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}', lora: { rank: 2, alpha: 4, targetModules: ['q_proj'] }, steps: 1 },
});

const summary = { steps: 1, trainLoss: [1.5], trainLossBefore: 2, trainLossAfter: 1, evalLossBefore: null, evalLoss: null, trainTokens: 10, tokensPerSec: 5, durationMs: 20, dataset: null, warnings: [] };

const adapterFiles = () => trainedAdapterFiles(baseDir, BASE);

async function ended(id: string): Promise<TaskRecord> {
  return (await api()(`/v1/tasks/${id}/wait?timeoutMs=5000`)).body as TaskRecord;
}

/** Submits one train task, takes its lease on the test node, answers it with `result`, and gives the record. */
async function answered(adapterName: string, result: unknown): Promise<TaskRecord> {
  const sub = await api()('/v1/tasks', { method: 'POST', json: spec(adapterName) });
  assert.equal(sub.status, 202, JSON.stringify(sub.body));
  const [a] = (await node.assignments(1)) as [Assignment];
  assert.equal(a.taskId, (sub.body as { id: string }).id);
  node.succeed([a], () => result);
  return ended(a.taskId);
}

before(async () => {
  baseDir = (await makeBuiltinModels(join(tmp.dir, 'models'), { only: [BASE] }))[0]!.dir;
  c = await createCoordinator({ dbPath: join(tmp.dir, 'c.db'), modelsDir: join(tmp.dir, 'models') });
  node = await TestNode.connect(c.url, { kinds: ['agent', 'train'], webgpu: true });
});

after(async () => {
  await node?.close();
  await c?.close();
  tmp.cleanup();
});

test('a result without adapter files, with files that are not base64 or that do not fit the base fails ADAPTER_INVALID and stores nothing', async () => {
  const files = await adapterFiles();
  const cases: Array<[string, unknown]> = [
    ['none', { ...summary, adapterName: 'none' }],
    ['notb64', { ...summary, adapterName: 'notb64', adapter: { config: files.configJson, safetensors: '!!not base64!!' } }],
    ['lying', { ...summary, adapterName: 'lying', adapter: { config: files.configJson, safetensors: Buffer.from('{"x":1}garbage').toString('base64') } }],
    ['noconfig', { ...summary, adapterName: 'noconfig', adapter: { safetensors: Buffer.from(files.safetensors).toString('base64') } }],
  ];
  for (const [name, result] of cases) {
    const rec = await answered(name, result);
    assert.equal(rec.state, 'failed', `${name}: ${JSON.stringify(rec)}`);
    assert.match(rec.error!.code, /^ADAPTER_(INVALID|MISMATCH)$/, name);
    assert.equal((await api()(`/v1/adapters/${BASE}/${name}`)).status, 404, name);
  }
});

test("a good result is stored under the task's adapterName (not the name the node sent) and the record keeps the reference", async () => {
  const files = await adapterFiles();
  const rec = await answered('tuned', { ...summary, adapterName: 'evil', adapter: { config: files.configJson, safetensors: Buffer.from(files.safetensors).toString('base64') } });
  assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
  const r = rec.result as TrainResult;
  assert.equal(r.adapterName, 'tuned');
  assert.deepEqual(r.adapter, { id: `${BASE}:tuned@1`, base: BASE, name: 'tuned', version: 1 });
  assert.ok(!JSON.stringify(rec).includes(Buffer.from(files.safetensors).toString('base64').slice(0, 64)), 'the files are not in the record');
  assert.equal((await api()(`/v1/adapters/${BASE}/evil`)).status, 404);
  const stored = await api()(`/v1/adapters/${BASE}/tuned/adapter_model.safetensors`);
  assert.equal(stored.status, 200);
  // A second run of the same name is the next version.
  const again = await answered('tuned', { ...summary, adapterName: 'tuned', adapter: { config: files.configJson, safetensors: Buffer.from(files.safetensors).toString('base64') } });
  assert.equal((again.result as TrainResult).adapter && ((again.result as TrainResult).adapter as { version: number }).version, 2);
});

test('a node holds one train lease at a time, whatever its maxConcurrent', async () => {
  const ids: string[] = [];
  for (const name of ['one', 'two']) ids.push(((await api()('/v1/tasks', { method: 'POST', json: spec(name) })).body as { id: string }).id);
  const [first] = (await node.assignments(1)) as [Assignment];
  await assert.rejects(node.next('task.assign', 500), /no task.assign/);
  node.fail([first], 'CANCELLED', 'test');
  const [second] = (await node.assignments(1)) as [Assignment];
  assert.notEqual(second.taskId, first.taskId);
  assert.deepEqual([first.taskId, second.taskId].sort(), [...ids].sort());
  node.fail([second], 'CANCELLED', 'test');
  await until(async () => ((await ended(second.taskId)).state === 'failed'));
});

test('with auth on, a node token reads the content of any tenant\'s dataset; other reads keep to the tenant', async () => {
  const planner = 'p'.repeat(32);
  const nodeToken = 'n'.repeat(32);
  const other = 'o'.repeat(32);
  const auth = Auth.fromConfig({
    tokens: [
      { token: planner, roles: ['planner'], tenant: 'acme' },
      { token: nodeToken, roles: ['node'] },
      { token: other, roles: ['planner'], tenant: 'other' },
    ],
  });
  const sec = await createCoordinator({ dbPath: join(tmp.dir, 'auth.db'), auth });
  try {
    const line = '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}\n';
    const up = await apiClient(sec.url, planner)('/v1/datasets', { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: line });
    assert.equal(up.status, 201, JSON.stringify(up.body));
    const sha = (up.body as { sha256: string }).sha256;
    const byNode = await fetch(`${sec.url}/v1/datasets/${sha}/content`, { headers: { authorization: `Bearer ${nodeToken}` } });
    assert.equal(byNode.status, 200);
    assert.equal(await byNode.text(), line);
    const byOther = await apiClient(sec.url, other)(`/v1/datasets/${sha}/content`);
    assert.equal(byOther.status, 404);
    const nodeList = await apiClient(sec.url, nodeToken)('/v1/datasets');
    assert.equal(nodeList.status, 403);
  } finally {
    await sec.close();
  }
});

test('an adapter too large for one socket message comes in task.part messages before its result: stored whole; missing, lying or disordered parts are refused with codes', async () => {
  // Rank 9216 on q_proj of the tiny model: about 9.4 MB, three parts of PART_BYTES.
  const big = await trainedAdapterFiles(baseDir, BASE, 9216);
  assert.ok(big.safetensors.length > 2 * PART_BYTES, `${big.safetensors.length} bytes`);
  const sha = createHash('sha256').update(big.safetensors).digest('hex');
  const ref = { part: 'adapter_model.safetensors', bytes: big.safetensors.length, sha256: sha };
  const sendParts = (a: Assignment, bytes: Uint8Array, order = (n: number) => Array.from({ length: n }, (_, i) => i)): void => {
    const n = Math.ceil(bytes.length / PART_BYTES);
    for (const i of order(n)) {
      const offset = i * PART_BYTES;
      node.send({ type: 'task.part', taskId: a.taskId, leaseId: a.leaseId, name: 'adapter_model.safetensors', total: bytes.length, offset, data: Buffer.from(bytes.subarray(offset, offset + PART_BYTES)).toString('base64') });
    }
  };
  const take = async (name: string): Promise<Assignment> => {
    const sub = await api()('/v1/tasks', { method: 'POST', json: spec(name) });
    assert.equal(sub.status, 202);
    const [a] = (await node.assignments(1)) as [Assignment];
    return a;
  };

  const a = await take('large');
  sendParts(a, big.safetensors);
  node.succeed([a], () => ({ ...summary, adapter: { config: big.configJson, safetensors: ref } }));
  const rec = await ended(a.taskId);
  assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
  assert.equal(((rec.result as TrainResult).adapter as { id: string }).id, `${BASE}:large@1`);
  const stored = await fetch(`${c.url}/v1/adapters/${BASE}/large/adapter_model.safetensors`);
  assert.ok(Buffer.from(await stored.arrayBuffer()).equals(Buffer.from(big.safetensors)), 'the registry holds the whole file');

  // The result names parts that never came: retryable, the attempt fails (and with one attempt the task is dead).
  const b = await take('missing');
  node.succeed([b], () => ({ ...summary, adapter: { config: big.configJson, safetensors: ref } }));
  const missing = await ended(b.taskId);
  assert.equal(missing.error?.code, 'RESULT_PARTS_INCOMPLETE');

  // Parts whose bytes are not what the result states.
  const d = await take('lying');
  const other = Uint8Array.from(big.safetensors);
  other[other.length - 1] ^= 1;
  sendParts(d, other);
  node.succeed([d], () => ({ ...summary, adapter: { config: big.configJson, safetensors: ref } }));
  assert.equal((await ended(d.taskId)).error?.code, 'ADAPTER_INVALID');

  // Out of order: PROTOCOL_ERROR at once, and what came is dropped.
  const e = await take('disordered');
  sendParts(e, big.safetensors, (n) => Array.from({ length: n }, (_, i) => n - 1 - i));
  const refused = await node.next('error', 5_000);
  assert.equal(refused.error.code, 'PROTOCOL_ERROR');
  assert.match(refused.error.message, /parts go in order/);
  node.succeed([e], () => ({ ...summary, adapter: { config: big.configJson, safetensors: ref } }));
  assert.equal((await ended(e.taskId)).error?.code, 'RESULT_PARTS_INCOMPLETE');
  const list = (await api()('/v1/adapters')).body.adapters.map((x: { name: string }) => x.name);
  assert.ok(list.includes('large') && !list.includes('missing') && !list.includes('lying') && !list.includes('disordered'));
});
