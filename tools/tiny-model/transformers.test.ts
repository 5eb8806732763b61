import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoModelForCausalLM, AutoTokenizer, env, pipeline, type Tensor } from '@huggingface/transformers';
import { buildTinyModel, IM_END_ID, EOS_ID } from './generate';
import { makeTinyModel } from './make';
import { referenceForward, type KvCache } from './reference';

const SEED = 21;

/** Greedy decoding with the reference forward and its KV cache. */
function referenceGreedy(prompt: number[], maxNew: number): number[] {
  const { config, weights } = buildTinyModel({ seed: SEED });
  const V = config.vocabSize;
  const out: number[] = [];
  let past: KvCache | undefined;
  let input = prompt;
  for (let step = 0; step < maxNew; step++) {
    const r = referenceForward(config, weights, past ? { inputIds: [input], past } : { inputIds: [input] });
    const last = r.logits.subarray((input.length - 1) * V, input.length * V);
    let best = 0;
    for (let i = 1; i < V; i++) if ((last[i] as number) > (last[best] as number)) best = i;
    out.push(best);
    if (best === IM_END_ID || best === EOS_ID) break;
    past = r.present;
    input = [best];
  }
  return out;
}

test('transformers.js loads the folder offline; generate matches the reference greedy decode', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'tiny-tjs-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  await makeTinyModel({ seed: SEED, dir: join(root, 'tiny') });
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = root;
  env.cacheDir = join(root, '.cache');

  const tok = await AutoTokenizer.from_pretrained('tiny');
  const text = 'The quick brown fox jumps over the lazy dog. héllo';
  const ids = tok.encode(text);
  assert.equal(tok.decode(ids), text);
  const prompt = tok.apply_chat_template([{ role: 'user', content: 'Hello there' }], { tokenize: false, add_generation_prompt: true });
  assert.equal(prompt, '<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n');

  const model = await AutoModelForCausalLM.from_pretrained('tiny', { dtype: 'fp32', device: 'cpu' });
  t.after(() => model.dispose());
  const inputs = tok(prompt as string);
  const promptIds = (inputs.input_ids as Tensor).tolist()[0] as bigint[];
  const out = (await model.generate({ ...inputs, max_new_tokens: 12, do_sample: false })) as Tensor;
  const generated = (out.tolist()[0] as bigint[]).slice(promptIds.length).map(Number);
  assert.ok(generated.length > 0);
  assert.deepEqual(generated, referenceGreedy(promptIds.map(Number), 12));

  const gen = await pipeline('text-generation', 'tiny', { dtype: 'fp32', device: 'cpu' });
  t.after(() => gen.dispose());
  const res = (await gen('The quick brown', { max_new_tokens: 4, do_sample: false })) as { generated_text: string }[];
  assert.ok(res[0]?.generated_text.startsWith('The quick brown'));
});
