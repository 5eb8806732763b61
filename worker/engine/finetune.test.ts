/**
 * End to end with worker/model: the generated tiny model, its tokenizer and chat template, a
 * conversation dataset cut into batches, LoRA training on the engine, the adapter saved in the PEFT
 * layout and loaded back onto the GPU.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { buildTinyModel } from '../../tools/tiny-model';
import { loadAdapter, loadTokenizer, makeBatches, parseConversations, saveAdapter, tokenizeConversations } from '../model';
import { GpuContext } from './context';
import { LlamaModel } from './llama';
import { GpuLoraAdapter, LoraTrainer } from './lora';
import { createNodeGpuContext } from './node-gpu';

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

it('tiny model + dataset → LoRA training lowers the loss → PEFT files → adapter reloaded gives the same logits', async () => {
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
  const adapter = GpuLoraAdapter.create(ctx, tiny.config, { rank: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj'], seed: 1 });
  const trainer = new LoraTrainer(model, adapter, { lr: 2e-2, accumulationSteps: 2 });
  const lossOf = async (): Promise<number> => ((await model.evalLoss(batches[0]!)) + (await model.evalLoss(batches[1]!))) / 2;
  const first = await lossOf();
  for (let epoch = 0; epoch < 6; epoch++) for (const b of batches) await trainer.step(b);
  const last = await lossOf();
  assert.ok(last < 0.8 * first, `loss ${first} → ${last}`);

  const files = saveAdapter({ settings: adapter.settings, baseModel: 'tiny', baseFingerprint: 'test', weights: await adapter.toPairs() }, tiny.config);
  const loaded = loadAdapter(files, tiny.config);
  const again = GpuLoraAdapter.fromPairs(ctx, tiny.config, loaded.settings, loaded.weights);
  const probe = [Array.from(batches[0]!.inputIds.slice(0, 40))];
  const want = await model.forward(probe);
  model.setAdapter(again);
  const got = await model.forward(probe);
  let diff = 0;
  for (let i = 0; i < got.length; i++) diff = Math.max(diff, Math.abs(got[i]! - want[i]!));
  assert.ok(diff < 1e-6, `reloaded adapter differs by ${diff}`);
  model.release();
  adapter.release();
  again.release();
});
