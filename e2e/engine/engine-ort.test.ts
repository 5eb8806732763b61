/**
 * Two independent implementations of the generated tiny Llama agree: the WebGPU engine (Dawn in
 * Node) on model.safetensors and onnxruntime-node on onnx/model.onnx, fp32, max |Δlogit| ≤ 1e-4 —
 * a batch of full sequences and a KV-cached continuation.
 */
import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import * as ort from 'onnxruntime-node';
import { buildTinyModel } from '../../tools/tiny-model';
import { LlamaModel, type GpuContext } from '../../worker/engine';
import { createNodeGpuContext } from '../../worker/node';
import { loadModelFolder } from '../../worker/model';

const TOL = 1e-4;
const tiny = buildTinyModel({ seed: 23 });
const cfg = tiny.config;
let ctx: GpuContext;

before(async () => {
  ctx = await createNodeGpuContext();
});
after(() => ctx?.destroy());

function ortFeeds(ids: number[][]): Record<string, ort.Tensor> {
  const B = ids.length;
  const T = ids[0]!.length;
  const i64 = (rows: number[][]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [B, T]);
  const feeds: Record<string, ort.Tensor> = {
    input_ids: i64(ids),
    attention_mask: i64(ids.map((r) => r.map(() => 1))),
    position_ids: i64(ids.map((r) => r.map((_, t) => t))),
  };
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const kind of ['key', 'value']) {
      feeds[`past_key_values.${l}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [B, cfg.numKvHeads, 0, cfg.headDim]);
    }
  }
  return feeds;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

it('engine logits equal onnxruntime-node on the same tiny Llama (≤ 1e-4), batch forward and KV-cached generation', async () => {
  // The engine reads the model folder the way a node does (safetensors + tokenizer), ORT the ONNX bytes.
  const loaded = await loadModelFolder(async (name) => {
    const f = tiny.files.get(name);
    if (!f) throw new Error(`no ${name}`);
    return f;
  });
  const model = await LlamaModel.load(ctx, loaded.config, loaded.weights);
  const session = await ort.InferenceSession.create(tiny.files.get('onnx/model.onnx')!);
  try {
    const text = loaded.tokenizer.encode(loaded.tokenizer.applyChatTemplate([{ role: 'user', content: 'The robot paints the flowers.' }], { addGenerationPrompt: true }));
    const T = 12;
    const ids = [text.slice(0, T), [1, 40, 41, 300, 7, 99, 2, 383, 0, 5, 6, 7]];
    const want = (await session.run(ortFeeds(ids))).logits!;
    assert.deepEqual(want.dims, [2, T, cfg.vocabSize]);
    const got = await model.forward(ids);
    const d = maxDiff(got, want.data as Float32Array);
    assert.ok(d <= TOL, `engine vs onnxruntime-node: max |Δ| ${d}`);

    // Greedy continuation with the engine's KV cache = argmax of ORT's full forward at every step.
    const prompt = text.slice(0, 8);
    const gen = await model.generate(prompt, { maxNewTokens: 6, stopTokens: [] });
    const seq = [...prompt, ...gen];
    const full = (await session.run(ortFeeds([seq]))).logits!.data as Float32Array;
    for (let i = 0; i < gen.length; i++) {
      const row = full.subarray((prompt.length - 1 + i) * cfg.vocabSize, (prompt.length + i) * cfg.vocabSize);
      let best = 0;
      for (let v = 1; v < row.length; v++) if (row[v]! > row[best]!) best = v;
      assert.equal(gen[i], best, `token ${i}`);
    }
  } finally {
    model.release();
    await session.release();
  }
});
