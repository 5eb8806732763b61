/**
 * End to end with worker/model: the generated tiny model, its tokenizer and chat template, a
 * conversation dataset cut into batches, LoRA training on the engine (worker/training's loop), the
 * adapter saved in the PEFT layout and loaded back onto the GPU.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { buildTinyModel } from '../../tools/tiny-model';
import { loadAdapter, loadTokenizer, makeBatches, saveAdapter, tokenizeConversations } from '../model';
import { GpuContext } from './context';
import { LlamaModel } from './llama';
import { GpuLoraAdapter } from './lora';
import { createNodeGpuContext } from './node-gpu';
import { meanLoss, parseConversations, runLoraTraining } from '../training';

let ctx: GpuContext;
before(async () => {
  ctx = await createNodeGpuContext();
});
after(() => ctx.destroy());

const DATA = [
  { q: 'What colour is the sky?', a: 'The sky is blue.' },
  { q: 'What colour is grass?', a: 'Grass is green.' },
  { q: 'Name a fruit.', a: 'An apple.' },
  { q: 'Say hello.', a: 'Hello there.' },
]
  .map(({ q, a }) => JSON.stringify({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: a }] }))
  .join('\n');

it('tiny model + dataset → LoRA training lowers the loss → PEFT files → adapter reloaded gives the trained loss', async () => {
  const tiny = buildTinyModel({ seed: 11 });
  const tok = await loadTokenizer(async (name) => {
    const f = tiny.files.get(name);
    if (!f) throw new Error(`no ${name}`);
    return f;
  });
  const examples = tokenizeConversations(tok, parseConversations(DATA));
  const batches = makeBatches(examples, { seqLen: 40, batchSize: 2, padId: tiny.config.padTokenId ?? 0 });
  assert.equal(batches.length, 2);

  const model = await LlamaModel.load(ctx, tiny.config, tiny.weights);
  const run = await runLoraTraining({
    model,
    data: { train: batches },
    lora: { rank: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj'], seed: 1 },
    steps: 6,
    lr: 2e-2,
    gradAccumulation: 2,
  });
  const first = run.trainLossBefore!;
  const last = run.trainLossAfter!;
  assert.ok(last < 0.8 * first, `loss ${first} → ${last}`);

  // The PEFT files, loaded back onto the GPU, give the loss the trained adapter gave, and other logits than the base.
  const files = saveAdapter({ ...run.adapter, baseModel: 'tiny', baseFingerprint: 'test' }, tiny.config);
  const loaded = loadAdapter(files, tiny.config);
  const again = GpuLoraAdapter.fromPairs(ctx, tiny.config, loaded.settings, loaded.weights);
  const probe = [Array.from(batches[0]!.inputIds.slice(0, 40))];
  const base = await model.forward(probe);
  model.setAdapter(again);
  const reloaded = await meanLoss(model, batches);
  assert.ok(Math.abs(reloaded - last) < 1e-6, `reloaded adapter's loss ${reloaded}, trained ${last}`);
  const got = await model.forward(probe);
  let diff = 0;
  for (let i = 0; i < got.length; i++) diff = Math.max(diff, Math.abs(got[i]! - base[i]!));
  assert.ok(diff > 1e-3, `the reloaded adapter changes the logits (max |Δ| ${diff})`);
  model.release();
  again.release();
});
