/**
 * A LoRA adapter uploaded to the coordinator's registry, run by a headless Chromium node on the
 * engine (WebGPU on SwiftShader) that already holds the base: the node's weight store fetches the
 * adapter from the base's refreshed manifest, and its greedy tokens differ from the base's and equal
 * the engine's in Node with the same adapter in a local folder.
 */
import assert from 'node:assert/strict';
import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { GenerateResult, TaskRecord } from '../shared';
import { makeTinyModel } from '../tools/tiny-model';
import { engineBackend, InferenceService } from '../worker/inference';
import { randomLoraPairs } from '../worker/engine';
import { loadModelFolder, mulberry32, saveAdapter } from '../worker/model';
import { createNodeGpuContext, folderSource } from '../worker/node';
import { E2ePool } from './pool';

let pool: E2ePool;
let dir = '';
let url = '';

before(async () => {
  pool = await E2ePool.start('e2e-adapters-', {}, async (d) => {
    await makeTinyModel({ seed: 11, dir: join(d, 'models', 'tiny-llama') });
    return { modelsDir: join(d, 'models') };
  });
  dir = pool.dir;
  url = pool.url;
  await pool.join({ count: 1, query: { backends: 'engine', workers: '1' }, log: (l) => process.stderr.write(`${l}\n`) });
});

after(async () => {
  await pool?.close();
});

async function generate(payload: Record<string, unknown>): Promise<GenerateResult> {
  const res = await fetch(`${url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'generate', payload }) });
  const sub = (await res.json()) as { id?: string };
  assert.equal(res.status, 202, JSON.stringify(sub));
  for (let i = 0; i < 6; i++) {
    const rec = (await (await fetch(`${url}/v1/tasks/${sub.id}/wait?timeoutMs=30000`)).json()) as TaskRecord;
    if (['succeeded', 'failed', 'dead', 'cancelled'].includes(rec.state)) {
      assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
      return rec.result as GenerateResult;
    }
  }
  throw new Error(`task ${sub.id} did not end within 3 minutes`);
}

test('an uploaded adapter runs on a node that already holds the base: tokens differ from the base and equal the engine in Node', async () => {
  const prompt = 'once upon a time there was';
  const N = 10;
  const base = await generate({ model: 'tiny-llama', prompt, maxNewTokens: N });
  assert.equal(base.backend, 'engine');

  const baseDir = join(dir, 'models', 'tiny-llama');
  const folder = await loadModelFolder(async (p) => new Uint8Array(await readFile(join(baseDir, ...p.split('/')))));
  const rng = mulberry32(5);
  const r = 4;
  const targets = ['q_proj', 'v_proj', 'down_proj'] as const;
  const weights = randomLoraPairs(folder.config, r, targets, () => (rng.next() - 0.5) * 0.6);
  const files = saveAdapter({ settings: { r, alpha: 2 * r, dropout: 0, targetModules: [...targets] }, baseModel: 'tiny-llama', baseFingerprint: folder.fingerprint, weights }, folder.config);
  const put = await fetch(`${url}/v1/adapters/tiny-llama/tuned`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ config: files.configJson, weights: Buffer.from(files.safetensors).toString('base64') }),
  });
  assert.equal(put.status, 201, await put.text());

  const tuned = await generate({ model: 'tiny-llama', adapter: 'tuned', prompt, maxNewTokens: N });
  assert.equal(tuned.backend, 'engine');
  assert.notDeepEqual(tuned.tokens, base.tokens, 'the adapter changes the output');

  // The engine in Node, the adapter in a local copy of the folder.
  const local = join(dir, 'local');
  await cp(baseDir, join(local, 'tiny-llama'), { recursive: true });
  await mkdir(join(local, 'tiny-llama', 'adapters', 'tuned'), { recursive: true });
  await writeFile(join(local, 'tiny-llama', 'adapters', 'tuned', 'adapter_config.json'), files.configJson);
  await writeFile(join(local, 'tiny-llama', 'adapters', 'tuned', 'adapter_model.safetensors'), files.safetensors);
  const gpu = await createNodeGpuContext();
  const svc = new InferenceService({ source: folderSource(local), backends: [engineBackend({ gpu: async () => gpu })], maxSequences: 2 });
  try {
    const inNode = await svc.generate({ taskId: 'node-tuned', model: 'tiny-llama', adapter: 'tuned', prompt, maxNewTokens: N });
    assert.ok(inNode.ok, JSON.stringify(inNode));
    assert.deepEqual(tuned.tokens, inNode.result.tokens);
    const inNodeBase = await svc.generate({ taskId: 'node-base', model: 'tiny-llama', prompt, maxNewTokens: N });
    assert.ok(inNodeBase.ok);
    assert.deepEqual(base.tokens, inNodeBase.result.tokens);
  } finally {
    await svc.close();
    gpu.destroy();
  }
});
