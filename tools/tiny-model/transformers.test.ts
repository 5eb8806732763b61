/**
 * transformers.js (onnxruntime-node) loads each generated folder offline, and its greedy
 * generation equals the float64 CPU reference on the same weights, token for token.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoModelForCausalLM, AutoTokenizer, env, pipeline, type Tensor } from '@huggingface/transformers';
import { referenceGreedy } from '../../worker/engine/reference';
import { buildTinyModel, IM_END_ID, EOS_ID, type TinyArch } from './generate';
import { makeTinyModel } from './make';

const SEEDS: Record<TinyArch, number> = { llama: 21, qwen2: 22, gemma: 23 };
let root = '';

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'tiny-tjs-'));
  for (const [arch, seed] of Object.entries(SEEDS) as [TinyArch, number][]) await makeTinyModel({ seed, arch, dir: join(root, arch) });
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = root;
  env.cacheDir = join(root, '.cache');
});
after(() => rm(root, { recursive: true, force: true }));

const PROMPTS = [[{ role: 'user', content: 'Hello there' }], [{ role: 'user', content: 'Tell me about the robot who paints flowers.' }]];

for (const arch of Object.keys(SEEDS) as TinyArch[]) {
  test(`${arch}: transformers.js loads the folder offline; generate equals the reference greedy decode`, async (t) => {
    const { config, weights } = buildTinyModel({ seed: SEEDS[arch], arch });
    const tok = await AutoTokenizer.from_pretrained(arch);
    const model = await AutoModelForCausalLM.from_pretrained(arch, { dtype: 'fp32', device: 'cpu' });
    t.after(() => model.dispose());
    let total = 0;
    for (const messages of PROMPTS) {
      const prompt = tok.apply_chat_template(messages, { tokenize: false, add_generation_prompt: true }) as string;
      const inputs = tok(prompt);
      const promptIds = ((inputs.input_ids as Tensor).tolist()[0] as bigint[]).map(Number);
      const out = (await model.generate({ ...inputs, max_new_tokens: 12, do_sample: false })) as Tensor;
      const generated = (out.tolist()[0] as bigint[]).slice(promptIds.length).map(Number);
      assert.ok(generated.length > 0);
      assert.deepEqual(generated, referenceGreedy(config, weights, promptIds, 12, [IM_END_ID, EOS_ID]));
      total += generated.length;
    }
    assert.ok(total >= 4, `only ${total} tokens generated: the comparison is too short to mean much`);
  });
}

test('llama: the tokenizer round-trips and renders the ChatML template; the pipeline runs', async (t) => {
  const tok = await AutoTokenizer.from_pretrained('llama');
  const text = 'The quick brown fox jumps over the lazy dog. héllo';
  assert.equal(tok.decode(tok.encode(text)), text);
  const prompt = tok.apply_chat_template([{ role: 'user', content: 'Hello there' }], { tokenize: false, add_generation_prompt: true });
  assert.equal(prompt, '<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n');
  const gen = await pipeline('text-generation', 'llama', { dtype: 'fp32', device: 'cpu' });
  t.after(() => gen.dispose());
  const res = (await gen('The quick brown', { max_new_tokens: 4, do_sample: false })) as { generated_text: string }[];
  assert.ok(res[0]?.generated_text.startsWith('The quick brown'));
});
