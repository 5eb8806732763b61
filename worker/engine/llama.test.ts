import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AppError } from '../../shared';
import { buildTinyModel, referenceForward } from '../../tools/tiny-model';
import { mulberry32, type LinearModule, type LoraAdapter } from '../model';
import { GpuContext } from './context';
import { LlamaModel } from './llama';
import { GpuLoraAdapter } from './lora';
import { createNodeGpuContext } from './node-gpu';
import { randomLlamaWeights, randomLoraPairs, tinyLlamaConfig } from './random-weights';
import { llamaForwardRef } from './reference';

let ctx: GpuContext;
before(async () => {
  ctx = await createNodeGpuContext();
});
after(() => ctx.destroy());

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function argmax(x: ArrayLike<number>, from = 0, n = x.length): number {
  let best = from;
  for (let i = from; i < from + n; i++) if (x[i]! > x[best]!) best = i;
  return best - from;
}

describe('Llama forward', () => {
  it('equals the float64 TS reference (GQA, untied head) within 1e-4', async () => {
    const cfg = tinyLlamaConfig();
    const w = randomLlamaWeights(cfg, 3);
    const model = await LlamaModel.load(ctx, cfg, w);
    const tokens = [
      [1, 5, 9, 33, 2, 17, 40],
      [1, 63, 0, 12, 12, 8, 50],
    ];
    const logits = await model.forward(tokens);
    const ref = llamaForwardRef(cfg, w, tokens);
    assert.ok(maxDiff(logits, ref) < 1e-4, `max diff ${maxDiff(logits, ref)}`);
    const last = await model.forward(tokens, { lastOnly: true });
    const V = cfg.vocabSize;
    assert.deepEqual(Array.from(last), [...logits.slice(6 * V, 7 * V), ...logits.slice(13 * V, 14 * V)].map(Number));
    model.release();
  });

  it('equals the reference with tied embeddings and q/k/v biases (Qwen2 layout)', async () => {
    const cfg = tinyLlamaConfig({ tieWordEmbeddings: true, attentionBias: true, numKvHeads: 1, architecture: 'Qwen2ForCausalLM' });
    const w = randomLlamaWeights(cfg, 4);
    const model = await LlamaModel.load(ctx, cfg, w);
    const tokens = [[3, 4, 5, 6, 7]];
    const ref = llamaForwardRef(cfg, w, tokens);
    assert.ok(maxDiff(await model.forward(tokens), ref) < 1e-4);
    model.release();
  });
});

describe('generation', () => {
  it('greedy with the KV cache equals greedy recomputed from scratch', async () => {
    const cfg = tinyLlamaConfig({ eosTokenIds: [] });
    const model = await LlamaModel.load(ctx, cfg, randomLlamaWeights(cfg, 5, 0.3));
    const prompt = [1, 7, 19, 3];
    const fast = await model.generate(prompt, { maxNewTokens: 12 });
    assert.equal(fast.length, 12);
    const seq = [...prompt];
    for (let i = 0; i < 12; i++) {
      const logits = await model.forward([seq]);
      seq.push(argmax(logits, (seq.length - 1) * cfg.vocabSize, cfg.vocabSize));
    }
    assert.deepEqual(fast, seq.slice(prompt.length));
    model.release();
  });

  it('sampling is reproducible per seed, stops at a stop token, and respects top-k = 1', async () => {
    const cfg = tinyLlamaConfig({ eosTokenIds: [] });
    const model = await LlamaModel.load(ctx, cfg, randomLlamaWeights(cfg, 6, 0.3));
    const prompt = [1, 2, 3];
    const opts = { maxNewTokens: 10, temperature: 1.5, topK: 20, topP: 0.95 };
    const a = await model.generate(prompt, { ...opts, seed: 11 });
    const b = await model.generate(prompt, { ...opts, seed: 11 });
    assert.deepEqual(a, b);
    const greedy = await model.generate(prompt, { maxNewTokens: 10 });
    assert.deepEqual(await model.generate(prompt, { maxNewTokens: 10, temperature: 2, topK: 1, seed: 3 }), greedy);
    const stop = greedy[3]!;
    const stopped = await model.generate(prompt, { maxNewTokens: 10, stopTokens: [stop] });
    assert.equal(stopped[stopped.length - 1], stop);
    assert.ok(stopped.length <= 4);
    model.release();
  });
});

