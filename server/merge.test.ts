/**
 * Merged export: an adapter version merged into its base (POST /v1/adapters/:base/:name/merge) is a model folder of
 * its own, listed by /v1/models, whose greedy output equals base plus adapter: checked with the engine (WebGPU,
 * SwiftShader) on its safetensors and with transformers.js (onnxruntime-node) on its ONNX, against the engine
 * running the base with the adapter applied.
 */
import assert from 'node:assert/strict';
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { makeBuiltinModels } from '../tools/tiny-model/builtin';
import { randomLoraPairs, type GpuContext } from '../worker/engine';
import { engineBackend, InferenceService, transformersBackend } from '../worker/inference';
import { loadModelFolder, mulberry32, saveAdapter } from '../worker/model';
import { readFile } from 'node:fs/promises';
import { createNodeGpuContext, folderSource } from '../worker/node';
import { createCoordinator, type Coordinator } from './index';
import { apiClient, tempDir } from './testing';

const tmp = tempDir('merge-');
let c: Coordinator;
let ctx: GpuContext;
let files: { configJson: string; safetensors: Uint8Array };

before(async () => {
  const base = (await makeBuiltinModels(join(tmp.dir, 'models'), { only: ['tiny-llama'] }))[0]!.dir;
  const folder = await loadModelFolder((p) => readFile(join(base, ...p.split('/'))).then((b) => new Uint8Array(b)));
  const rng = mulberry32(21);
  const targets = ['q_proj', 'v_proj', 'o_proj', 'down_proj'] as const;
  // Large enough that the adapter changes what the model says.
  const weights = randomLoraPairs(folder.config, 8, targets, () => (rng.next() - 0.5) * 1.5);
  files = saveAdapter({ settings: { r: 8, alpha: 16, dropout: 0, targetModules: [...targets] }, baseModel: 'tiny-llama', baseFingerprint: folder.fingerprint, weights }, folder.config);
  await mkdir(join(tmp.dir, 'data'), { recursive: true });
  c = await createCoordinator({ dbPath: join(tmp.dir, 'c.db'), modelsDir: join(tmp.dir, 'models'), dataDir: join(tmp.dir, 'data') });
  ctx = await createNodeGpuContext();
});

after(async () => {
  await c?.close();
  ctx?.destroy();
  tmp.cleanup();
});

test('an adapter merged into its base is a model of its own whose greedy output equals base plus adapter, on the engine and on transformers.js (ONNX)', async () => {
  const api = apiClient(c.url);
  const put = await api('/v1/adapters/tiny-llama/style', { method: 'PUT', json: { config: files.configJson, weights: Buffer.from(files.safetensors).toString('base64') } });
  assert.equal(put.status, 201, JSON.stringify(put.body));
  const merged = await api('/v1/adapters/tiny-llama/style/merge', { method: 'POST', json: {} });
  assert.equal(merged.status, 201, JSON.stringify(merged.body));
  assert.equal(merged.body.model, 'tiny-llama-style-v1');
  assert.equal(merged.body.adapter, 'tiny-llama:style@1');
  const paths = merged.body.files.map((f: { path: string }) => f.path);
  for (const p of ['config.json', 'tokenizer.json', 'model.safetensors', 'onnx/model.onnx']) assert.ok(paths.includes(p), `${p} in ${paths.join(', ')}`);
  assert.ok(!paths.some((p: string) => p.startsWith('adapters/')));
  const again = await api('/v1/adapters/tiny-llama/style@1/merge', { method: 'POST', json: {} });
  assert.equal(again.status, 200, 'merged before: the same model');
  assert.equal(again.body.model, 'tiny-llama-style-v1');
  const models = (await api('/v1/models')).body.data.map((m: { id: string }) => m.id);
  assert.ok(models.includes('tiny-llama-style-v1'), `listed: ${models.join(', ')}`);
  const missing = await api('/v1/adapters/tiny-llama/nope/merge', { method: 'POST', json: {} });
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, 'ADAPTER_NOT_FOUND');

  await sameAsBasePlusAdapter(join(tmp.dir, 'data', 'merged', 'tiny-llama-style-v1'), 'runtime');
});

/**
 * The merged folder beside the base with the adapter in adapters/style/: greedy tokens of the merged model on the
 * engine (its safetensors) and on transformers.js (its ONNX) equal the engine's base plus adapter, which differ from
 * the base alone.
 */
