import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as ort from 'onnxruntime-node';
import { loraKey, mulberry32, type LlamaWeights, type LoraAdapter } from '../../worker/model';
import { buildTinyModel } from './generate';
import { buildDecoderOnnx } from '../../worker/model/onnx-llama';
import { encodeModel } from '../../worker/model/onnx-proto';
import { emptyKvCache, referenceForward, type KvCache } from '../../worker/engine/reference';

const tiny = buildTinyModel({ seed: 11 });
const cfg = tiny.config;
const V = cfg.vocabSize;
const TOL = 1e-4;

const i64 = (rows: number[][]): ort.Tensor =>
  new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0]?.length ?? 0]);

function feeds(ids: number[][], mask: number[][], pos: number[][], past: KvCache): Record<string, ort.Tensor> {
  const f: Record<string, ort.Tensor> = { input_ids: i64(ids), attention_mask: i64(mask), position_ids: i64(pos) };
  for (let i = 0; i < cfg.numLayers; i++) {
    const dims = [past.batch, cfg.numKvHeads, past.length, cfg.headDim];
    f[`past_key_values.${i}.key`] = new ort.Tensor('float32', past.keys[i] as Float32Array, dims);
    f[`past_key_values.${i}.value`] = new ort.Tensor('float32', past.values[i] as Float32Array, dims);
  }
  return f;
}

function kvFrom(out: ort.InferenceSession.OnnxValueMapType, batch: number): KvCache {
  const keys: Float32Array[] = [];
  const values: Float32Array[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    keys.push(out[`present.${i}.key`]?.data as Float32Array);
    values.push(out[`present.${i}.value`]?.data as Float32Array);
  }
  return { batch, length: (out['present.0.key']?.dims[2] as number) ?? 0, keys, values };
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>, from = 0, to = a.length): number {
  assert.ok(to <= b.length);
  let m = 0;
  for (let i = from; i < to; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)));
  return m;
}

const session = ort.InferenceSession.create(tiny.files.get('onnx/model.onnx') as Uint8Array);
const seq = [3, 122, 120, 271, 15, 77, 345, 116, 377, 4, 15, 3, 102];
const S = seq.length;
const ones = (n: number): number[] => new Array<number>(n).fill(1);
const range = (a: number, b: number): number[] => Array.from({ length: b - a }, (_, i) => a + i);

test('the ONNX graph has the decoder IO transformers.js expects', async () => {
  const s = await session;
  const kv = range(0, cfg.numLayers).flatMap((i) => [`past_key_values.${i}.key`, `past_key_values.${i}.value`]);
  assert.deepEqual(s.inputNames, ['input_ids', 'attention_mask', 'position_ids', ...kv]);
  assert.deepEqual(s.outputNames, ['logits', ...kv.map((n) => n.replace('past_key_values', 'present'))]);
});

test('full-sequence logits equal the TypeScript reference (no past)', async () => {
  const s = await session;
  const out = await s.run(feeds([seq], [ones(S)], [range(0, S)], emptyKvCache(cfg, 1)));
  const ref = referenceForward(cfg, tiny.weights, { inputIds: [seq] });
  assert.deepEqual(out.logits?.dims, [1, S, V]);
  const d = maxDiff(out.logits?.data as Float32Array, ref.logits);
  assert.ok(d <= TOL, `max abs diff ${d}`);
  const dk = maxDiff(out['present.1.key']?.data as Float32Array, ref.present.keys[1] as Float32Array);
  assert.ok(dk <= TOL, `present key diff ${dk}`);
});

test('decode steps with past KV equal the full-sequence forward, in ONNX and in the reference', async () => {
  const s = await session;
  const full = referenceForward(cfg, tiny.weights, { inputIds: [seq] });
  const k = 9;
  const prefixOut = await s.run(feeds([seq.slice(0, k)], [ones(k)], [range(0, k)], emptyKvCache(cfg, 1)));
  let past = kvFrom(prefixOut, 1);
  let refPast = referenceForward(cfg, tiny.weights, { inputIds: [seq.slice(0, k)] }).present;
  for (let t = k; t < S; t++) {
    const out = await s.run(feeds([[seq[t] as number]], [ones(t + 1)], [[t]], past));
    const ref = referenceForward(cfg, tiny.weights, { inputIds: [[seq[t] as number]], past: refPast });
    const want = full.logits.subarray(t * V, (t + 1) * V);
    const d1 = maxDiff(out.logits?.data as Float32Array, want);
    const d2 = maxDiff(ref.logits, want);
    assert.ok(d1 <= TOL, `onnx step ${t}: ${d1}`);
    assert.ok(d2 <= 1e-5, `reference step ${t}: ${d2}`);
    past = kvFrom(out, 1);
    refPast = ref.present;
  }
  assert.equal(past.length, S);
});

