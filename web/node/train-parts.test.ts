/**
 * A train lease run by the node client in Node with the real trainer (the engine on WebGPU through SwiftShader)
 * against a real coordinator: an adapter larger than the connection's message limit leaves the node in
 * `task.part` messages and is stored whole in the registry.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { WebSocket } from 'ws';
import { createCoordinator, type Coordinator } from '../../server';
import type { TaskRecord, TrainResult } from '../../shared';
import { makeBuiltinModels } from '../../tools/tiny-model/builtin';
import { AgentPool } from '../../worker';
import type { GpuContext } from '../../worker/engine';
import { engineBackend, InferenceService } from '../../worker/inference';
import { NodeThreadWorker, createNodeGpuContext, folderSource } from '../../worker/node';
import { NodeClient, type SocketLike } from '.';

let dir = '';
let coordinator: Coordinator;
let pool: AgentPool;
let svc: InferenceService;
let ctx: GpuContext;
let client: NodeClient;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'train-parts-'));
  await makeBuiltinModels(join(dir, 'models'), { only: ['tiny-llama'] });
  coordinator = await createCoordinator({ dbPath: join(dir, 'c.db'), modelsDir: join(dir, 'models'), heartbeatIntervalMs: 200 });
  ctx = await createNodeGpuContext();
  svc = new InferenceService({ source: folderSource(join(dir, 'models')), backends: [engineBackend({ gpu: async () => ctx })] });
  pool = new AgentPool({ size: 1, createWorker: () => new NodeThreadWorker() });
  await pool.ready();
  const info = { vendor: 'google', architecture: 'swiftshader', description: 'SwiftShader (Node)', isFallbackAdapter: true, features: [], maxBufferSize: 1 << 28, maxStorageBufferBindingSize: 1 << 27 };
  client = new NodeClient({
    url: coordinator.url,
    runtime: pool,
    inference: svc,
    gpu: { info, limits: {}, reason: null },
    name: 'train-parts',
    // A 16 KiB message limit: the trained adapter (tens of KiB) must go in parts.
    maxMessageBytes: 16 << 10,
    createSocket: (u: string): SocketLike => new WebSocket(u) as unknown as SocketLike,
    storage: null,
  });
  await client.start();
});

after(async () => {
  client?.close();
  await pool?.close();
  await svc?.close();
  ctx?.destroy();
  await coordinator?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('an adapter over the message limit goes in task.part messages and lands whole in the registry', async () => {
  const dataset = Array.from({ length: 4 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `question ${i}` }, { role: 'assistant', content: `answer ${i}` }] })).join('\n');
  const res = await fetch(`${coordinator.url}/v1/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ kind: 'train', maxAttempts: 1, payload: { model: 'tiny-llama', adapterName: 'parts', dataset, lora: { rank: 16, alpha: 32, targetModules: ['q_proj', 'v_proj'] }, steps: 2 } }),
  });
  assert.equal(res.status, 202);
  const { id } = (await res.json()) as { id: string };
  const rec = (await (await fetch(`${coordinator.url}/v1/tasks/${id}/wait?timeoutMs=120000`)).json()) as TaskRecord;
  assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
  const ref = (rec.result as TrainResult).adapter as { id: string };
  assert.equal(ref.id, 'tiny-llama:parts@1');
  const meta = (await (await fetch(`${coordinator.url}/v1/adapters/tiny-llama/parts@1`)).json()) as { sha256: string; size: number };
  assert.ok(meta.size > 16 << 10, `the adapter (${meta.size} bytes) is over the node's message limit`);
  const file = new Uint8Array(await (await fetch(`${coordinator.url}/v1/adapters/tiny-llama/parts@1/adapter_model.safetensors`)).arrayBuffer());
  assert.equal(file.length, meta.size);
  assert.equal(createHash('sha256').update(file).digest('hex'), meta.sha256, 'stored whole');
});
