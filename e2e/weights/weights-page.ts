/** The page script of weights.html: a WeightStore on this origin (the harness proxies /v1 and /models to the coordinator). */
import { openDB } from 'idb';
import { AppError } from '../../shared';
import { loadModelFolder } from '../../worker/model';
import { WeightStore, type ModelHold, type WeightProgress, type WeightStoreOptions } from '../../worker/weights';
import type { Outcome, WeightsPageApi } from './page-api';

const DB = 'weights';
const holds = new Map<string, ModelHold>();

function store(opts: WeightStoreOptions = {}): WeightStore {
  return new WeightStore({ dbName: DB, ...opts });
}

async function outcome<T>(fn: () => Promise<T>): Promise<Outcome<T>> {
  const t0 = performance.now();
  try {
    const value = await fn();
    return { ok: true, value, ms: performance.now() - t0 };
  } catch (err) {
    const code = err instanceof AppError ? err.code : 'UNCODED';
    return { ok: false, code, message: (err as Error).message, ms: performance.now() - t0 };
  }
}

async function hex(bytes: Uint8Array): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>));
  return [...d].map((b) => b.toString(16).padStart(2, '0')).join('');
}

const api: WeightsPageApi = {
  ensure: (model, call = {}) =>
    outcome(async () => {
      const progress: WeightProgress[] = [];
      const ctrl = new AbortController();
      let chunks = 0;
      const result = await store(call.store).ensure(model, {
        signal: ctrl.signal,
        offline: call.offline,
        onProgress: (p) => {
          progress.push(p);
          if (p.file !== null && ++chunks === call.abortAfterChunks) ctrl.abort(new Error('test abort'));
        },
      });
      return { ...result, progress };
    }),
  async startEnsure(model, call = {}) {
    window.weightsLoaded = 0;
    void store(call.store)
      .ensure(model, { onProgress: (p) => (window.weightsLoaded = p.loadedBytes) })
      .catch(() => undefined);
  },
  readFile: (model, path, opts) =>
    outcome(async () => {
      const s = store(opts);
      const bytes = await s.readFile(model, path);
      return { size: bytes.length, sha256: await hex(bytes), stats: await s.stats() };
    }),
  list: () => store().list(),
  stats: (opts) => store(opts).stats(),
  delete: (model) => store().delete(model),
  async hold(model) {
    holds.set(model, await store().hold(model));
  },
  async release(model) {
    holds.get(model)?.release();
    holds.delete(model);
  },
  async corruptChunk(model, path, index) {
    const db = await openDB(DB);
    const chunk = (await db.get('chunks', [model, path, index])) as { data: Uint8Array } | undefined;
    if (!chunk) throw new Error(`no chunk ${model}/${path}#${index}`);
    const data = chunk.data.slice();
    for (let i = 0; i < data.length; i += 97) data[i] = data[i]! ^ 0xff;
    await db.put('chunks', { ...chunk, data });
    db.close();
  },
  loadFolder: (model) =>
    outcome(async () => {
      const m = await loadModelFolder(store().reader(model));
      return { hiddenSize: m.config.hiddenSize, layers: m.config.numLayers, vocab: m.config.vocabSize, fingerprint: m.fingerprint };
    }),
  transformers: (model, text) =>
    outcome(async () => {
      const t = await import('@huggingface/transformers');
      t.env.allowLocalModels = false;
      t.env.allowRemoteModels = true;
      t.env.remoteHost = `${location.origin}/models/`;
      t.env.remotePathTemplate = '{model}/';
      t.env.useBrowserCache = false;
      t.env.useCustomCache = true;
      t.env.customCache = store().customCache();
      const config = await t.AutoConfig.from_pretrained(model);
      const tok = await t.AutoTokenizer.from_pretrained(model);
      return { modelType: String((config as unknown as { model_type: string }).model_type), ids: Array.from(tok.encode(text)) };
    }),
  cacheRoundTrip: (key, text) =>
    outcome(async () => {
      const s = store();
      const cache = s.customCache();
      await cache.put(key, new Response(text));
      const hit = await cache.match(key);
      const model = new URL(key, location.href).pathname.split('/')[2]!;
      return { matched: hit ? await hit.text() : null, listed: (await s.list()).find((m) => m.name === model) ?? null };
    }),
};
window.weightsE2E = api;
