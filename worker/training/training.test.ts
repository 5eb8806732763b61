/**
 * The training loop on Node's WebGPU (Dawn on SwiftShader) and the generated tiny Llama: the loss
 * falls on a tiny conversation set, evals and checkpoints come when asked, the same seed gives the
 * same losses (another seed other ones), an abort stops the run at the next step with CANCELLED,
 * and the benchmark's step timer runs through the same loop.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { buildTinyModel } from '../../tools/tiny-model';
import { AppError } from '../../shared';
import { LlamaModel, type GpuContext } from '../engine';
import { loadAdapter, loadTokenizer, saveAdapter, type ModelTokenizer } from '../model';
import { createNodeGpuContext } from '../node';
import { benchTraining, runLoraTraining, type LoraTrainingOptions, type TrainingCheckpoint, type TrainingStep } from '.';

const JSONL = [
  { q: 'What colour is the sky?', a: 'The sky is blue.' },
  { q: 'What colour is grass?', a: 'Grass is green.' },
  { q: 'Name a fruit.', a: 'An apple.' },
  { q: 'Say hello.', a: 'Hello there.' },
  { q: 'Where does the fox sleep?', a: 'Under the red bridge.' },
]
  .map(({ q, a }) => JSON.stringify({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: a }] }))
  .join('\n');

const tiny = buildTinyModel({ seed: 11 });
let ctx: GpuContext;
let tokenizer: ModelTokenizer;
let model: LlamaModel;

before(async () => {
  ctx = await createNodeGpuContext();
  tokenizer = await loadTokenizer(async (name) => {
    const f = tiny.files.get(name);
    if (!f) throw new Error(`no ${name}`);
    return f;
  });
  model = await LlamaModel.load(ctx, tiny.config, tiny.weights);
});

after(() => {
  model?.release();
  ctx?.destroy();
});

function options(overrides: Partial<LoraTrainingOptions> = {}): LoraTrainingOptions {
  return {
    model,
    data: { jsonl: JSONL, tokenizer, seqLen: 40, batchSize: 2, evalFraction: 0.2 },
    lora: { rank: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj'] },
    steps: 6,
    lr: 2e-2,
    gradAccumulation: 2,
    seed: 3,
    ...overrides,
  };
}

describe('runLoraTraining', () => {
  it('lowers the loss, reports every step, evaluates and checkpoints when asked, and hands back a PEFT-ready adapter', async () => {
    const steps: TrainingStep[] = [];
    const checkpoints: TrainingCheckpoint[] = [];
    const r = await runLoraTraining(
      options({ evalEvery: 2, checkpointEvery: 4, onStep: (s) => void steps.push(s), onCheckpoint: (c) => void checkpoints.push(c) }),
    );
    assert.equal(r.steps, 6);
    assert.equal(r.microSteps, 12);
    assert.equal(r.trainBatches, 2); // 4 conversations in batches of 2; 1 held out
    assert.equal(r.heldOutBatches, 1);
    assert.ok(r.trainLossBefore !== null && r.trainLossAfter !== null);
    assert.ok(r.trainLossAfter < 0.8 * r.trainLossBefore, `train loss ${r.trainLossBefore} → ${r.trainLossAfter}`);
    assert.ok(r.lastStepLoss < r.firstStepLoss, `step losses ${r.stepLosses.join(', ')}`);
    assert.equal(r.stepLosses.length, 6);
    assert.deepEqual(
      r.evalLosses.map((e) => e.step),
      [2, 4, 6],
    );
    assert.equal(r.evalLossAfter, r.evalLosses[2]!.loss);
    assert.ok(r.evalLossBefore !== null && Number.isFinite(r.evalLossBefore));
    assert.ok(r.tokensPerSec > 0 && r.trainTokens === 12 * 2 * 40);

    assert.deepEqual(
      steps.map((s) => [s.step, s.total, s.evaluated]),
      [1, 2, 3, 4, 5, 6].map((i) => [i, 6, i % 2 === 0]),
    );
    assert.deepEqual(
      steps.map((s) => s.loss),
      r.stepLosses,
    );
    assert.equal(steps[0]!.evalLoss, r.evalLossBefore); // the latest eval loss: before training until the first eval
    assert.equal(steps[1]!.evalLoss, r.evalLosses[0]!.loss);

    assert.deepEqual(
      checkpoints.map((c) => c.step),
      [4],
    );
    assert.equal(checkpoints[0]!.weights.size, tiny.config.numLayers * 5);
    assert.equal(model.adapter, null, 'the model is left as it was found');

    // Ready for saveAdapter; loads back with the same weights.
    const files = saveAdapter({ ...r.adapter, baseModel: 'tiny', baseFingerprint: 'test' }, tiny.config);
    const loaded = loadAdapter(files, tiny.config);
    assert.equal(loaded.settings.r, 4);
    assert.equal(r.adapter.parameters, [...r.adapter.weights.values()].reduce((n, p) => n + p.a.length + p.b.length, 0));
    for (const [key, p] of r.adapter.weights) assert.deepEqual(loaded.weights.get(key)?.b, p.b);
    assert.ok([...r.adapter.weights.values()].some((p) => p.b.some((v) => v !== 0)));
  });

  it('gives the same losses for the same seed, and other losses for another seed', async () => {
    const run = (seed: number): Promise<number[]> => runLoraTraining(options({ seed, steps: 3, lora: { rank: 4, alpha: 8, dropout: 0.1, targets: ['q_proj', 'v_proj'] }, trainLoss: false })).then((r) => r.stepLosses);
    const a = await run(7);
    const b = await run(7);
    const c = await run(8);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a, c);
  });

  it('stops at the next step with CANCELLED when the signal aborts, and releases its adapter', async () => {
    const controller = new AbortController();
    const seen: number[] = [];
    await assert.rejects(
      runLoraTraining(
        options({
          steps: 50,
          signal: controller.signal,
          onStep: (s) => {
            seen.push(s.step);
            if (s.step === 2) controller.abort();
          },
        }),
      ),
      (err: unknown) => err instanceof AppError && err.code === 'CANCELLED' && err.details?.step === 2 && err.details.steps === 50,
    );
    assert.deepEqual(seen, [1, 2]);
    assert.equal(model.adapter, null);

    const already = new AbortController();
    already.abort();
    await assert.rejects(runLoraTraining(options({ signal: already.signal })), (err: unknown) => err instanceof AppError && err.code === 'CANCELLED');
  });

  it('refuses a dataset with nothing to train on and bad settings, with coded errors', async () => {
    await assert.rejects(runLoraTraining(options({ data: { train: [] } })), (err: unknown) => err instanceof AppError && err.code === 'DATASET_INVALID');
    await assert.rejects(runLoraTraining(options({ steps: 0 })), (err: unknown) => err instanceof AppError && err.code === 'INVALID_ARGUMENT');
    await assert.rejects(runLoraTraining(options({ gradAccumulation: 1.5 })), (err: unknown) => err instanceof AppError && err.code === 'INVALID_ARGUMENT');
  });

  it('times steps through the loop for the benchmark (benchTraining) and frees what it allocates', async () => {
    const live = ctx.liveBuffers;
    const t = await benchTraining(ctx, { steps: 1, seqLen: 8 });
    assert.ok(t.tokensPerSecond > 0 && t.msPerStep > 0 && Number.isFinite(t.firstLoss) && Number.isFinite(t.lastLoss));
    assert.equal(t.steps, 1);
    assert.equal(ctx.liveBuffers, live);
  });
});
