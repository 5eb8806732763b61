/**
 * The inference runtime in Node, on real backends: transformers.js on onnxruntime-node and the
 * engine on WebGPU (Dawn, SwiftShader), over model folders written by the tiny-model generator.
 */
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { AutoModelForCausalLM, AutoTokenizer, env, type Tensor } from '@huggingface/transformers';
import { makeTinyModel } from '../../tools/tiny-model';
import { createNodeGpuContext, folderSource } from '../node';
import { randomLoraPairs, type GpuContext } from '../engine';
import { referenceForward } from '../engine/reference';
import { loadModelFolder, mulberry32, saveAdapter, type LoraAdapter } from '../model';
import { engineBackend, InferenceService, transformersBackend, type InferenceBackend } from '.';

let root = '';
let ctx: GpuContext;
const SEED = 5;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'inference-'));
  await makeTinyModel({ seed: SEED, dir: join(root, 'tiny-llama') });
  await makeTinyModel({ seed: SEED, arch: 'gemma', dir: join(root, 'tiny-gemma') });
  ctx = await createNodeGpuContext();
});

after(async () => {
  ctx?.destroy();
  await rm(root, { recursive: true, force: true });
});

function tjs(): InferenceBackend {
  return transformersBackend({ device: 'cpu', env: { localModelPath: root, cacheDir: join(root, '.cache') } });
}

function engine(): InferenceBackend {
  return engineBackend({ gpu: async () => ctx });
}

/** transformers.js' own greedy generate, the independent reference. */
async function referenceTokens(model: string, prompt: string, maxNew: number): Promise<number[]> {
  env.allowLocalModels = true;
  env.localModelPath = root + '/';
  env.allowRemoteModels = false;
  const tok = await AutoTokenizer.from_pretrained(model);
  const m = await AutoModelForCausalLM.from_pretrained(model, { dtype: 'fp32' });
  const inputs = tok(prompt);
  const out = (await m.generate({ ...inputs, max_new_tokens: maxNew, do_sample: false })) as Tensor;
  const all = Array.from(out.data as BigInt64Array, Number);
  await m.dispose();
  return all.slice((inputs.input_ids as Tensor).dims[1]!);
}

const PROMPTS = ['the cat', 'a dog and a bird went', 'once upon a time there was', 'hello', 'the quick brown fox jumps over', 'we', 'light and dark', 'rain falls on the'];

for (const [label, make] of [['transformers.js (onnxruntime-node)', tjs], ['engine (WebGPU, SwiftShader)', engine]] as const) {
  test(`${label}: greedy generation equals transformers.js token for token; eight at once equal each alone`, async () => {
    const svc = new InferenceService({ source: folderSource(root), backends: [make()], maxSequences: 8 });
    try {
      const want = await referenceTokens('tiny-llama', PROMPTS[1]!, 12);
      const one = await svc.generate({ taskId: 'a', model: 'tiny-llama', prompt: PROMPTS[1]!, maxNewTokens: 12 });
      assert.ok(one.ok, JSON.stringify(one));
      // The reference stops at EOS too; compare up to its length.
      assert.deepEqual(one.result.tokens, want.slice(0, one.result.tokens.length));
      assert.equal(one.result.usage.completionTokens, one.result.tokens.length);
      assert.ok(one.result.usage.promptTokens > 0);

      const alone: number[][] = [];
      for (const [i, p] of PROMPTS.entries()) {
        const r = await svc.generate({ taskId: `alone-${i}`, model: 'tiny-llama', prompt: p, maxNewTokens: 6 + i });
        assert.ok(r.ok);
        alone.push(r.result.tokens);
      }
      const together = await Promise.all(PROMPTS.map((p, i) => svc.generate({ taskId: `b-${i}`, model: 'tiny-llama', prompt: p, maxNewTokens: 6 + i })));
      assert.deepEqual(
        together.map((r) => (r.ok ? r.result.tokens : r.error.code)),
        alone,
      );
      const streamed: string[] = [];
      const s = await svc.generate({ taskId: 'c', model: 'tiny-llama', messages: [{ role: 'user', content: 'hi there' }], maxNewTokens: 8, temperature: 0.8, seed: 3 }, (p) => streamed.push(p.text));
      const s2 = await svc.generate({ taskId: 'd', model: 'tiny-llama', messages: [{ role: 'user', content: 'hi there' }], maxNewTokens: 8, temperature: 0.8, seed: 3 });
      assert.ok(s.ok && s2.ok);
      assert.equal(streamed.join(''), s.result.text);
      assert.deepEqual(s.result.tokens, s2.result.tokens, 'the same seed gives the same tokens');
      const models = await svc.models();
      assert.deepEqual(models.find((m) => m.name === 'tiny-llama')?.loaded, true);
    } finally {
      await svc.close();
    }
  });
}