async function sameAsBasePlusAdapter(mergedDir: string, runtimeName: string): Promise<void> {
  const root = join(tmp.dir, runtimeName);
  await cp(join(tmp.dir, 'models', 'tiny-llama'), join(root, 'tiny-llama'), { recursive: true });
  await mkdir(join(root, 'tiny-llama', 'adapters', 'style'), { recursive: true });
  await writeFile(join(root, 'tiny-llama', 'adapters', 'style', 'adapter_config.json'), files.configJson);
  await writeFile(join(root, 'tiny-llama', 'adapters', 'style', 'adapter_model.safetensors'), files.safetensors);
  await cp(mergedDir, join(root, 'tiny-llama-style-v1'), { recursive: true });

  const engine = new InferenceService({ source: folderSource(root), backends: [engineBackend({ gpu: async () => ctx })] });
  const tjs = new InferenceService({ source: folderSource(root), backends: [transformersBackend({ device: 'cpu', env: { localModelPath: root, cacheDir: join(tmp.dir, `.cache-${runtimeName}`) } })] });
  try {
    const prompts = ['the cat', 'once upon a time there was', 'light and dark', 'we'];
    let differs = 0;
    for (const [i, prompt] of prompts.entries()) {
      const gen = async (svc: InferenceService, model: string, adapter?: string): Promise<number[]> => {
        const r = await svc.generate({ taskId: `${model}-${adapter ?? ''}-${i}`, model, prompt, maxNewTokens: 12, ...(adapter ? { adapter } : {}) });
        assert.ok(r.ok, JSON.stringify(r));
        return r.result.tokens;
      };
      const withAdapter = await gen(engine, 'tiny-llama', 'style');
      assert.deepEqual(await gen(engine, 'tiny-llama-style-v1'), withAdapter, `engine, merged safetensors: ${prompt}`);
      assert.deepEqual(await gen(tjs, 'tiny-llama-style-v1'), withAdapter, `transformers.js, merged ONNX: ${prompt}`);
      if (JSON.stringify(await gen(engine, 'tiny-llama')) !== JSON.stringify(withAdapter)) differs++;
    }
    assert.ok(differs > 0, 'the adapter changes what the base says (so the merge is what makes them equal)');
  } finally {
    await engine.close();
    await tjs.close();
  }
}

test('a merge whose weights pass the external-data threshold writes them beside the ONNX graph in chunks, and transformers.js loads them', async () => {
  const dir = join(tmp.dir, 'external');
  await mkdir(join(dir, 'data'), { recursive: true });
  // Every initializer of 1 KiB or more goes out, in files of at most 128 KiB: several chunks even for the tiny model.
  const ext = await createCoordinator({ dbPath: join(dir, 'c.db'), modelsDir: join(tmp.dir, 'models'), dataDir: join(dir, 'data'), mergeExternalData: { above: 0, chunkBytes: 128 << 10 } });
  try {
    const api = apiClient(ext.url);
    const put = await api('/v1/adapters/tiny-llama/style', { method: 'PUT', json: { config: files.configJson, weights: Buffer.from(files.safetensors).toString('base64') } });
    assert.equal(put.status, 201, JSON.stringify(put.body));
    const merged = await api('/v1/adapters/tiny-llama/style/merge', { method: 'POST', json: {} });
    assert.equal(merged.status, 201, JSON.stringify(merged.body));
    const listed = merged.body.files as { path: string; size: number }[];
    const chunks = listed.filter((f) => /^onnx\/model\.onnx_data(_\d+)?$/.test(f.path));
    assert.ok(chunks.length >= 2, `external data in chunks: ${listed.map((f) => f.path).join(', ')}`);
    for (const f of chunks) assert.ok(f.size <= 128 << 10, `${f.path} is ${f.size} bytes`);
    const graph = listed.find((f) => f.path === 'onnx/model.onnx')!;
    assert.ok(graph.size < chunks.reduce((n, f) => n + f.size, 0) / 4, 'the graph holds no weights');
    const out = join(dir, 'data', 'merged', 'tiny-llama-style-v1');
    const config = JSON.parse(await readFile(join(out, 'config.json'), 'utf8')) as Record<string, { use_external_data_format?: number }>;
    assert.equal(config['transformers.js_config']?.use_external_data_format, chunks.length);
    await sameAsBasePlusAdapter(out, 'runtime-external');
  } finally {
    await ext.close();
  }
});
