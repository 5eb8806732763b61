import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildTinyModel } from '../../tools/tiny-model';
import { linearShape, type LinearModule, type LlamaConfig } from './config';
import { baseModelFingerprint, loadAdapter, loraKey, peftTensorName, saveAdapter, type LoraAdapter, type LoraPair } from './peft';
import { mulberry32 } from './prng';
import { parseSafetensors, tensorShape, writeSafetensors } from './safetensors';
import { thrownCode } from '../../shared/testing';

const tiny = buildTinyModel({ seed: 1 });
const base = tiny.config;
const fp = baseModelFingerprint(base, parseSafetensors(tiny.files.get('model.safetensors') as Uint8Array));

function makeAdapter(config: LlamaConfig, r = 4, modules: LinearModule[] = ['q_proj', 'v_proj']): LoraAdapter {
  const rng = mulberry32(9);
  const weights = new Map<string, LoraPair>();
  for (let i = 0; i < config.numLayers; i++) {
    for (const m of modules) {
      const s = linearShape(config, m);
      weights.set(loraKey(i, m), {
        a: Float32Array.from({ length: r * s.in }, () => rng.normal()),
        b: Float32Array.from({ length: s.out * r }, () => rng.normal()),
      });
    }
  }
  return { settings: { r, alpha: 8, dropout: 0.05, targetModules: modules }, baseModel: 'tiny-llama', baseFingerprint: fp, weights };
}


test('PEFT round trip: config fields, key names, shapes, values', () => {
  const adapter = makeAdapter(base);
  const files = saveAdapter(adapter, base);
  const cfg = JSON.parse(files.configJson);
  assert.equal(cfg.peft_type, 'LORA');
  assert.equal(cfg.task_type, 'CAUSAL_LM');
  assert.equal(cfg.r, 4);
  assert.equal(cfg.lora_alpha, 8);
  assert.equal(cfg.lora_dropout, 0.05);
  assert.deepEqual(cfg.target_modules, ['q_proj', 'v_proj']);
  assert.equal(cfg.base_model_name_or_path, 'tiny-llama');
  assert.equal(cfg.bias, 'none');
  assert.equal(cfg.fan_in_fan_out, false);
  assert.equal(cfg.inference_mode, true);
  const st = parseSafetensors(files.safetensors);
  assert.deepEqual(tensorShape(st, 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'), [4, 64]);
  assert.deepEqual(tensorShape(st, 'base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight'), [32, 4]);
  assert.equal(st.metadata.base_fingerprint, fp);
  const back = loadAdapter(files, base, fp);
  assert.deepEqual(back.settings, adapter.settings);
  assert.equal(back.baseFingerprint, fp);
  for (const [k, pair] of adapter.weights) assert.deepEqual(back.weights.get(k), pair);
  assert.equal(peftTensorName(1, 'down_proj', 'A'), 'base_model.model.model.layers.1.mlp.down_proj.lora_A.weight');
});

test('an adapter for another base is ADAPTER_MISMATCH, a broken one ADAPTER_INVALID', () => {
  const files = saveAdapter(makeAdapter(base), base);
  // Same shapes, different weights (another seed): refused by fingerprint.
  const other = buildTinyModel({ seed: 2 });
  const otherFp = baseModelFingerprint(other.config, parseSafetensors(other.files.get('model.safetensors') as Uint8Array));
  assert.notEqual(otherFp, fp);
  assert.equal(thrownCode(() => loadAdapter(files, other.config, otherFp)), 'ADAPTER_MISMATCH');
  // Different hidden size / layer count.
  assert.equal(thrownCode(() => loadAdapter(files, { ...base, hiddenSize: 128 })), 'ADAPTER_MISMATCH');
  assert.equal(thrownCode(() => loadAdapter(files, { ...base, numLayers: 1 })), 'ADAPTER_MISMATCH');
  // Missing tensor.
  const st = parseSafetensors(files.safetensors);
  const keep = [...st.tensors.keys()].filter((n) => !n.includes('layers.1.self_attn.v_proj.lora_B'));
  const reWrite = (names: string[], edit?: (name: string, shape: number[]) => number[]) =>
    writeSafetensors(
      names.map((n) => {
        const t = st.tensors.get(n);
        assert.ok(t);
        const shape = edit ? edit(n, t.shape) : t.shape;
        return { name: n, dtype: 'F32' as const, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) };
      }),
      st.metadata,
    );
  assert.equal(thrownCode(() => loadAdapter({ ...files, safetensors: reWrite(keep) }, base, fp)), 'ADAPTER_INVALID');
  // Wrong rank in a tensor.
  const all = [...st.tensors.keys()];
  const badRank = reWrite(all, (n, s) => (n.endsWith('layers.0.self_attn.q_proj.lora_A.weight') ? [3, s[1] as number] : s));
  assert.equal(thrownCode(() => loadAdapter({ ...files, safetensors: badRank }, base, fp)), 'ADAPTER_INVALID');
  // Wrong in-dimension.
  const badIn = reWrite(all, (n, s) => (n.endsWith('layers.0.self_attn.q_proj.lora_A.weight') ? [s[0] as number, 32] : s));
  assert.equal(thrownCode(() => loadAdapter({ ...files, safetensors: badIn }, base, fp)), 'ADAPTER_MISMATCH');
  // Bad configs.
  const cfg = JSON.parse(files.configJson);
  for (const patch of [{ peft_type: 'IA3' }, { r: 0 }, { target_modules: ['wq'] }, { task_type: 'SEQ_CLS' }]) {
    assert.equal(thrownCode(() => loadAdapter({ ...files, configJson: JSON.stringify({ ...cfg, ...patch }) }, base, fp)), 'ADAPTER_INVALID');
  }
  assert.equal(thrownCode(() => loadAdapter({ ...files, configJson: '{' }, base, fp)), 'ADAPTER_INVALID');
  assert.equal(thrownCode(() => loadAdapter({ ...files, safetensors: new Uint8Array(3) }, base, fp)), 'ADAPTER_INVALID');
  // Saving refuses weights that do not fit.
  assert.equal(thrownCode(() => saveAdapter(makeAdapter(base), { ...base, hiddenSize: 32 })), 'ADAPTER_MISMATCH');
});