test('bad input comes back with a code and the runtime keeps serving', async () => {
  const svc = new InferenceService({ source: folderSource(root), backends: [engine()], maxSequences: 2, maxPositions: 64 });
  try {
    const none = await svc.generate({ taskId: 'x1', model: 'no-such-model', prompt: 'hi' });
    assert.equal(!none.ok && none.error.code, 'MODEL_NOT_FOUND');
    const gemma = await svc.generate({ taskId: 'x2', model: 'tiny-gemma', prompt: 'hi' });
    assert.equal(!gemma.ok && gemma.error.code, 'MODEL_UNSUPPORTED', 'the engine does not run Gemma');
    const long = await svc.generate({ taskId: 'x3', model: 'tiny-llama', prompt: 'the cat sat on the mat '.repeat(40) });
    assert.equal(!long.ok && long.error.code, 'PROMPT_TOO_LONG');
    const cut = await svc.generate({ taskId: 'x4', model: 'tiny-llama', prompt: 'the cat', maxNewTokens: 500 });
    assert.ok(cut.ok, 'maxNewTokens past the context ends at the context');
    assert.ok(cut.result.usage.promptTokens + cut.result.usage.completionTokens <= 64);
    const both = await svc.generate({ taskId: 'x5', model: 'tiny-llama', prompt: 'a', messages: [{ role: 'user', content: 'b' }] });
    assert.equal(!both.ok && both.error.code, 'SCHEMA_VIOLATION');

    const p = svc.generate({ taskId: 'x6', model: 'tiny-llama', prompt: 'the cat', maxNewTokens: 60 }, () => svc.cancel('x6', 'client went away'));
    const cancelled = await p;
    assert.equal(!cancelled.ok && cancelled.error.code, 'CANCELLED');
    const late = await svc.generate({ taskId: 'x7', model: 'tiny-llama', prompt: 'the cat', maxNewTokens: 60, deadline: Date.now() - 1 });
    assert.equal(!late.ok && late.error.code, 'DEADLINE_EXCEEDED');
    const ok = await svc.generate({ taskId: 'x8', model: 'tiny-llama', prompt: 'still serving', maxNewTokens: 3 });
    assert.ok(ok.ok);
    assert.equal(svc.stats().active, 0, 'every slot was freed');
  } finally {
    await svc.close();
  }
});

test('a model folder missing a file or with a truncated file is refused with its code', async () => {
  const dir = join(root, 'broken');
  await makeTinyModel({ seed: 9, dir: join(dir, 'no-weights') });
  await rm(join(dir, 'no-weights', 'model.safetensors'));
  await makeTinyModel({ seed: 9, dir: join(dir, 'truncated') });
  await writeFile(join(dir, 'truncated', 'model.safetensors'), new Uint8Array(100));
  const svc = new InferenceService({ source: folderSource(dir), backends: [engine()] });
  try {
    const a = await svc.generate({ taskId: 'm1', model: 'no-weights', prompt: 'hi' });
    assert.equal(!a.ok && a.error.code, 'MODEL_UNSUPPORTED', 'no backend here can run a folder with neither its safetensors nor (for this backend) an ONNX path');
    const b = await svc.generate({ taskId: 'm2', model: 'truncated', prompt: 'hi' });
    assert.ok(!b.ok && ['SAFETENSORS_INVALID', 'MODEL_CORRUPT'].includes(b.error.code), JSON.stringify(b));
  } finally {
    await svc.close();
  }
  // A Qwen2 folder whose config.json says model_type llama: refused by either backend before it loads.
  await makeTinyModel({ seed: 9, arch: 'qwen2', dir: join(dir, 'mislabelled') });
  const configPath = join(dir, 'mislabelled', 'config.json');
  await writeFile(configPath, JSON.stringify({ ...(JSON.parse(await readFile(configPath, 'utf8')) as object), model_type: 'llama' }));
  for (const backend of [engine(), tjs()]) {
    const one = new InferenceService({ source: folderSource(dir), backends: [backend] });
    try {
      const c = await one.generate({ taskId: `m3-${backend.backend}`, model: 'mislabelled', prompt: 'hi' });
      assert.equal(!c.ok && c.error.code, 'MODEL_CONFIG_INCONSISTENT', `${backend.backend}: ${JSON.stringify(c)}`);
    } finally {
      await one.close();
    }
  }
});

