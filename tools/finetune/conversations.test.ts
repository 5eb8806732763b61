/**
 * LoRA on the generated tiny Llama over a small Q/A set with distinctive answers, through the same
 * `finetune()` the CLI runs: the training loss at least halves, greedy generation reproduces answers
 * the base could not produce, the PEFT files reload to the logits of an independent reference
 * (tools/tiny-model's referenceForward with the adapter), and adapters switch on one loaded base.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, it } from 'node:test';
import { referenceForward } from '../tiny-model';
import { GpuLoraAdapter, LlamaModel, type GpuContext } from '../../worker/engine';
import { createNodeGpuContext } from '../../worker/node';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, LINEAR_MODULES, loadAdapter, loadModelFolder, type LoadedModel, type LoraAdapter } from '../../worker/model';
import { DEMO_QA, qaJsonl } from './demo-data';
import { writeDemo } from './demo';
import { finetune } from './finetune';
import { DEFAULT_OPTIONS, type FinetuneOptions } from './options';

// Six pairs whose conversations fit in 36 positions, one full batch: 24 steps learn them all here.
const PAIRS = [0, 2, 5, 7, 8, 9].map((i) => DEMO_QA[i]!);

let dir = '';
let ctx: GpuContext;
let base: LoadedModel;
let modelDir = '';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'finetune-qa-'));
  const files = await writeDemo(dir);
  modelDir = files.model;
  await writeFile(files.data, qaJsonl(PAIRS));
  ctx = await createNodeGpuContext();
  base = await loadModelFolder((name) => readFile(join(modelDir, name)));
});

after(async () => {
  ctx?.destroy();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function options(out: string, data: string, overrides: Partial<FinetuneOptions> = {}): FinetuneOptions {
  return {
    ...DEFAULT_OPTIONS,
    model: modelDir,
    data,
    out,
    targets: [...LINEAR_MODULES],
    steps: 24,
    lr: 1.2e-2,
    batch: PAIRS.length,
    seq: 36,
    evalFraction: 0,
    evalEvery: 0,
    maxGradNorm: 0,
    ...overrides,
  };
}

async function readAdapter(out: string): Promise<LoraAdapter> {
  return loadAdapter(
    { configJson: await readFile(join(out, ADAPTER_CONFIG_FILE), 'utf8'), safetensors: await readFile(join(out, ADAPTER_WEIGHTS_FILE)) },
    base.config,
    base.fingerprint,
  );
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

async function answer(model: LlamaModel, question: string): Promise<string> {
  const prompt = base.tokenizer.encode(base.tokenizer.applyChatTemplate([{ role: 'user', content: question }], { addGenerationPrompt: true }));
  const ids = await model.generate(prompt, { maxNewTokens: 12 });
  return base.tokenizer.decode(ids, { skipSpecialTokens: true }).trim();
}

it('LoRA on a Q/A set halves the loss, makes greedy generation give the trained answers, reloads exactly and switches on one base', async () => {
  const out = join(dir, 'adapter-qa');
  const summary = await finetune(options(out, join(dir, 'data.jsonl')), { ctx });
  assert.ok(summary.trainLossAfter <= 0.5 * summary.trainLossBefore, `loss ${summary.trainLossBefore} → ${summary.trainLossAfter}`);

  const model = await LlamaModel.load(ctx, base.config, base.weights);
  const saved = await readAdapter(out);
  const tuned = GpuLoraAdapter.fromPairs(ctx, base.config, saved.settings, saved.weights);
  try {
    let learned = 0;
    for (const { question, answer: want } of PAIRS) {
      model.setAdapter(null);
      const before = await answer(model, question);
      assert.ok(!before.startsWith(want), `the base already answers ${JSON.stringify(want)}`);
      model.setAdapter(tuned);
      if ((await answer(model, question)) === want) learned++;
    }
    assert.ok(learned >= PAIRS.length - 1, `only ${learned} of ${PAIRS.length} answers were learned`);

    // The reloaded PEFT adapter on the engine equals the plain-TS reference with the same adapter.
    const probe = [base.tokenizer.encode(base.tokenizer.applyChatTemplate([{ role: 'user', content: PAIRS[0]!.question }], { addGenerationPrompt: true }))];
    const want = referenceForward(base.config, base.weights, { inputIds: probe, lora: saved }).logits;
    const withTuned = await model.forward(probe);
    assert.ok(maxDiff(withTuned, want) <= 1e-4, `engine vs reference with the adapter: ${maxDiff(withTuned, want)}`);

    // A second adapter (a few steps on other answers) on the same loaded base: switching needs no reload.
    const other = join(dir, 'adapter-other');
    const otherData = join(dir, 'other.jsonl');
    await writeFile(otherData, qaJsonl(PAIRS.map((p) => ({ question: p.question, answer: 'Nobody knows.' }))));
    await finetune(options(other, otherData, { steps: 4, targets: ['q_proj', 'v_proj'], rank: 4, alpha: 8 }), { ctx });
    const second = await readAdapter(other);
    const otherAd = GpuLoraAdapter.fromPairs(ctx, base.config, second.settings, second.weights);
    model.setAdapter(null);
    const plain = await model.forward(probe);
    model.setAdapter(otherAd);
    const withOther = await model.forward(probe);
    assert.ok(maxDiff(withOther, want) > 1e-3 && maxDiff(withOther, plain) > 1e-4, 'the second adapter gives other logits');
    assert.ok(maxDiff(withOther, referenceForward(base.config, base.weights, { inputIds: probe, lora: second }).logits) <= 1e-4);
    model.setAdapter(tuned);
    assert.deepEqual(await model.forward(probe), withTuned);
    model.setAdapter(null);
    assert.deepEqual(await model.forward(probe), plain);
    assert.ok(maxDiff(plain, referenceForward(base.config, base.weights, { inputIds: probe }).logits) <= 1e-4);
    otherAd.release();
  } finally {
    tuned.release();
    model.release();
  }
});