test('left padding in a batch leaves the real tokens unchanged (mask + position ids)', async () => {
  const s = await session;
  const short = seq.slice(0, 8);
  const pad = S - short.length;
  const ids = [[...new Array<number>(pad).fill(0), ...short], seq];
  const mask = [[...new Array<number>(pad).fill(0), ...ones(short.length)], ones(S)];
  // transformers.js: position_ids = cumsum(mask) - 1, padding positions set to 1.
  const pos = [[...new Array<number>(pad).fill(1), ...range(0, short.length)], range(0, S)];
  const out = await s.run(feeds(ids, mask, pos, emptyKvCache(cfg, 2)));
  const logits = out.logits?.data as Float32Array;
  const alone = referenceForward(cfg, tiny.weights, { inputIds: [short] });
  const d0 = maxDiff(logits.subarray(pad * V, S * V), alone.logits);
  assert.ok(d0 <= TOL, `padded row: ${d0}`);
  const d1 = maxDiff(logits.subarray(S * V), referenceForward(cfg, tiny.weights, { inputIds: [seq] }).logits);
  assert.ok(d1 <= TOL, `full row: ${d1}`);
  // The reference given the same padded batch agrees too.
  const refBatch = referenceForward(cfg, tiny.weights, { inputIds: ids, attentionMask: mask, positionIds: pos });
  assert.ok(maxDiff(refBatch.logits, logits, pad * V, 2 * S * V) <= TOL);
  // One decode step on the padded batch with its past.
  const next = [[5], [6]];
  const step = await s.run(feeds(next, mask.map((m) => [...m, 1]), [[short.length], [S]], kvFrom(out, 2)));
  const want0 = referenceForward(cfg, tiny.weights, { inputIds: [[...short, 5]] }).logits.subarray(short.length * V);
  assert.ok(maxDiff((step.logits?.data as Float32Array).subarray(0, V), want0) <= TOL);
});

test('reference LoRA path equals ONNX run on weights with the LoRA merged in', async () => {
  const rng = mulberry32(5);
  const r = 2;
  const adapter: LoraAdapter = { settings: { r, alpha: 4, dropout: 0, targetModules: ['q_proj', 'down_proj'] }, baseModel: 't', baseFingerprint: '', weights: new Map() };
  const merged: LlamaWeights = new Map([...tiny.weights].map(([n, w]) => [n, { shape: w.shape, data: w.data.slice() }]));
  for (let layer = 0; layer < cfg.numLayers; layer++) {
    for (const [module, part] of [['q_proj', 'self_attn'], ['down_proj', 'mlp']] as const) {
      const w = merged.get(`model.layers.${layer}.${part}.${module}.weight`);
      assert.ok(w);
      const [out, inp] = w.shape as [number, number];
      const a = Float32Array.from({ length: r * inp }, () => 0.1 * rng.normal());
      const b = Float32Array.from({ length: out * r }, () => 0.1 * rng.normal());
      adapter.weights.set(loraKey(layer, module), { a, b });
      for (let o = 0; o < out; o++) {
        for (let i = 0; i < inp; i++) {
          let s = 0;
          for (let k = 0; k < r; k++) s += (b[o * r + k] as number) * (a[k * inp + i] as number);
          w.data[o * inp + i] = (w.data[o * inp + i] as number) + (4 / r) * s;
        }
      }
    }
  }
  const s = await ort.InferenceSession.create(encodeModel(buildDecoderOnnx(cfg, merged)));
  const out = await s.run(feeds([seq], [ones(S)], [range(0, S)], emptyKvCache(cfg, 1)));
  const ref = referenceForward(cfg, tiny.weights, { inputIds: [seq], lora: adapter });
  const d = maxDiff(out.logits?.data as Float32Array, ref.logits);
  assert.ok(d <= TOL, `lora diff ${d}`);
  const plain = referenceForward(cfg, tiny.weights, { inputIds: [seq] });
  assert.ok(maxDiff(plain.logits, ref.logits) > 1e-3, 'the adapter changes the logits');
});

test('qwen2 and gemma graphs: logits equal the reference; their own numerics matter', async () => {
  for (const arch of ['qwen2', 'gemma'] as const) {
    const m = buildTinyModel({ seed: 12, arch });
    const sess = await ort.InferenceSession.create(m.files.get('onnx/model.onnx') as Uint8Array);
    const f: Record<string, ort.Tensor> = { input_ids: i64([seq]), attention_mask: i64([ones(S)]), position_ids: i64([range(0, S)]) };
    for (let i = 0; i < m.config.numLayers; i++) {
      for (const kind of ['key', 'value']) f[`past_key_values.${i}.${kind}`] = new ort.Tensor('float32', new Float32Array(0), [1, m.config.numKvHeads, 0, m.config.headDim]);
    }
    const out = await sess.run(f);
    const want = referenceForward(m.config, m.weights, { inputIds: [seq] }).logits;
    const d = maxDiff(out.logits?.data as Float32Array, want);
    assert.ok(d <= TOL, `${arch}: ${d}`);
    // Read as a plain Llama (no biases; or no Gemma scaling, offset norms and GELU), the logits are far off.
    const plain = arch === 'qwen2'
      ? referenceForward({ ...m.config, attentionBias: false }, new Map([...m.weights].filter(([n]) => !n.endsWith('.bias'))), { inputIds: [seq] })
      : referenceForward({ ...m.config, normUnitOffset: false, scaleEmbeddings: false, hiddenAct: 'silu' }, new Map([...m.weights].map(([n, w]) => [n, n.endsWith('norm.weight') ? { shape: w.shape, data: w.data.map((v) => 1 + v) } : w])), { inputIds: [seq] });
    assert.ok(maxDiff(plain.logits, want) > 1e-2, `${arch}: its numerics change nothing`);
  }
});