test('a memory budget unloads the least recently used idle model; one over the budget is MODEL_TOO_LARGE', async () => {
  // What each model takes loaded (weights + KV cache): a budget that holds one of them, not both.
  const sizes: number[] = [];
  for (const model of ['tiny-llama', 'tiny-gemma']) {
    const probe = new InferenceService({ source: folderSource(root), backends: [tjs()], maxSequences: 2, maxPositions: 64 });
    assert.ok((await probe.generate({ taskId: 'p', model, prompt: 'hi', maxNewTokens: 1 })).ok);
    sizes.push(probe.stats().gpuMemoryBytes);
    await probe.close();
  }
  const budget = Math.floor(Math.max(...sizes) * 1.5);
  assert.ok(budget < sizes[0]! + sizes[1]!);
  const svc = new InferenceService({ source: folderSource(root), backends: [tjs()], maxSequences: 2, maxPositions: 64, memoryBudgetBytes: budget });
  const unloaded: string[] = [];
  svc.on((e) => {
    if (e.type === 'unload') unloaded.push(e.model);
  });
  try {
    assert.ok((await svc.generate({ taskId: 'l1', model: 'tiny-llama', prompt: 'hi', maxNewTokens: 2 })).ok);
    assert.ok((await svc.generate({ taskId: 'l2', model: 'tiny-gemma', prompt: 'hi', maxNewTokens: 2 })).ok);
    assert.deepEqual(unloaded, ['tiny-llama']);
    const loaded = (await svc.models()).filter((m) => m.loaded).map((m) => m.name);
    assert.deepEqual(loaded, ['tiny-gemma']);
  } finally {
    await svc.close();
  }
  const tiny = new InferenceService({ source: folderSource(root), backends: [tjs()], memoryBudgetBytes: 1000 });
  try {
    const r = await tiny.generate({ taskId: 'l3', model: 'tiny-llama', prompt: 'hi' });
    assert.equal(!r.ok && r.error.code, 'MODEL_TOO_LARGE');
  } finally {
    await tiny.close();
  }
});

test('with both backends able to run a model, the node measures them and keeps the faster', async () => {
  const svc = new InferenceService({ source: folderSource(root), backends: [engine(), tjs()], maxSequences: 4, maxPositions: 64 });
  try {
    const loads: string[] = [];
    svc.on((e) => {
      if (e.type === 'load') loads.push(`${e.backend}/${e.device}`);
    });
    const r = await svc.generate({ taskId: 'f1', model: 'tiny-llama', prompt: 'the cat', maxNewTokens: 4 });
    assert.ok(r.ok);
    const [cap] = (await svc.models()).filter((m) => m.name === 'tiny-llama');
    assert.ok(cap?.loaded && cap.tokensPerSec !== undefined && cap.tokensPerSec > 0);
    assert.equal(loads.length, 1);
    assert.equal(`${r.result.backend}/${r.result.device}`, loads[0]);
  } finally {
    await svc.close();
  }
});

