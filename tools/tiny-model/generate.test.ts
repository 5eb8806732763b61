import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModelFolder, MANIFEST_FILE, parseManifest, parseSafetensors, tensorAsFloat32, type ModelManifest } from '../../worker/model';
import { BUILTIN_MODELS, LARGE_LLAMA_SIZES, makeBuiltinModels } from './builtin';
import { buildTinyModel, DEFAULT_TINY_SIZES } from './generate';
import { GENERATOR_VERSION, makeTinyModel, manifestOf } from './make';

const sha = (bytes: Uint8Array | string): string => createHash('sha256').update(bytes).digest('hex');

test('two runs with the same seed write identical files; another seed differs', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'tiny-model-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const a = await makeTinyModel({ seed: 5, dir: join(root, 'a') });
  const b = await makeTinyModel({ seed: 5, dir: join(root, 'b') });
  const c = await makeTinyModel({ seed: 6, dir: join(root, 'c') });
  assert.deepEqual(a, b);
  assert.deepEqual(
    a.files.map((f) => f.path),
    ['config.json', 'generation_config.json', 'model.safetensors', 'onnx/model.onnx', 'tokenizer.json', 'tokenizer_config.json'],
  );
  const digest = (m: ModelManifest, p: string): string | undefined => m.files.find((f) => f.path === p)?.sha256;
  assert.notEqual(digest(a, 'model.safetensors'), digest(c, 'model.safetensors'));
  assert.notEqual(digest(a, 'onnx/model.onnx'), digest(c, 'onnx/model.onnx'));
  assert.equal(digest(a, 'tokenizer.json'), digest(c, 'tokenizer.json'));
  // The manifest on disk describes the files on disk.
  const onDisk = parseManifest(await readFile(join(root, 'a', MANIFEST_FILE), 'utf8'));
  assert.deepEqual(onDisk, a);
  for (const f of onDisk.files) {
    const bytes = await readFile(join(root, 'a', f.path));
    assert.equal(bytes.length, f.size);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), f.sha256);
  }
  // The folder loads through the model API with the sizes the brief asks for.
  const m = await loadModelFolder(async (name) => new Uint8Array(await readFile(join(root, 'a', name))));
  assert.equal(m.config.architecture, 'LlamaForCausalLM');
  assert.deepEqual(
    [m.config.vocabSize, m.config.hiddenSize, m.config.intermediateSize, m.config.numLayers, m.config.numHeads, m.config.numKvHeads, m.config.headDim, m.config.maxPositions],
    [384, 64, 128, 2, 4, 2, 16, 256],
  );
});

test('weights are small-std normals; norms near one; sizes are configurable', () => {
  const tiny = buildTinyModel({ seed: 1, sizes: { numLayers: 1, hiddenSize: 32, numHeads: 2, numKvHeads: 1, headDim: 16, intermediateSize: 64 } });
  const st = parseSafetensors(tiny.files.get('model.safetensors') as Uint8Array);
  const q = tensorAsFloat32(st, 'model.layers.0.self_attn.q_proj.weight');
  const mean = q.reduce((a, b) => a + b, 0) / q.length;
  const std = Math.sqrt(q.reduce((a, b) => a + (b - mean) ** 2, 0) / q.length);
  assert.ok(Math.abs(mean) < 0.01 && std > 0.06 && std < 0.1, `mean ${mean} std ${std}`);
  const norm = tensorAsFloat32(st, 'model.norm.weight');
  assert.ok(norm.every((v) => v > 0.6 && v < 1.4));
  assert.equal(tiny.config.numLayers, 1);
  assert.equal(DEFAULT_TINY_SIZES.vocabSize, 384);
  assert.throws(() => buildTinyModel({ seed: 1, sizes: { vocabSize: 100 } }), /vocabSize/);
});

test('the built-in tiny models are pinned: a change to their bytes must bump GENERATOR_VERSION', () => {
  // When this fails on purpose: bump GENERATOR_VERSION in make.ts and paste the new digests here.
  const pinned: Record<string, string> = {
    'tiny-llama': 'b1ef72cfbadaae573606780cebc54eb853e1dbc885ecafd870afa52f908b16ef',
    'tiny-qwen2': 'c4385f96f1818f33c78f6b2421c88cbeade026abc7df5c831cf8adb5cbebb878',
    'tiny-gemma': 'b3fbda55ba993daa38a0a895b0dbf0fce6f5ff67a790199e2dba712f1ccc6aae',
  };
  assert.equal(GENERATOR_VERSION, 2);
  for (const [name, digest] of Object.entries(pinned)) {
    const m = BUILTIN_MODELS.find((b) => b.name === name);
    assert.ok(m, name);
    assert.equal(sha(JSON.stringify(manifestOf(buildTinyModel(m.options).files))), digest, name);
  }
});

