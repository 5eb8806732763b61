/**
 * The adapter registry over real HTTP: a PEFT adapter written here by hand (safetensors bytes built
 * from PEFT's key names, not with the project's writer) is uploaded, versioned, listed, downloaded
 * byte-identical, served in the base's manifest and listed by /v1/models as BASE:ADAPTER; malformed
 * adapters and adapters for another base are refused with their codes and nothing is stored.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeBuiltinModels } from '../tools/tiny-model/builtin';
import { loadModelFolder } from '../worker/model/folder';
import { loadAdapter } from '../worker/model/peft';
import type { GpuContext } from '../worker/engine';
import { referenceForward } from '../worker/engine/reference';
import { engineBackend, InferenceService } from '../worker/inference';
import type { ModelFiles, ModelSource } from '../worker/inference/service';
import { createNodeGpuContext } from '../worker/node';
import { createCoordinator, type Coordinator } from './index';
import { apiClient, tempDir, trainedAdapterFiles, type ApiAnswer } from './testing';

const BASE = 'tiny-llama';
const sha = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

interface BaseShape {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  layers: number;
}

/** [in, out] of each projection, from a Llama config.json (as PEFT's LoRA wraps nn.Linear(in, out)). */
function projShape(b: BaseShape, module: string): [number, number] {
  const q = b.heads * b.headDim;
  const kv = b.kvHeads * b.headDim;
  const shapes: Record<string, [number, number]> = {
    q_proj: [b.hidden, q],
    k_proj: [b.hidden, kv],
    v_proj: [b.hidden, kv],
    o_proj: [q, b.hidden],
    gate_proj: [b.hidden, b.intermediate],
    up_proj: [b.hidden, b.intermediate],
    down_proj: [b.intermediate, b.hidden],
  };
  return shapes[module]!;
}

/** A deterministic small-weight generator (xorshift). */
function rng(seed: number, amplitude = 0.1): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) / 2 ** 32 - 0.5) * amplitude;
  };
}

/** safetensors by hand: 8-byte little-endian header length, the JSON header, then F32 data. */
function safetensors(tensors: { name: string; shape: number[] }[], seed: number, metadata?: Record<string, string>, amplitude?: number): Uint8Array {
  const next = rng(seed, amplitude);
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const datas: Float32Array[] = [];
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    header[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + n * 4] };
    offset += n * 4;
    datas.push(Float32Array.from({ length: n }, next));
  }
  let json = JSON.stringify(header);
  while ((8 + json.length) % 8 !== 0) json += ' ';
  const head = new TextEncoder().encode(json);
  const out = new Uint8Array(8 + head.length + offset);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  let at = 8 + head.length;
  for (const d of datas) {
    out.set(new Uint8Array(d.buffer), at);
    at += d.byteLength;
  }
  return out;
}

interface AdapterOpts {
  r?: number;
  modules?: string[];
  shape?: BaseShape;
  seed?: number;
  metadata?: Record<string, string>;
  /** target_modules in the config (default: `modules`). */
  configModules?: string[];
  /** Weights uniform in ±amplitude/2. */
  amplitude?: number;
}

function peftAdapter(base: BaseShape, o: AdapterOpts = {}): { config: string; weights: Uint8Array } {
  const r = o.r ?? 4;
  const modules = o.modules ?? ['q_proj', 'v_proj'];
  const shape = o.shape ?? base;
  const tensors: { name: string; shape: number[] }[] = [];
  for (let i = 0; i < shape.layers; i++) {
    for (const m of modules) {
      const group = ['gate_proj', 'up_proj', 'down_proj'].includes(m) ? 'mlp' : 'self_attn';
      const [inDim, outDim] = projShape(shape, m);
      tensors.push({ name: `base_model.model.model.layers.${i}.${group}.${m}.lora_A.weight`, shape: [r, inDim] });
      tensors.push({ name: `base_model.model.model.layers.${i}.${group}.${m}.lora_B.weight`, shape: [outDim, r] });
    }
  }
  const config = {
    base_model_name_or_path: 'exec-node/tiny-llama',
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    lora_alpha: 8,
    lora_dropout: 0,
    peft_type: 'LORA',
    r,
    target_modules: o.configModules ?? modules,
    task_type: 'CAUSAL_LM',
  };
  return { config: JSON.stringify(config), weights: safetensors(tensors, o.seed ?? 7, o.metadata ?? { format: 'pt' }, o.amplitude) };
}