test('engine: LoRA adapters from the model folder are switched per request, base and adapters in one batch', async () => {
  const dir = join(root, 'adapted');
  await makeTinyModel({ seed: 21, dir: join(dir, 'tiny-llama') });
  const folder = join(dir, 'tiny-llama');
  const loaded = await loadModelFolder(async (p) => new Uint8Array(await readFile(join(folder, p))));
  const { config, weights, tokenizer, fingerprint } = loaded;
  const rng = mulberry32(77);
  const adapters: Record<string, LoraAdapter> = {};
  for (const [name, r, targets] of [['tuned', 4, ['q_proj', 'v_proj', 'down_proj']], ['other', 2, ['o_proj', 'up_proj']]] as const) {
    const map = randomLoraPairs(config, r, targets, () => (rng.next() - 0.5) * 0.6);
    const adapter: LoraAdapter = { settings: { r, alpha: 2 * r, dropout: 0, targetModules: [...targets] }, baseModel: 'tiny-llama', baseFingerprint: fingerprint, weights: map };
    adapters[name] = adapter;
    const files = saveAdapter(adapter, config);
    await mkdir(join(folder, 'adapters', name), { recursive: true });
    await writeFile(join(folder, 'adapters', name, 'adapter_config.json'), files.configJson);
    await writeFile(join(folder, 'adapters', name, 'adapter_model.safetensors'), files.safetensors);
  }
  // Greedy on the float64 reference with the adapter merged in its forward (no KV cache: the tiny model is cheap).
  const refGreedy = (prompt: number[], n: number, lora?: LoraAdapter): number[] => {
    const ids = [...prompt];
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const logits = referenceForward(config, weights, lora ? { inputIds: [ids], lora } : { inputIds: [ids] }).logits;
      const V = config.vocabSize;
      const last = logits.subarray((ids.length - 1) * V, ids.length * V);
      let best = 0;
      for (let v = 1; v < V; v++) if (last[v]! > last[best]!) best = v;
      out.push(best);
      if (config.eosTokenIds.includes(best)) break;
      ids.push(best);
    }
    return out;
  };
  const prompt = 'once upon a time';
  const promptIds = tokenizer.encode(prompt, { addSpecialTokens: true });
  const svc = new InferenceService({ source: folderSource(dir), backends: [engine()], maxSequences: 4 });
  try {
    const runs = await Promise.all([
      svc.generate({ taskId: 'ad-base', model: 'tiny-llama', prompt, maxNewTokens: 8 }),
      svc.generate({ taskId: 'ad-tuned', model: 'tiny-llama', adapter: 'tuned', prompt, maxNewTokens: 8 }),
      svc.generate({ taskId: 'ad-other', model: 'tiny-llama', adapter: 'other', prompt, maxNewTokens: 8 }),
    ]);
    const [base, tuned, other] = runs.map((r) => {
      assert.ok(r.ok, JSON.stringify(r));
      return r.result.tokens;
    });
    assert.deepEqual(base, refGreedy(promptIds, 8));
    assert.deepEqual(tuned, refGreedy(promptIds, 8, adapters.tuned));
    assert.deepEqual(other, refGreedy(promptIds, 8, adapters.other));
    assert.notDeepEqual(tuned, base, 'the adapter changes the output');
    const missing = await svc.generate({ taskId: 'ad-x', model: 'tiny-llama', adapter: 'nope', prompt });
    assert.equal(!missing.ok && missing.error.code, 'ADAPTER_NOT_FOUND');
  } finally {
    await svc.close();
  }
  const wasmOnly = new InferenceService({ source: folderSource(dir), backends: [tjs()] });
  try {
    const r = await wasmOnly.generate({ taskId: 'ad-w', model: 'tiny-llama', adapter: 'tuned', prompt });
    assert.equal(!r.ok && r.error.code, 'MODEL_UNSUPPORTED', 'adapters run on the engine only');
  } finally {
    await wasmOnly.close();
  }
});

test('a GPU device lost mid-generation fails that task GPU_DEVICE_LOST (retryable); the next one reloads the model on a new device', async () => {
  const own = await createNodeGpuContext();
  const backend = engineBackend({
    gpu: async () => {
      try {
        own.checkAlive();
      } catch {
        await own.reset();
      }
      return own;
    },
  });
  const svc = new InferenceService({ source: folderSource(root), backends: [backend], maxSequences: 2 });
  const loads: string[] = [];
  svc.on((e) => {
    if (e.type === 'load' || e.type === 'unload') loads.push(`${e.type}:${e.model}`);
  });
  try {
    let seen = 0;
    const lost = await svc.generate({ taskId: 'gl1', model: 'tiny-llama', prompt: 'the cat', maxNewTokens: 40 }, () => {
      if (++seen === 3) own.device.destroy();
    });
    assert.equal(!lost.ok && lost.error.code, 'GPU_DEVICE_LOST');
    const again = await svc.generate({ taskId: 'gl2', model: 'tiny-llama', prompt: 'the cat', maxNewTokens: 4 });
    assert.ok(again.ok, JSON.stringify(again));
    assert.deepEqual(loads, ['load:tiny-llama', 'unload:tiny-llama', 'load:tiny-llama']);
  } finally {
    await svc.close();
    own.destroy();
  }
});
