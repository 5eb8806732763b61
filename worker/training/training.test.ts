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
import { loadAdapter, loadTokenizer, ModelTokenizer, saveAdapter } from '../model';
import { createNodeGpuContext } from '../node';
import { benchTraining, checkLoraSettings, decodeCheckpoint, encodeCheckpoint, runLoraTraining, type LoraTrainingOptions, type TrainingCheckpoint, type TrainingStep } from '.';

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

  it('resumes from a checkpoint (through its bytes) and ends as the uninterrupted run: the same losses and weights; another run\'s checkpoint is refused', async () => {
    const opts = { steps: 6, evalEvery: 2, lora: { rank: 4, alpha: 8, dropout: 0.1, targets: ['q_proj', 'v_proj'] as const }, trainLoss: true } as const;
    const whole = await runLoraTraining(options({ ...opts, lora: { ...opts.lora, targets: [...opts.lora.targets] } }));
    let saved: TrainingCheckpoint | null = null;
    await runLoraTraining(options({ ...opts, lora: { ...opts.lora, targets: [...opts.lora.targets] }, checkpointEvery: 3, onCheckpoint: (c) => void (saved ??= c) }));
    assert.equal(saved!.step, 3);
    const bytes = encodeCheckpoint(saved!.resume, 'run-1');
    const resume = decodeCheckpoint(bytes, 'run-1');
    const steps: number[] = [];
    const resumed = await runLoraTraining(options({ ...opts, lora: { ...opts.lora, targets: [...opts.lora.targets] }, resume, onStep: (s) => void steps.push(s.step) }));
    assert.deepEqual(steps, [4, 5, 6], 'it goes on from step 4');
    assert.deepEqual(resumed.stepLosses, whole.stepLosses, 'every step loss as uninterrupted (the first three kept from the checkpoint)');
    assert.equal(resumed.trainLossAfter, whole.trainLossAfter);
    assert.equal(resumed.trainLossBefore, whole.trainLossBefore);
    assert.deepEqual(resumed.evalLosses, whole.evalLosses);
    assert.equal(resumed.trainTokens, whole.trainTokens);
    for (const [key, p] of whole.adapter.weights) {
      assert.deepEqual(resumed.adapter.weights.get(key)!.a, p.a, key);
      assert.deepEqual(resumed.adapter.weights.get(key)!.b, p.b, key);
    }
    assert.throws(() => decodeCheckpoint(bytes, 'run-2'), (e: unknown) => e instanceof AppError && e.code === 'TRAINING_CHECKPOINT_INVALID' && /another run/.test(e.message));
    const broken = Uint8Array.from(bytes.subarray(0, 40));
    assert.throws(() => decodeCheckpoint(broken, 'run-1'), (e: unknown) => e instanceof AppError && e.code === 'TRAINING_CHECKPOINT_INVALID');
    await assert.rejects(
      runLoraTraining(options({ ...opts, lora: { rank: 2, alpha: 4, targets: ['q_proj', 'v_proj'] }, resume })),
      (e: unknown) => e instanceof AppError && e.code === 'TRAINING_CHECKPOINT_INVALID',
      'a checkpoint of another rank does not fit',
    );
    assert.equal(model.adapter, null);
  });

  it('stops with TRAINING_DIVERGED when the loss turns NaN or explodes, after the checkpoints before it, and releases its adapter', async () => {
    // An infinite learning rate makes the first update's weights non-finite: step 2's loss is NaN.
    const steps: number[] = [];
    const checkpoints: number[] = [];
    await assert.rejects(
      runLoraTraining(options({ lr: Number.POSITIVE_INFINITY, steps: 4, gradAccumulation: 1, checkpointEvery: 1, onStep: (s) => void steps.push(s.step), onCheckpoint: (c) => void checkpoints.push(c.step), trainLoss: false })),
      (err: unknown) => {
        assert.ok(err instanceof AppError);
        assert.equal(err.code, 'TRAINING_DIVERGED');
        assert.equal((err.details as { step: number }).step, 2);
        assert.match(err.message, /lower the learning rate/i);
        return true;
      },
    );
    assert.deepEqual(steps, [1], 'the step that diverged is not reported as a step');
    assert.deepEqual(checkpoints, [1], 'the checkpoint of the last good step was taken');
    assert.equal(model.adapter, null);
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

  it('reports what became of every conversation, and warns of an empty held-out split', async () => {
    const longLine = JSON.stringify({
      messages: [
        { role: 'system', content: 'Answer briefly.' },
        ...[1, 2, 3].flatMap((i) => [
          { role: 'user', content: `What comes after ${i}?` },
          { role: 'assistant', content: `${i + 1} comes after ${i}.` },
        ]),
      ],
    });
    const r = await runLoraTraining(options({ steps: 1, gradAccumulation: 1, trainLoss: false, data: { jsonl: `${JSONL}\n${longLine}`, tokenizer, seqLen: 64, batchSize: 2 } }));
    assert.ok(r.dataset);
    const d = r.dataset;
    assert.deepEqual([d.conversations, d.kept, d.split, d.truncated, d.dropped], [6, 5, 1, 0, 0]);
    assert.equal(d.trainRows, 5 + 3); // 130 tokens in rows of 65: one exchange and the system prompt per row
    assert.equal(r.trainBatches, 4);
    assert.deepEqual(r.warnings, []);
    const lone = await runLoraTraining(options({ steps: 1, gradAccumulation: 1, trainLoss: false, data: { jsonl: JSONL.split('\n')[0]!, tokenizer, seqLen: 40, batchSize: 2, evalFraction: 0.2 } }));
    assert.equal(lone.dataset?.heldOutEmpty, true);
    assert.equal(lone.evalLossAfter, null);
    assert.match(lone.warnings.join('\n'), /held-out split is empty/);
  });

  it('refuses LoRA settings and data the model cannot train on, with coded errors, before touching the GPU', async () => {
    const code = async (o: Partial<LoraTrainingOptions>): Promise<string> => {
      try {
        await runLoraTraining(options(o));
      } catch (err) {
        assert.ok(err instanceof AppError, String(err));
        return err.code;
      }
      return 'resolved';
    };
    const live = ctx.liveBuffers;
    // v_proj maps 64 → 32 in the tiny model, so 32 is the largest rank over q_proj and v_proj.
    assert.equal(await code({ lora: { rank: 33, alpha: 8, targets: ['q_proj', 'v_proj'] } }), 'LORA_SETTINGS_INVALID');
    assert.equal(await code({ lora: { rank: 0, alpha: 8, targets: ['q_proj'] } }), 'LORA_SETTINGS_INVALID');
    assert.equal(await code({ lora: { rank: 4, alpha: 8, targets: ['c_attn' as never] } }), 'LORA_SETTINGS_INVALID');
    assert.equal(await code({ lora: { rank: 4, alpha: 8, targets: [] } }), 'LORA_SETTINGS_INVALID');
    try {
      checkLoraSettings(tiny.config, { rank: 33, targets: ['q_proj', 'v_proj'] });
      assert.fail('expected LORA_SETTINGS_INVALID');
    } catch (err) {
      assert.ok(err instanceof AppError);
      assert.equal(err.details?.maxRank, 32);
      assert.deepEqual(err.details?.dims, { q_proj: { in: 64, out: 64 }, v_proj: { in: 64, out: 32 } });
    }
    assert.deepEqual(checkLoraSettings(tiny.config, { rank: 32, targets: ['q_proj', 'v_proj'] }), ['q_proj', 'v_proj']);
    const { chat_template: _t, ...noTemplate } = JSON.parse(new TextDecoder().decode(tiny.files.get('tokenizer_config.json'))) as Record<string, unknown>;
    const bare = new ModelTokenizer(new TextDecoder().decode(tiny.files.get('tokenizer.json')), noTemplate);
    assert.equal(await code({ data: { jsonl: JSONL, tokenizer: bare, seqLen: 40, batchSize: 2 } }), 'CHAT_TEMPLATE_MISSING');
    assert.equal(await code({ data: { jsonl: JSONL, tokenizer, seqLen: 4, batchSize: 2 } }), 'DATASET_NO_TARGETS');
    assert.equal(await code({ data: { jsonl: `${JSONL}\n{"messages":7}`, tokenizer, seqLen: 40, batchSize: 2 } }), 'DATASET_INVALID');
    assert.equal(ctx.liveBuffers, live);
  });

  it('times steps through the loop for the benchmark (benchTraining) and frees what it allocates', async () => {
    const live = ctx.liveBuffers;
    const t = await benchTraining(ctx, { steps: 1, seqLen: 8 });
    assert.ok(t.tokensPerSecond > 0 && t.msPerStep > 0 && Number.isFinite(t.firstLoss) && Number.isFinite(t.lastLoss));
    assert.equal(t.steps, 1);
    assert.equal(ctx.liveBuffers, live);
  });
});
