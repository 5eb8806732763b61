/**
 * Checkpoints and resume in headless Chromium: two node pages train on the engine (WebGPU on SwiftShader); the page
 * that holds a train task is closed after its first checkpoint reached the coordinator, and the task goes on from
 * that checkpoint on the other page and ends with every loss, and the adapter, of an uninterrupted run of the same
 * seed. At most one checkpoint interval is lost. Each checkpoint also went to the profile's IndexedDB first: the other page
 * (same profile) resumes from that copy, the one the coordinator names, without downloading it.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { TaskRecord, TrainResult } from '../shared';
import type { LaunchedNodes } from '../scripts/nodes';
import { makeTinyModel } from '../tools/tiny-model';
import { E2ePool } from './pool';
import { untilCheckpoint } from './tasks';

const EVERY = 5;
const STEPS = 40;
const DATASET = Array.from({ length: 6 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `What follows ${i}?` }, { role: 'assistant', content: `${i + 1} follows ${i}.` }] })).join('\n');

let pool: E2ePool;
let url = '';
let nodes: LaunchedNodes;

before(async () => {
  pool = await E2ePool.start('e2e-train-resume-', { nodeGraceMs: 300, retryBaseMs: 1 }, async (dir) => {
    await makeTinyModel({ seed: 4, dir: join(dir, 'models', 'tiny-llama') });
    return { modelsDir: join(dir, 'models') };
  });
  url = pool.url;
  nodes = await pool.join({ count: 2, query: { backends: 'engine', workers: '1' }, log: (l) => process.stderr.write(`${l}\n`) });
});

after(async () => {
  await pool?.close();
});

async function submit(adapterName: string): Promise<string> {
  const res = await fetch(`${url}/v1/tasks`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      kind: 'train',
      maxAttempts: 3,
      payload: { model: 'tiny-llama', adapterName, dataset: DATASET, lora: { rank: 4, alpha: 8, dropout: 0.1, targetModules: ['q_proj', 'v_proj', 'down_proj'] }, steps: STEPS, checkpointEvery: EVERY, learningRate: 1e-2, batchSize: 2, seqLen: 32, seed: 7 },
    }),
  });
  const sub = (await res.json()) as { id?: string };
  assert.equal(res.status, 202, JSON.stringify(sub));
  return sub.id!;
}

async function record(id: string): Promise<TaskRecord> {
  return (await (await fetch(`${url}/v1/tasks/${id}`)).json()) as TaskRecord;
}

async function ended(id: string): Promise<TaskRecord> {
  for (let i = 0; i < 10; i++) {
    const rec = (await (await fetch(`${url}/v1/tasks/${id}/wait?timeoutMs=30000`)).json()) as TaskRecord;
    if (['succeeded', 'failed', 'dead', 'cancelled'].includes(rec.state)) return rec;
  }
  throw new Error(`task ${id} did not end within 5 minutes`);
}

test("the training node's page is closed after a checkpoint: the task finishes on the other node from it, as an uninterrupted run", async () => {
  const id = await submit('resumed');
  // The first checkpoint, and the last step the first node reported by then.
  const seen = await untilCheckpoint(url, id);
  const { checkpointStep } = seen;
  assert.equal(checkpointStep, EVERY, 'the first checkpoint came after the first interval');
  const holder = (await record(id)).nodeId!;
  const page = nodes.pages[nodes.nodeIds.indexOf(holder)]!;
  await page.close(); // the node vanishes mid-run
  // What it did after that checkpoint and before it vanished is lost (at most what it reported since).
  const lastStep = Math.max(seen.lastStep, checkpointStep);

  const rec = await ended(id);
  assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
  assert.equal(rec.attempts, 2);
  assert.notEqual(rec.nodeId, holder, 'it finished on the other node');
  const resumed = rec.result as TrainResult;
  // The closed page wrote each checkpoint to the profile's IndexedDB before sending it: the other page of the same
  // profile resumed from that copy (same SHA-256 as the coordinator's) without downloading it, and dropped it at the end.
  const other = nodes.pages[nodes.nodeIds.indexOf(rec.nodeId!)]!;
  const counts = await other.evaluate(() => window.__execNode!.stats().checkpoints);
  assert.deepEqual(counts && { fromStore: counts.fromStore, fetched: counts.fetched }, { fromStore: 1, fetched: 0 }, JSON.stringify(counts));
  const left = await other.evaluate(async (taskId) => {
    const db = await new Promise<IDBDatabase>((resolve, reject) => {
      const r = indexedDB.open('exec-node-checkpoints', 1);
      r.onsuccess = () => resolve(r.result);
      r.onerror = () => reject(r.error);
    });
    const got = await new Promise<unknown>((resolve) => {
      const r = db.transaction('checkpoints').objectStore('checkpoints').get(taskId);
      r.onsuccess = () => resolve(r.result ?? null);
    });
    db.close();
    return got;
  }, id);
  assert.equal(left, null, 'a finished run leaves no checkpoint in IndexedDB');
  assert.ok(resumed.resumedFrom !== undefined && resumed.resumedFrom >= checkpointStep, `resumed from ${resumed.resumedFrom}`);
  assert.ok(lastStep - resumed.resumedFrom! <= EVERY, `lost ${lastStep - resumed.resumedFrom!} steps (at most one interval, ${EVERY})`);

  const whole = (await ended(await submit('whole'))).result as TrainResult;
  assert.deepEqual(resumed.trainLoss, whole.trainLoss, 'every step loss as the uninterrupted run');
  assert.equal(resumed.trainLossAfter, whole.trainLossAfter);
  const bytes = async (name: string) => Buffer.from(await (await fetch(`${url}/v1/adapters/tiny-llama/${name}/adapter_model.safetensors`)).arrayBuffer());
  assert.ok((await bytes('resumed')).equals(await bytes('whole')), 'the same adapter, byte for byte');
});