describe('adapter registry over real HTTP', () => {
  const tmp = tempDir('adapters-');
  let c: Coordinator;
  let api: (path: string, init?: RequestInit & { json?: unknown }) => Promise<ApiAnswer>;
  let base: BaseShape;
  let baseDir: string;
  const v1 = () => peftAdapter(base, { seed: 11 });
  const v2 = () => peftAdapter(base, { seed: 22 });

  const upload = (name: string, a: { config: string; weights: Uint8Array }, extra: Record<string, string> = {}, baseName = BASE): Promise<ApiAnswer> =>
    api(`/v1/adapters/${baseName}/${name}`, {
      method: 'PUT',
      body: a.weights as Uint8Array<ArrayBuffer>,
      headers: { 'content-type': 'application/octet-stream', 'x-adapter-config': a.config, ...extra },
    });
  const bytes = async (path: string): Promise<{ status: number; body: Uint8Array }> => {
    const res = await fetch(c.url + path);
    return { status: res.status, body: new Uint8Array(await res.arrayBuffer()) };
  };

  before(async () => {
    const written = await makeBuiltinModels(join(tmp.dir, 'models'), { only: [BASE] });
    baseDir = written[0]!.dir;
    const cfg = JSON.parse(readFileSync(join(baseDir, 'config.json'), 'utf8')) as Record<string, number>;
    base = {
      hidden: cfg.hidden_size!,
      heads: cfg.num_attention_heads!,
      kvHeads: cfg.num_key_value_heads ?? cfg.num_attention_heads!,
      headDim: cfg.head_dim ?? cfg.hidden_size! / cfg.num_attention_heads!,
      intermediate: cfg.intermediate_size!,
      layers: cfg.num_hidden_layers!,
    };
    c = await createCoordinator({ dbPath: join(tmp.dir, 'coordinator.db'), modelsDir: join(tmp.dir, 'models') });
    api = apiClient(c.url);
  });

  after(async () => {
    await c.close();
    tmp.cleanup();
  });

  test('upload → versioned, listed, downloaded byte-identical, in the manifest and /v1/models', async () => {
    const a1 = v1();
    const a2 = v2();
    const r1 = await upload('style', a1);
    assert.equal(r1.status, 201, JSON.stringify(r1.body));
    assert.equal(r1.body.version, 1);
    assert.equal(r1.body.sha256, sha(a1.weights));
    assert.equal(r1.body.size, a1.weights.byteLength);
    assert.equal(r1.body.r, 4);
    assert.equal(r1.body.baseModel, 'exec-node/tiny-llama');
    // The fingerprint as defined: SHA-256 of config.json, "\n", then path:sha256 of each weights file.
    const manifest0 = (await api(`/v1/models/${BASE}/manifest`)).body as { files: { path: string; size: number; sha256: string }[] };
    const weights = manifest0.files.filter((f) => f.path.endsWith('.safetensors') && !f.path.startsWith('adapters/'));
    assert.ok(weights.length > 0);
    const configBytes = readFileSync(join(baseDir, 'config.json'));
    const expectedFp = sha(Buffer.concat([configBytes, Buffer.from('\n' + weights.map((f) => `${f.path}:${f.sha256}`).join('\n'))]));
    assert.equal(r1.body.fingerprint, expectedFp);
    const r2 = await upload('style', a2, { 'x-base-fingerprint': expectedFp });
    assert.equal(r2.status, 201, JSON.stringify(r2.body));
    assert.equal(r2.body.version, 2);

    // Stored under the journal's folder, never in the model folder.
    assert.deepEqual(readFileSync(join(tmp.dir, 'adapters', BASE, 'style', '1', 'adapter_model.safetensors')), Buffer.from(a1.weights));

    const list = await api('/v1/adapters');
    assert.equal(list.status, 200);
    assert.equal(list.body.adapters.length, 1);
    const rec = list.body.adapters[0];
    assert.equal(rec.id, `${BASE}:style`);
    assert.equal(rec.base, BASE);
    assert.equal(rec.latest, 2);
    assert.deepEqual(
      rec.versions.map((v: { version: number; sha256: string; fingerprint: string; createdAt: number }) => [v.version, v.sha256, v.fingerprint, typeof v.createdAt]),
      [
        [1, sha(a1.weights), expectedFp, 'number'],
        [2, sha(a2.weights), expectedFp, 'number'],
      ],
    );

    const one = await api(`/v1/adapters/${BASE}/style`);
    assert.equal(one.status, 200);
    assert.equal(one.body.latest, 2);
    const first = await api(`/v1/adapters/${BASE}/style@1`);
    assert.equal(first.status, 200);
    assert.equal(first.body.version, 1);
    assert.equal((await api(`/v1/adapters/${BASE}/style@9`)).body.error.code, 'ADAPTER_NOT_FOUND');

    const d1 = await bytes(`/v1/adapters/${BASE}/style@1/adapter_model.safetensors`);
    assert.equal(d1.status, 200);
    assert.deepEqual(d1.body, a1.weights);
    const dLatest = await bytes(`/v1/adapters/${BASE}/style/adapter_model.safetensors`);
    assert.deepEqual(dLatest.body, a2.weights);
    const cfg1 = await bytes(`/v1/adapters/${BASE}/style@1/adapter_config.json`);
    assert.equal(new TextDecoder().decode(cfg1.body), a1.config);

    // The base's manifest serves the latest version where the node's engine looks (adapters/<name>/).
    const manifest = (await api(`/v1/models/${BASE}/manifest`)).body as { files: { path: string; size: number; sha256: string }[]; totalBytes: number };
    const st = manifest.files.find((f) => f.path === 'adapters/style/adapter_model.safetensors');
    const ac = manifest.files.find((f) => f.path === 'adapters/style/adapter_config.json');
    assert.deepEqual(st, { path: 'adapters/style/adapter_model.safetensors', size: a2.weights.byteLength, sha256: sha(a2.weights) });
    assert.deepEqual(ac, { path: 'adapters/style/adapter_config.json', size: Buffer.byteLength(a2.config), sha256: sha(a2.config) });
    assert.equal(manifest.totalBytes, manifest.files.reduce((n, f) => n + f.size, 0));
    const served = await bytes(`/models/${BASE}/adapters/style/adapter_model.safetensors`);
    assert.equal(served.status, 200);
    assert.deepEqual(served.body, a2.weights);
    const servedCfg = await bytes(`/models/${BASE}/adapters/style/adapter_config.json`);
    assert.equal(sha(servedCfg.body), ac!.sha256);

    const models = await api('/v1/models');
    const ids = (models.body.data as { id: string; parent?: string }[]).map((m) => m.id);
    assert.ok(ids.includes(BASE), ids.join(','));
    const adapterObj = (models.body.data as { id: string; parent?: string; served: boolean }[]).find((m) => m.id === `${BASE}:style`);
    assert.ok(adapterObj, ids.join(','));
    assert.equal(adapterObj.parent, BASE);
    assert.equal(adapterObj.served, true);
    assert.equal((await api(`/v1/models/${BASE}:style`)).status, 200);
  });

  test("an adapter the project's trainer writes (saveAdapter, engine fingerprint in its metadata) is accepted", async () => {
    const files = await trainedAdapterFiles(baseDir, BASE);
    // Its pretty-printed config cannot travel in a header: the JSON form carries it (and base64 weights).
    const a = await api(`/v1/adapters/${BASE}/trained`, { method: 'PUT', json: { config: files.configJson, weights: Buffer.from(files.safetensors).toString('base64') } });
    assert.equal(a.status, 201, JSON.stringify(a.body));
    assert.equal(a.body.engineFingerprint, files.fingerprint);
    assert.deepEqual((await bytes(`/v1/adapters/${BASE}/trained/adapter_model.safetensors`)).body, files.safetensors);
    assert.equal(new TextDecoder().decode((await bytes(`/v1/adapters/${BASE}/trained/adapter_config.json`)).body), files.configJson);
    const asObject = await api(`/v1/adapters/${BASE}/trained`, { method: 'PUT', json: { config: JSON.parse(files.configJson), weights: Buffer.from(files.safetensors).toString('base64') } });
    assert.equal(asObject.status, 201, JSON.stringify(asObject.body));
    assert.equal(asObject.body.version, 2);
    const notB64 = await api(`/v1/adapters/${BASE}/trained`, { method: 'PUT', json: { config: files.configJson, weights: '!!' } });
    assert.equal(notB64.body.error.code, 'ADAPTER_INVALID');
  });

  test('submit-time check: an adapter the coordinator does not know is ADAPTER_NOT_FOUND (tasks and OpenAI)', async () => {
    await upload('known', v1());
    const bad = await api('/v1/tasks', { method: 'POST', json: { kind: 'generate', payload: { model: BASE, adapter: 'nope', prompt: 'hi' } } });
    assert.equal(bad.status, 404, JSON.stringify(bad.body));
    assert.equal(bad.body.error.code, 'ADAPTER_NOT_FOUND');
    const good = await api('/v1/tasks', { method: 'POST', json: { kind: 'generate', payload: { model: BASE, adapter: 'known', prompt: 'hi' } } });
    assert.equal(good.status, 202, JSON.stringify(good.body));
    await api(`/v1/tasks/${good.body.id}/cancel`, { method: 'POST', json: {} });
    const chat = await api('/v1/chat/completions', { method: 'POST', json: { model: `${BASE}:nope`, messages: [{ role: 'user', content: 'hi' }] } });
    assert.equal(chat.status, 404, JSON.stringify(chat.body));
    assert.equal(chat.body.error.code, 'adapter_not_found');
    assert.equal(chat.body.error.param, 'model');
  });

  test('refused with a code, nothing stored: wrong shapes, another base, malformed, unknown target module, fingerprints', async () => {
    const before = JSON.stringify((await api('/v1/adapters')).body);
    const cases: { what: string; adapter: { config: string; weights: Uint8Array }; headers?: Record<string, string>; code: string; base?: string; status?: number }[] = [
      { what: 'another base (hidden size 2×)', adapter: peftAdapter(base, { shape: { ...base, hidden: base.hidden * 2 } }), code: 'ADAPTER_MISMATCH' },
      { what: 'another base (intermediate size)', adapter: peftAdapter(base, { modules: ['down_proj'], shape: { ...base, intermediate: base.intermediate + 8 } }), code: 'ADAPTER_MISMATCH' },
      { what: 'more layers than the base', adapter: peftAdapter(base, { shape: { ...base, layers: base.layers + 1 } }), code: 'ADAPTER_MISMATCH' },
      {
        what: 'rank differs from the config',
        adapter: { config: peftAdapter(base, { r: 8 }).config, weights: peftAdapter(base, { r: 4 }).weights },
        code: 'ADAPTER_INVALID',
      },
      { what: 'unknown target module', adapter: peftAdapter(base, { configModules: ['q_proj', 'v_proj', 'foo_proj'] }), code: 'ADAPTER_INVALID' },
      { what: 'malformed safetensors', adapter: { config: v1().config, weights: new Uint8Array([255, 255, 255, 255, 0, 0, 0, 0, 1, 2, 3]) }, code: 'ADAPTER_INVALID' },
      {
        what: 'not PEFT key names',
        adapter: { config: v1().config, weights: safetensors([{ name: 'model.layers.0.self_attn.q_proj.weight', shape: [4, base.hidden] }], 3) },
        code: 'ADAPTER_INVALID',
      },
      { what: 'config not JSON', adapter: { config: '{not json', weights: v1().weights }, code: 'ADAPTER_INVALID' },
      { what: 'engine fingerprint of another base', adapter: peftAdapter(base, { metadata: { format: 'pt', base_fingerprint: 'f'.repeat(64) } }), code: 'ADAPTER_MISMATCH' },
      { what: 'stated registry fingerprint differs', adapter: v1(), headers: { 'x-base-fingerprint': '0'.repeat(64) }, code: 'ADAPTER_MISMATCH' },
      { what: 'unknown base', adapter: v1(), base: 'no-such-model', code: 'MODEL_NOT_FOUND', status: 404 },
    ];
    for (const k of cases) {
      const a = await upload('bad', k.adapter, k.headers ?? {}, k.base ?? BASE);
      assert.equal(a.status, k.status ?? 422, `${k.what}: ${a.status} ${JSON.stringify(a.body)}`);
      assert.equal(a.body.error.code, k.code, `${k.what}: ${JSON.stringify(a.body)}`);
    }
    // The JSON form is for small adapters: a base64 string past the JSON parser's 256 Ki characters, or a body past 1 MiB, is refused.
    const long = await api(`/v1/adapters/${BASE}/bad`, { method: 'PUT', json: { config: v1().config, weights: 'A'.repeat(300_000) } });
    assert.equal(long.status, 400);
    assert.equal(long.body.error.code, 'JSON_STRING_TOO_LONG');
    const big = await api(`/v1/adapters/${BASE}/bad`, { method: 'PUT', json: { config: v1().config, weights: 'A'.repeat(200_000), pad: Array.from({ length: 5 }, () => 'A'.repeat(200_000)) } });
    assert.equal(big.status, 413);
    assert.equal(big.body.error.code, 'BODY_TOO_LARGE');
    assert.match(big.body.error.message, /application\/octet-stream/);
    const noConfig = await api(`/v1/adapters/${BASE}/bad`, { method: 'PUT', body: v1().weights as Uint8Array<ArrayBuffer>, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(noConfig.body.error.code, 'ADAPTER_INVALID');
    assert.equal(JSON.stringify((await api('/v1/adapters')).body), before, 'no refused upload is stored');
    assert.equal((await api(`/v1/adapters/${BASE}/bad`)).body.error.code, 'ADAPTER_NOT_FOUND');
  });
});

/** The node's side in Node: the coordinator's manifest and files over HTTP, each file checked against its digest. */
function coordinatorSource(url: string, ensured: string[]): ModelSource {
  return {
    list: async () => [],
    async ensure(model): Promise<ModelFiles> {
      ensured.push(model);
      const m = (await (await fetch(`${url}/v1/models/${model}/manifest`)).json()) as { files: { path: string; sha256: string }[]; totalBytes: number };
      const digests = new Map(m.files.map((f) => [f.path, f.sha256]));
      return {
        paths: m.files.map((f) => f.path),
        totalBytes: m.totalBytes,
        async readFile(path) {
          const res = await fetch(`${url}/models/${model}/${path}`);
          if (!res.ok) throw new Error(`${path}: HTTP ${res.status}`);
          const b = new Uint8Array(await res.arrayBuffer());
          assert.equal(sha(b), digests.get(path), `${path} matches the manifest`);
          return b;
        },
      };
    },
  };
}

describe('a node that already holds the base picks up a newly uploaded adapter (engine on WebGPU in Node)', () => {
  const tmp = tempDir('adapters-node-');
  let c: Coordinator;
  let gpu: GpuContext;

  before(async () => {
    await makeBuiltinModels(join(tmp.dir, 'models'), { only: [BASE] });
    c = await createCoordinator({ dbPath: join(tmp.dir, 'coordinator.db'), modelsDir: join(tmp.dir, 'models') });
    gpu = await createNodeGpuContext();
  });

  after(async () => {
    await c.close();
    gpu?.destroy();
    tmp.cleanup();
  });

  test('ADAPTER_NOT_FOUND before the upload; after it, the same loaded model runs it (one manifest refresh) and its tokens are the reference\'s', async () => {
    const baseDir = join(tmp.dir, 'models', BASE);
    const folder = await loadModelFolder((p) => readFile(join(baseDir, ...p.split('/'))).then((b) => new Uint8Array(b)));
    const cfg = folder.config;
    const shape: BaseShape = {
      hidden: cfg.hiddenSize,
      heads: cfg.numHeads,
      kvHeads: cfg.numKvHeads,
      headDim: cfg.headDim,
      intermediate: cfg.intermediateSize,
      layers: cfg.numLayers,
    };
    const ensured: string[] = [];
    const svc = new InferenceService({ source: coordinatorSource(c.url, ensured), backends: [engineBackend({ gpu: async () => gpu })], maxSequences: 2 });
    const prompt = 'once upon a time';
    const N = 8;
    try {
      const base = await svc.generate({ taskId: 'n-base', model: BASE, prompt, maxNewTokens: N });
      assert.ok(base.ok, JSON.stringify(base));
      assert.equal(ensured.length, 1);
      const early = await svc.generate({ taskId: 'n-early', model: BASE, adapter: 'late', prompt, maxNewTokens: N });
      assert.equal(!early.ok && early.error.code, 'ADAPTER_NOT_FOUND');
      assert.equal(ensured.length, 2, 'a miss asks the coordinator once more');

      const a = peftAdapter(shape, { modules: ['q_proj', 'v_proj', 'down_proj'], seed: 99, amplitude: 1.2 });
      const put = await fetch(`${c.url}/v1/adapters/${BASE}/late`, {
        method: 'PUT',
        body: a.weights as Uint8Array<ArrayBuffer>,
        headers: { 'content-type': 'application/octet-stream', 'x-adapter-config': a.config },
      });
      assert.equal(put.status, 201, await put.text());

      const tuned = await svc.generate({ taskId: 'n-tuned', model: BASE, adapter: 'late', prompt, maxNewTokens: N });
      assert.ok(tuned.ok, JSON.stringify(tuned));
      assert.equal(ensured.length, 3, 'one refresh found it; the base was not reloaded');
      const again = await svc.generate({ taskId: 'n-again', model: BASE, adapter: 'late', prompt, maxNewTokens: N });
      assert.ok(again.ok);
      assert.equal(ensured.length, 3, 'a held adapter needs no refresh');
      assert.deepEqual(again.result.tokens, tuned.result.tokens);
      const advertised = (await svc.models()).find((m) => m.name === BASE);
      assert.deepEqual(advertised?.adapters, ['late'], 'the node advertises the adapter it holds, for the router');

      // The float64 reference forward with the adapter merged, greedy.
      const lora = loadAdapter({ configJson: a.config, safetensors: a.weights }, cfg);
      const ids = folder.tokenizer.encode(prompt, { addSpecialTokens: true });
      const ref: number[] = [];
      for (let i = 0; i < N; i++) {
        const logits = referenceForward(cfg, folder.weights, { inputIds: [ids], lora }).logits;
        const V = cfg.vocabSize;
        const last = logits.subarray((ids.length - 1) * V, ids.length * V);
        let best = 0;
        for (let v = 1; v < V; v++) if (last[v]! > last[best]!) best = v;
        ref.push(best);
        if (cfg.eosTokenIds.includes(best)) break;
        ids.push(best);
      }
      assert.deepEqual(tuned.result.tokens, ref);
      assert.notDeepEqual(tuned.result.tokens, base.result.tokens, 'the adapter changes the output');
    } finally {
      await svc.close();
    }
  });
});