describe('limits and errors', () => {
  it('a tensor over the device limit is MODEL_TOO_LARGE before any upload', async () => {
    const cfg = tinyLlamaConfig({ vocabSize: 1 << 22, hiddenSize: 128, numHeads: 4, numKvHeads: 4, headDim: 32 });
    assert.ok(cfg.vocabSize * cfg.hiddenSize * 4 > ctx.maxTensorBytes);
    await assert.rejects(LlamaModel.load(ctx, cfg, new Map()), (e: unknown) => e instanceof AppError && e.code === 'MODEL_TOO_LARGE');
  });

  it('missing or misshapen weights are refused with codes', async () => {
    const cfg = tinyLlamaConfig();
    const w = randomLlamaWeights(cfg, 7);
    w.delete('model.norm.weight');
    await assert.rejects(LlamaModel.load(ctx, cfg, w), (e: unknown) => e instanceof AppError && e.code === 'MODEL_FILE_MISSING');
    const w2 = randomLlamaWeights(cfg, 7);
    w2.set('model.norm.weight', { shape: [31], data: new Float32Array(31) });
    await assert.rejects(LlamaModel.load(ctx, cfg, w2), (e: unknown) => e instanceof AppError && e.code === 'SHAPE_MISMATCH');
  });
});

describe('against the tiny-model generator and its reference (tools/tiny-model)', () => {
  it('the generated tiny Llama: engine logits equal referenceForward (≤ 1e-4), with and without a LoRA adapter', async () => {
    const tiny = buildTinyModel({ seed: 7 });
    const model = await LlamaModel.load(ctx, tiny.config, tiny.weights);
    const inputIds = [
      [1, 40, 41, 300, 7, 99, 2],
      [1, 5, 6, 7, 8, 9, 10],
    ];
    const want = referenceForward(tiny.config, tiny.weights, { inputIds }).logits;
    assert.ok(maxDiff(await model.forward(inputIds), want) < 1e-4);

    const settings = { r: 4, alpha: 8, dropout: 0, targetModules: ['q_proj', 'v_proj', 'down_proj'] as LinearModule[] };
    const rng = mulberry32(3);
    const weights = randomLoraPairs(tiny.config, settings.r, settings.targetModules, () => 0.1 * rng.normal());
    const lora: LoraAdapter = { settings, baseModel: 'tiny', baseFingerprint: '', weights };
    const ad = GpuLoraAdapter.fromPairs(ctx, tiny.config, settings, weights);
    model.setAdapter(ad);
    const wantLora = referenceForward(tiny.config, tiny.weights, { inputIds, lora }).logits;
    assert.ok(maxDiff(wantLora, want) > 1e-3, 'the adapter changes the output');
    assert.ok(maxDiff(await model.forward(inputIds), wantLora) < 1e-4);
    model.release();
    ad.release();
  });
});

describe('f16 weights', () => {
  it('are refused with MODEL_UNSUPPORTED without shader-f16, and "auto" falls back to f32', async () => {
    const cfg = tinyLlamaConfig();
    const w = randomLlamaWeights(cfg, 8);
    if (ctx.hasF16) {
      const m = await LlamaModel.load(ctx, cfg, w, { weightDtype: 'f16' });
      assert.equal(m.weightDtype, 'f16');
      const ref = llamaForwardRef(cfg, w, [[1, 2, 3]]);
      assert.ok(maxDiff(await m.forward([[1, 2, 3]]), ref) < 2e-2);
      m.release();
      return;
    }
    await assert.rejects(LlamaModel.load(ctx, cfg, w, { weightDtype: 'f16' }), (e: unknown) => e instanceof AppError && e.code === 'MODEL_UNSUPPORTED');
    const m = await LlamaModel.load(ctx, cfg, w, { weightDtype: 'auto' });
    assert.equal(m.weightDtype, 'f32');
    m.release();
  });
});

describe('cancellation', () => {
  it('an aborted signal stops generation with CANCELLED', async () => {
    const cfg = tinyLlamaConfig({ eosTokenIds: [] });
    const model = await LlamaModel.load(ctx, cfg, randomLlamaWeights(cfg, 9));
    const ac = new AbortController();
    const seen: number[] = [];
    await assert.rejects(
      model.generate([1, 2], {
        maxNewTokens: 20,
        signal: ac.signal,
        onToken: (id) => {
          seen.push(id);
          if (seen.length === 3) ac.abort();
        },
      }),
      (e: unknown) => e instanceof AppError && e.code === 'CANCELLED',
    );
    assert.equal(seen.length, 3);
    assert.deepEqual(await model.generate([1, 2], { maxNewTokens: 2 }), (await model.generate([1, 2], { maxNewTokens: 3 })).slice(0, 2), 'the lock was released');
    model.release();
  });
});