test('qwen2 and gemma configs: Qwen2 biases and tied head; Gemma numerics; same tokenizer', () => {
  const q = buildTinyModel({ seed: 2, arch: 'qwen2' });
  assert.equal(q.config.architecture, 'Qwen2ForCausalLM');
  assert.ok(q.config.attentionBias && q.config.tieWordEmbeddings);
  const qst = parseSafetensors(q.files.get('model.safetensors') as Uint8Array);
  assert.ok(qst.tensors.has('model.layers.1.self_attn.k_proj.bias') && !qst.tensors.has('lm_head.weight'));
  const g = buildTinyModel({ seed: 3, arch: 'gemma' });
  const gjson = JSON.parse(new TextDecoder().decode(g.files.get('config.json'))) as Record<string, unknown>;
  assert.deepEqual([gjson.architectures, gjson.model_type, gjson.hidden_activation, gjson.tie_word_embeddings], [['GemmaForCausalLM'], 'gemma', 'gelu_pytorch_tanh', true]);
  assert.ok(g.config.scaleEmbeddings && g.config.normUnitOffset && g.config.hiddenAct === 'gelu_pytorch_tanh');
  // Gemma's norm weights are the w of (1 + w): near zero.
  const norm = tensorAsFloat32(parseSafetensors(g.files.get('model.safetensors') as Uint8Array), 'model.norm.weight');
  assert.ok(norm.every((v) => Math.abs(v) < 0.4));
  assert.equal(sha(q.files.get('tokenizer.json') as Uint8Array), sha(g.files.get('tokenizer.json') as Uint8Array));
  assert.throws(() => buildTinyModel({ seed: 1, arch: 'phi' as 'llama' }), /Unknown tiny-model arch/);
});

test('llama-large: over 50 MB of weights, deterministic, manifest right; built-ins skip folders already up to date', async (t) => {
  const root = await mkdtemp(join(tmpdir(), 'tiny-builtin-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const [first] = await makeBuiltinModels(root, { only: ['llama-large'] });
  assert.ok(first?.written);
  const dir = join(root, 'llama-large');
  const st = await stat(join(dir, 'model.safetensors'));
  assert.ok(st.size >= 50 * 1024 * 1024, `model.safetensors is ${st.size} bytes`);
  const onDisk = parseManifest(await readFile(join(dir, MANIFEST_FILE), 'utf8'));
  assert.deepEqual(onDisk, first.manifest);
  for (const f of onDisk.files) assert.equal(sha(await readFile(join(dir, f.path))), f.sha256, f.path);
  // The same options give the same bytes again (in memory this time).
  const large = BUILTIN_MODELS.find((m) => m.name === 'llama-large');
  assert.ok(large);
  assert.deepEqual(manifestOf(buildTinyModel(large.options).files), onDisk);
  const cfg = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  assert.deepEqual([cfg.hidden_size, cfg.num_hidden_layers, cfg.intermediate_size], [LARGE_LLAMA_SIZES.hiddenSize, LARGE_LLAMA_SIZES.numLayers, LARGE_LLAMA_SIZES.intermediateSize]);

  // A second call leaves the folder alone (no write: mtimes unchanged).
  const again = await makeBuiltinModels(root, { only: ['llama-large'] });
  assert.equal(again[0]?.written, false);
  assert.deepEqual(again[0]?.manifest, onDisk);
  assert.equal((await stat(join(dir, 'model.safetensors'))).mtimeMs, st.mtimeMs);
  // A truncated file, or a manifest from other options, makes it rewrite the folder.
  await truncate(join(dir, 'onnx/model.onnx'), 100);
  assert.equal((await makeBuiltinModels(root, { only: ['llama-large'] }))[0]?.written, true);
  assert.equal(sha(await readFile(join(dir, 'onnx/model.onnx'))), onDisk.files.find((f) => f.path === 'onnx/model.onnx')?.sha256);
  const tiny = await makeBuiltinModels(root, { only: ['tiny-llama'] });
  const manifestPath = join(root, 'tiny-llama', MANIFEST_FILE);
  const m = JSON.parse(await readFile(manifestPath, 'utf8')) as { generator: { seed: number } };
  m.generator.seed = 99;
  await writeFile(manifestPath, JSON.stringify(m));
  assert.equal((await makeBuiltinModels(root, { only: ['tiny-llama'] }))[0]?.written, true);
  assert.deepEqual(parseManifest(await readFile(manifestPath, 'utf8')), tiny[0]?.manifest);
  await assert.rejects(makeBuiltinModels(root, { only: ['nope'] }), /Unknown built-in model nope/);
});
