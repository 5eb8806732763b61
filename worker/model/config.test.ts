import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildTinyModel } from '../../tools/tiny-model';
import { AppError } from '../../shared';
import { checkModelType, configFingerprint, llamaWeightNames, llamaWeightShapes, loadLlamaWeights, parseLlamaConfig } from './config';
import { parseSafetensors, writeSafetensors } from './safetensors';
import { thrownCode } from '../../shared/testing';


const base = {
  architectures: ['LlamaForCausalLM'],
  model_type: 'llama',
  vocab_size: 100,
  hidden_size: 32,
  intermediate_size: 48,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  bos_token_id: 1,
  eos_token_id: [2, 4],
};

test('parses Llama, Mistral and Qwen2 configs; Qwen2 has attention bias', () => {
  const c = parseLlamaConfig(JSON.stringify(base));
  assert.equal(c.headDim, 8);
  assert.equal(c.ropeTheta, 10000);
  assert.deepEqual(c.eosTokenIds, [2, 4]);
  assert.equal(c.attentionBias, false);
  assert.equal(c.tieWordEmbeddings, false);
  const m = parseLlamaConfig({ ...base, architectures: ['MistralForCausalLM'], model_type: 'mistral', eos_token_id: 2 });
  assert.deepEqual(m.eosTokenIds, [2]);
  const q = parseLlamaConfig({ ...base, architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', tie_word_embeddings: true, head_dim: 16 });
  assert.equal(q.attentionBias, true);
  assert.equal(q.headDim, 16);
  const names = llamaWeightNames(q);
  assert.equal(names.lmHead, undefined);
  assert.equal(names.layers[1]?.qBias, 'model.layers.1.self_attn.q_proj.bias');
  const shapes = llamaWeightShapes(q);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.q_proj.weight'), [64, 32]);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.k_proj.weight'), [32, 32]);
  assert.deepEqual(shapes.get('model.layers.0.mlp.down_proj.weight'), [32, 48]);
  assert.deepEqual(shapes.get('model.layers.0.self_attn.v_proj.bias'), [32]);
  assert.notEqual(configFingerprint(c), configFingerprint(q));
  assert.equal(configFingerprint(c), configFingerprint(parseLlamaConfig(base)));
});

test('other architectures are MODEL_UNSUPPORTED; broken configs MODEL_CORRUPT', () => {
  assert.equal(thrownCode(() => parseLlamaConfig({ ...base, architectures: ['GPT2LMHeadModel'], model_type: 'gpt2' })), 'MODEL_UNSUPPORTED');
  assert.equal(thrownCode(() => parseLlamaConfig({ ...base, architectures: undefined })), 'MODEL_UNSUPPORTED');
  assert.equal(thrownCode(() => parseLlamaConfig({ ...base, rope_scaling: { rope_type: 'llama3', factor: 8 } })), 'MODEL_UNSUPPORTED');
  assert.equal(thrownCode(() => parseLlamaConfig({ ...base, hidden_size: -1 })), 'MODEL_CORRUPT');
  assert.equal(thrownCode(() => parseLlamaConfig({ ...base, num_key_value_heads: 3 })), 'MODEL_CORRUPT');
  assert.equal(thrownCode(() => parseLlamaConfig('{not json')), 'MODEL_CORRUPT');
});

test('a model_type that contradicts architectures is MODEL_CONFIG_INCONSISTENT; consistent or unknown pairs pass', () => {
  for (const [modelType, arch] of [
    ['llama', 'Qwen2ForCausalLM'],
    ['qwen2', 'LlamaForCausalLM'],
    ['mistral', 'LlamaForCausalLM'],
    ['qwen2', 'Qwen2MoeForCausalLM'],
    ['gemma', 'Gemma2ForCausalLM'],
    ['llama', 'GPT2LMHeadModel'],
  ] as const) {
    let err: unknown;
    try {
      checkModelType({ model_type: modelType, architectures: [arch] });
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof AppError && err.code === 'MODEL_CONFIG_INCONSISTENT', `${modelType} vs ${arch}`);
    assert.deepEqual(err.details, { modelType, architectures: [arch], architectureModelType: err.details?.architectureModelType });
  }
  assert.equal(thrownCode(() => parseLlamaConfig({ ...base, model_type: 'llama', architectures: ['Qwen2ForCausalLM'] })), 'MODEL_CONFIG_INCONSISTENT');
  for (const [modelType, arch] of [
    ['llama', 'LlamaForCausalLM'],
    ['qwen2', 'Qwen2ForCausalLM'],
    ['qwen2_moe', 'Qwen2MoeForCausalLM'],
    ['gemma3_text', 'Gemma3ForCausalLM'],
    ['gpt2', 'GPT2LMHeadModel'],
    ['gpt_neox', 'GPTNeoXForCausalLM'],
    ['my_llama', 'LlamaForCausalLM'], // unknown model_type: not judged
    ['llama', 'SomethingNewForCausalLM'], // unknown class: not judged
  ] as const) {
    assert.doesNotThrow(() => checkModelType({ model_type: modelType, architectures: [arch] }), `${modelType} vs ${arch}`);
  }
  // Without model_type the engine takes the architecture's.
  assert.equal(parseLlamaConfig({ ...base, model_type: undefined, architectures: ['Qwen2ForCausalLM'] }).modelType, 'qwen2');
});

test('loadLlamaWeights reads the tiny model and checks every shape', () => {
  const tiny = buildTinyModel({ seed: 3 });
  const file = parseSafetensors(tiny.files.get('model.safetensors') as Uint8Array);
  const w = loadLlamaWeights(file, tiny.config);
  assert.equal(w.size, llamaWeightShapes(tiny.config).size);
  assert.deepEqual(w.get('model.embed_tokens.weight')?.data, tiny.weights.get('model.embed_tokens.weight')?.data);

  // A checkpoint whose k_proj has the wrong shape.
  const tensors = [...tiny.weights.entries()].map(([name, t]) => ({ name, dtype: 'F32' as const, shape: t.shape, data: t.data }));
  const bad = tensors.map((t) =>
    t.name === 'model.layers.1.self_attn.k_proj.weight' ? { ...t, shape: [t.shape[1] as number, t.shape[0] as number] } : t,
  );
  assert.equal(thrownCode(() => loadLlamaWeights(parseSafetensors(writeSafetensors(bad)), tiny.config)), 'SHAPE_MISMATCH');
  // A config with more layers than the checkpoint has.
  const deeper = { ...tiny.config, numLayers: 3 };
  assert.equal(thrownCode(() => loadLlamaWeights(file, deeper)), 'MODEL_FILE_MISSING');
  // Sharded: split across two files.
  const half = Math.floor(tensors.length / 2);
  const shards = [writeSafetensors(tensors.slice(0, half)), writeSafetensors(tensors.slice(half))].map(parseSafetensors);
  assert.equal(loadLlamaWeights(shards, tiny.config).size, w.size);
});
