/**
 * LoRA fine-tuning as a pool service: a dataset uploaded once (`POST /v1/datasets`), a `train` task naming it,
 * run by a headless Chromium node on the engine (WebGPU on SwiftShader) with the tiny model from the
 * coordinator: every optimizer step streams as `loss` progress, the loss falls to under half, the adapter lands
 * in the registry as a version of the task's adapterName, and `generate` with it gives the trained answers that
 * the base does not. The node's page draws the run's loss curve (its canvas decoded: the line in its colour).
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { GenerateResult, TaskRecord, TrainResult, TrainedAdapterRef } from '../shared';
import type { LaunchedNodes } from '../scripts/nodes';
import { makeTinyModel } from '../tools/tiny-model';
import { countDrawn, countNear, decodePng } from './png';
import { E2ePool } from './pool';

const QA = [
  { q: 'What colour is the sky?', a: 'The sky is blue.' },
  { q: 'Where does the fox sleep?', a: 'Under the red bridge.' },
];
const DATASET = QA.map(({ q, a }) => JSON.stringify({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: a }] })).join('\n') + '\n';
const STEPS = 30;

let pool: E2ePool;
let url = '';
let nodes: LaunchedNodes;

before(async () => {
  pool = await E2ePool.start('e2e-training-', {}, async (dir) => {
    await makeTinyModel({ seed: 11, dir: join(dir, 'models', 'tiny-llama') });
    return { modelsDir: join(dir, 'models') };
  });
  url = pool.url;
  nodes = await pool.join({ count: 1, query: { backends: 'engine', workers: '1' }, log: (l) => process.stderr.write(`${l}\n`) });
});

after(async () => {
  await pool?.close();
});

async function submit(spec: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) });
  const sub = (await res.json()) as { id?: string };
  assert.equal(res.status, 202, JSON.stringify(sub));
  return sub.id!;
}

async function ended(id: string, minutes = 5): Promise<TaskRecord> {
  for (let i = 0; i < minutes * 2; i++) {
    const rec = (await (await fetch(`${url}/v1/tasks/${id}/wait?timeoutMs=30000`)).json()) as TaskRecord;
    if (['succeeded', 'failed', 'dead', 'cancelled'].includes(rec.state)) return rec;
  }
  throw new Error(`task ${id} did not end within ${minutes} minutes`);
}

async function generate(payload: Record<string, unknown>): Promise<GenerateResult> {
  const rec = await ended(await submit({ kind: 'generate', payload }));
  assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
  return rec.result as GenerateResult;
}

/** The `progress` events of a task's event stream, until its record. */
async function progressEvents(id: string): Promise<Array<{ kind: string; step: number; total: number; loss: number; tokensPerSec: number }>> {
  const res = await fetch(`${url}/v1/tasks/${id}/events`);
  const text = await res.text(); // the stream ends with the task's record
  return text
    .split('\n\n')
    .filter((block) => block.startsWith('event: progress\n'))
    .map((block) => (JSON.parse(block.slice(block.indexOf('data: ') + 6)) as { progress: { kind: string; step: number; total: number; loss: number; tokensPerSec: number } }).progress);
}

test('a train task over an uploaded dataset runs on a node: losses streamed, the loss halves, the adapter is registered and generate with it gives the trained answers', async () => {
  const up = await fetch(`${url}/v1/datasets`, { method: 'POST', headers: { 'content-type': 'application/x-ndjson' }, body: DATASET });
  const dataset = (await up.json()) as { id?: string; sha256?: string };
  assert.equal(up.status, 201, JSON.stringify(dataset));
  const ref = `sha256:${dataset.sha256}`;

  const before = await Promise.all(QA.map(({ q }) => generate({ model: 'tiny-llama', messages: [{ role: 'user', content: q }], maxNewTokens: 12 })));

  const id = await submit({
    kind: 'train',
    payload: {
      model: 'tiny-llama',
      adapterName: 'qa',
      dataset: ref,
      lora: { rank: 8, alpha: 16, targetModules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] },
      steps: STEPS,
      learningRate: 2e-2,
      batchSize: 2,
      seqLen: 40,
      seed: 3,
    },
  });
  const events = progressEvents(id);
  const rec = await ended(id);
  assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
  const r = rec.result as TrainResult;
  assert.equal(r.steps, STEPS);
  assert.equal(r.trainLoss.length, STEPS);
  assert.ok(r.trainLossBefore !== null && r.trainLossAfter !== null);
  assert.ok(r.trainLossAfter <= r.trainLossBefore / 2, `train loss ${r.trainLossBefore} → ${r.trainLossAfter}`);
  assert.ok(r.tokensPerSec > 0);

  // Every step came as progress, in order, with the losses the result keeps.
  const losses = (await events).filter((p) => p.kind === 'loss');
  assert.deepEqual(
    losses.map((p) => p.step),
    Array.from({ length: STEPS }, (_, i) => i + 1),
  );
  assert.deepEqual(
    losses.map((p) => p.loss),
    r.trainLoss,
  );

  // The adapter is a registry version of the task's adapterName for its model; the record keeps the reference, not the files.
  const adapter = r.adapter as TrainedAdapterRef;
  assert.equal(adapter.id, 'tiny-llama:qa@1');
  assert.equal((r.adapter as { safetensors?: string }).safetensors, undefined);
  const listed = (await (await fetch(`${url}/v1/adapters/tiny-llama/qa`)).json()) as { latest: number; versions: { version: number; size: number }[] };
  assert.equal(listed.latest, 1);
  assert.ok(listed.versions[0]!.size > 0);

  // The node's page drew the run: one point a step, the loss line in its colour below the legend (rows 18 on).
  const page = nodes.pages[0]!;
  const canvas = page.locator(`ops-chart[data-chart=training][data-task="${id}"] canvas`);
  const points = async (): Promise<number> => Number(await canvas.getAttribute('data-points', { timeout: 10_000 }));
  for (let i = 0; i < 50 && (await points()) < STEPS; i++) await new Promise((res) => setTimeout(res, 100));
  assert.equal(await points(), STEPS);
  // The run's end reaches the chart at the page's next render, which may come after the last step's point.
  const label = async (): Promise<string> => (await canvas.getAttribute('aria-label')) ?? '';
  for (let i = 0; i < 50 && !/· done,/.test(await label()); i++) await new Promise((res) => setTimeout(res, 100));
  assert.match(await label(), /^Training qa on tiny-llama · done, 30 steps: loss \d/);
  const img = decodePng(await canvas.screenshot());
  assert.equal(countDrawn(img).background, '#ffffff');
  assert.ok(countNear(img, '#2563eb', { fromRow: 18 }) > 150, 'the loss line is drawn');

  // generate with it: the trained answers, which the base did not give.
  for (const [i, { q, a }] of QA.entries()) {
    const tuned = await generate({ model: 'tiny-llama', adapter: 'qa', messages: [{ role: 'user', content: q }], maxNewTokens: 12 });
    const want = a.slice(0, -1); // the tiny model may stop before the full stop
    assert.ok(tuned.text.startsWith(want), `${q} → ${JSON.stringify(tuned.text)}, want ${JSON.stringify(a)}`);
    assert.ok(!before[i]!.text.startsWith(want), `the base already answered ${JSON.stringify(before[i]!.text)}`);
  }
});
