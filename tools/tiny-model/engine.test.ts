/**
 * The generated Qwen2 folder (q/k/v biases, tied head), read back from disk through worker/model
 * like any Hugging Face folder, runs on the WebGPU engine (Dawn in Node) with logits equal to the
 * float64 reference within 1e-4; KV-cached greedy generation equals the reference token for token.
 * The Gemma folder is refused with MODEL_UNSUPPORTED: it is for the transformers.js path.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppError } from '../../shared';
import { LlamaModel, type GpuContext } from '../../worker/engine';
import { referenceForward, referenceGreedy } from '../../worker/engine/reference';
import { loadModelFolder } from '../../worker/model';
import { createNodeGpuContext } from '../../worker/node';
import { makeTinyModel } from './make';

let ctx: GpuContext;
let root = '';
before(async () => {
  root = await mkdtemp(join(tmpdir(), 'tiny-engine-'));
  await makeTinyModel({ seed: 2, arch: 'qwen2', dir: join(root, 'qwen2') });
  await makeTinyModel({ seed: 3, arch: 'gemma', dir: join(root, 'gemma') });
  ctx = await createNodeGpuContext();
});
after(async () => {
  ctx.destroy();
  await rm(root, { recursive: true, force: true });
});

const reader = (dir: string) => async (name: string) => new Uint8Array(await readFile(join(dir, name)));

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('tiny-qwen2 on the engine: logits equal the reference (≤ 1e-4); greedy tokens equal', async () => {
  const m = await loadModelFolder(reader(join(root, 'qwen2')));
  assert.equal(m.config.architecture, 'Qwen2ForCausalLM');
  assert.ok(m.config.attentionBias && m.config.tieWordEmbeddings);
  assert.ok(m.weights.has('model.layers.0.self_attn.q_proj.bias'));
  const model = await LlamaModel.load(ctx, m.config, m.weights);
  try {
    const inputIds = [
      [3, 40, 41, 300, 7, 99, 4],
      [3, 5, 6, 7, 8, 9, 10],
    ];
    const want = referenceForward(m.config, m.weights, { inputIds }).logits;
    const d = maxDiff(await model.forward(inputIds), want);
    assert.ok(d <= 1e-4, `engine vs reference: ${d}`);
    // The biases matter: without them the reference moves well beyond the tolerance.
    const noBias = new Map([...m.weights].filter(([n]) => !n.endsWith('.bias')));
    assert.ok(maxDiff(referenceForward({ ...m.config, attentionBias: false }, noBias, { inputIds }).logits, want) > 1e-2);

    const prompt = m.tokenizer.encode(m.tokenizer.applyChatTemplate([{ role: 'user', content: 'Hello there' }], { addGenerationPrompt: true }));
    const got = await model.generate(prompt, { maxNewTokens: 10, stopTokens: [] });
    assert.deepEqual(got, referenceGreedy(m.config, m.weights, prompt, 10));
  } finally {
    model.release();
  }
});

test('tiny-gemma is refused by the engine with MODEL_UNSUPPORTED', async () => {
  await assert.rejects(loadModelFolder(reader(join(root, 'gemma'))), (e: unknown) => e instanceof AppError && e.code === 'MODEL_UNSUPPORTED');
});
