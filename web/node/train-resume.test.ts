/**
 * Checkpoints and resume through the pool, in Node with the real trainer (the engine on WebGPU through
 * SwiftShader) and a real coordinator: the training node vanishes after a checkpoint, and the task goes on from it
 * on another node and ends with the same losses as an uninterrupted run of the same seed.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { WebSocket } from 'ws';
import { createCoordinator, type Coordinator } from '../../server';
import type { TaskId, TaskRecord, TrainResult } from '../../shared';
import { until } from '../../server/testing';
import { makeBuiltinModels } from '../../tools/tiny-model/builtin';
import { AgentPool } from '../../worker';
import type { GpuContext } from '../../worker/engine';
import { engineBackend, InferenceService } from '../../worker/inference';
import { NodeThreadWorker, createNodeGpuContext, folderSource } from '../../worker/node';
import { NodeClient, type SocketLike } from '.';

let dir = '';
let coordinator: Coordinator;
let ctx: GpuContext;
const closers: Array<() => Promise<void> | void> = [];

const info = { vendor: 'google', architecture: 'swiftshader', description: 'SwiftShader (Node)', isFallbackAdapter: true, features: [], maxBufferSize: 1 << 28, maxStorageBufferBindingSize: 1 << 27 };

/** A node with its own agent pool and trainer (the GPU context shared). */
async function node(name: string): Promise<{ client: NodeClient; svc: InferenceService }> {
  const svc = new InferenceService({ source: folderSource(join(dir, 'models')), backends: [engineBackend({ gpu: async () => ctx })] });
  const pool = new AgentPool({ size: 1, createWorker: () => new NodeThreadWorker() });
  await pool.ready();
  const client = new NodeClient({
    url: coordinator.url,
    runtime: pool,
    inference: svc,
    gpu: { info, limits: {}, reason: null },
    name,
    createSocket: (u: string): SocketLike => new WebSocket(u) as unknown as SocketLike,
    storage: null,
  });
  closers.push(async () => {
    client.close();
    await pool.close();
    await svc.close();
  });
  await client.start();
  return { client, svc };
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'train-resume-'));
  await makeBuiltinModels(join(dir, 'models'), { only: ['tiny-llama'] });
  coordinator = await createCoordinator({ dbPath: join(dir, 'c.db'), modelsDir: join(dir, 'models'), heartbeatIntervalMs: 200, nodeGraceMs: 300, retryBaseMs: 1 });
  ctx = await createNodeGpuContext();
});

after(async () => {
  for (const close of closers.reverse()) await close();
  await coordinator?.close();
  ctx?.destroy();
  rmSync(dir, { recursive: true, force: true });
});

const dataset = Array.from({ length: 8 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `what is ${i} plus one?` }, { role: 'assistant', content: `${i} plus one is ${i + 1}.` }] })).join('\n');
const spec = (adapterName: string) => ({
  kind: 'train',
  maxAttempts: 3,
  payload: { model: 'tiny-llama', adapterName, dataset, lora: { rank: 4, alpha: 8, dropout: 0.1, targetModules: ['q_proj', 'v_proj'] }, steps: 30, checkpointEvery: 5, seed: 9, learningRate: 0.01, batchSize: 2, evalFraction: 0.25, seqLen: 48 },
});

async function submit(body: unknown): Promise<TaskId> {
  const res = await fetch(`${coordinator.url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  assert.equal(res.status, 202, await res.clone().text());
  return ((await res.json()) as { id: TaskId }).id;
}

async function ended(id: TaskId): Promise<TaskRecord> {
  return (await (await fetch(`${coordinator.url}/v1/tasks/${id}/wait?timeoutMs=120000`)).json()) as TaskRecord;
}

test('the training node vanishes after a checkpoint: the task goes on from it on another node and ends as an uninterrupted run', async () => {
  const a = await node('trainer-a');
  const id = await submit(spec('resumed'));
  const cp = await until(() => coordinator.journal.checkpointOf(id) ?? undefined, 120_000, 'a checkpoint reached the coordinator');
  // The node vanishes: its socket gone, its run stopped; nothing more of it reaches the coordinator.
  a.client.close();
  a.svc.cancel(id, 'the node vanished');
  const got = (await fetch(`${coordinator.url}/v1/tasks/${id}/checkpoint`)).headers.get('x-checkpoint-step');
  assert.ok(Number(got) >= cp.step, 'GET /v1/tasks/:id/checkpoint serves the latest');
  await node('trainer-b');
  const rec = await ended(id);
  assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
  assert.equal(rec.attempts, 2, 'one more attempt, on the other node');
  const resumed = rec.result as TrainResult;
  assert.ok(resumed.resumedFrom !== undefined && resumed.resumedFrom >= cp.step && resumed.resumedFrom % 5 === 0, `resumed from ${resumed.resumedFrom}`);
  assert.equal(coordinator.journal.checkpointOf(id), null, 'its checkpoint is dropped once the adapter is stored');

  // The same run without the interruption, on the node that is left.
  const whole = (await ended(await submit(spec('whole')))).result as TrainResult;
  assert.equal(whole.resumedFrom, undefined);
  assert.deepEqual(resumed.trainLoss, whole.trainLoss, 'every step loss equal to the uninterrupted run');
  assert.equal(resumed.trainLossAfter, whole.trainLossAfter);
  assert.equal(resumed.evalLoss, whole.evalLoss);
  const bytes = async (name: string) => Buffer.from(await (await fetch(`${coordinator.url}/v1/adapters/tiny-llama/${name}/adapter_model.safetensors`)).arrayBuffer());
  assert.ok((await bytes('resumed')).equals(await bytes('whole')), 'the same adapter, byte for byte');
});

test('a checkpoint that does not resume (broken bytes left by a lying node) is set aside with a warning and the run starts over', async () => {
  // The node trains one task at a time: while it runs the first, the second waits, and gets a "checkpoint" first.
  const busy = await submit(spec('busy'));
  const id = await submit({ ...spec('fresh'), payload: { ...spec('fresh').payload, steps: 6, checkpointEvery: 0 } });
  assert.equal((await (await fetch(`${coordinator.url}/v1/tasks/${id}`)).json() as TaskRecord).state, 'queued');
  const junk = new TextEncoder().encode('not a checkpoint at all');
  coordinator.journal.putCheckpoint(id, 3, createHash('sha256').update(junk).digest('hex'), junk);
  assert.equal((await ended(busy)).state, 'succeeded');
  const rec = await ended(id);
  assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
  const r = rec.result as TrainResult;
  assert.equal(r.resumedFrom, undefined);
  assert.equal(r.trainLoss.length, 6, 'every step ran');
  assert.ok(r.warnings.some((w) => /could not be resumed .*started over/.test(w)), JSON.stringify(r.warnings));
});
