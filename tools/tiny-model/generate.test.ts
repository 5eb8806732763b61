import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadModelFolder, MANIFEST_FILE, parseManifest, parseSafetensors, tensorAsFloat32, type ModelManifest } from '../../worker/model';
import { buildTinyModel, DEFAULT_TINY_SIZES } from './generate';
import { makeTinyModel } from './make';

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
