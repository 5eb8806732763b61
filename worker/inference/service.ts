/**
 * The node's inference runtime, in-thread: model files from a `ModelSource` (the IndexedDB weight
 * store in the page; a folder in Node tests), a backend chosen per model among those that can run it
 * (measured when several can), one continuous batcher per loaded model, and a memory budget with
 * least-recently-used unloading. The page runs it inside a Web Worker (./worker-api.ts).
 */
import {
  MAX_MODEL_ADAPTERS,
  AppError,
  serializeError,
  type ErrorCode,
  type ErrorInfo,
  type GenerateResult,
  type InferenceBackendKind,
  type InferenceDevice,
  type ModelCapability,
} from '../../shared';
import { checkModelType, loadTokenizer, type ModelTokenizer } from '../model';
import { Batcher, type GenerationOutput } from './batcher';
import type {
  BatchDecoder,
  CachedModelInfo,
  GenerateRunOutcome,
  GenerateRunRequest,
  GenerationProgress,
  GenerationRequest,
  InferenceEvent,
  InferenceRuntime,
  InferenceRuntimeStats,
} from './types';
import type { TrainProgress, TrainRunOutcome, TrainRunRequest, TrainRunResult } from './train';

/** Where a model's files come from. */
export interface ModelSource {
  /** Models whose files are held (downloaded and verified). */
  list(): Promise<string[]>;
  /** The store's models with their size and digest state (optional: a folder has nothing to show). */
  cached?(): Promise<CachedModelInfo[]>;
  /** Makes the model's files available (downloading what is missing); answers their paths. */
  ensure(model: string, opts: { onProgress?: (loadedBytes: number, totalBytes: number) => void; signal?: AbortSignal }): Promise<ModelFiles>;
}

export interface ModelFiles {
  /** Paths inside the model folder, `/`-separated. */
  paths: readonly string[];
  totalBytes: number;
  readFile(path: string): Promise<Uint8Array>;
  /** Called when the model is unloaded or the runtime closes (lets the store evict it again). */
  release?(): void;
}

/** What a backend is given to load a model. */
export interface LoadRequest {
  name: string;
  files: ModelFiles;
  /** config.json, parsed. */
  config: Record<string, unknown>;
  maxSlots: number;
  maxPositions: number;
}

/** One way to run models: our engine on WebGPU, or transformers.js on WebGPU / WASM. */
export interface InferenceBackend {
  readonly backend: InferenceBackendKind;
  readonly device: InferenceDevice;
  /** null when it can run the model, else why it cannot (shown in MODEL_UNSUPPORTED). */
  unsupported(req: LoadRequest): string | null;
  load(req: LoadRequest): Promise<BatchDecoder>;
  /** LoRA training (the engine only): throws coded errors. */
  train?(files: ModelFiles, req: TrainRunRequest, onStep: (p: TrainProgress) => void, signal: AbortSignal): Promise<TrainRunResult>;
}

export interface InferenceServiceOptions {
  source: ModelSource;
  /** In order of preference; the first that can run a model is used unless `choose` is 'fastest'. */
  backends: readonly InferenceBackend[];
  /** Sequences decoded at once per model (continuous batching slots). Default 8. */
  maxSequences?: number;
  /** Positions per sequence, at most the model's context. Default 2048. */
  maxPositions?: number;
  /** Memory the loaded models (weights + KV cache) may take together. Default 4 GiB. */
  memoryBudgetBytes?: number;
  /** 'fastest': where several backends can run a model, measure each and keep the faster. Default 'fastest'. */
  choose?: 'fastest' | 'first';
  /** Default maxNewTokens when a task does not say. */
  defaultMaxNewTokens?: number;
  now?: () => number;
}

interface Loaded {
  /** Key in the loaded map: the model name, or `name@adapters` for an engine copy kept for adapter requests. */
  key: string;
  name: string;
  decoder: BatchDecoder;
  batcher: Batcher;
  tokenizer: ModelTokenizer;
  stopIds: number[];
  chatStopIds: number[];
  files: ModelFiles;
  lastUsed: number;
  active: number;
  tokensPerSec: number | undefined;
  /** Set when the model was unloaded under running requests: what they end with (retryable) instead of CANCELLED. */
  unloadedWith?: ErrorCode;
}

interface Running {
  controller: AbortController;
  reason: { code: ErrorCode; message: string } | null;
}

const DEFAULT_SEQUENCES = 8;
const DEFAULT_POSITIONS = 2048;
const DEFAULT_BUDGET = 4 * 1024 ** 3;
const DEFAULT_MAX_NEW = 256;
const RATE_WINDOW_MS = 5_000;

export class InferenceService implements InferenceRuntime {
  readonly #opts: InferenceServiceOptions;
  readonly #loaded = new Map<string, Loaded>();
  readonly #loading = new Map<string, Promise<Loaded>>();
  /** Backend chosen per model once measured (kept after unloading, so a reload skips the race). */
  readonly #choice = new Map<string, { backend: InferenceBackendKind; device: InferenceDevice; tokensPerSec?: number }>();
  readonly #running = new Map<string, Running>();
  readonly #listeners = new Set<(e: InferenceEvent) => void>();
  readonly #recent: { at: number; n: number }[] = [];
  readonly #now: () => number;
  #waiting = 0;
  #tokens = 0;
  /** The last training run queued: runs go one after another. */
  #training: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(opts: InferenceServiceOptions) {
    if (opts.backends.length === 0) throw new AppError('INTERNAL', 'InferenceService needs at least one backend.');
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
  }

  get maxSequences(): number {
    return this.#opts.maxSequences ?? DEFAULT_SEQUENCES;
  }

  on(listener: (e: InferenceEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  async models(): Promise<ModelCapability[]> {
    let stored: string[] = [];
    try {
      stored = await this.#opts.source.list();
    } catch {
      stored = [];
    }
    const names = new Set([...stored, ...[...this.#loaded.values()].map((l) => l.name)]);
    const out: ModelCapability[] = [];
    for (const name of [...names].sort()) {
      const l = this.#loaded.get(name) ?? this.#loaded.get(`${name}@adapters`);
      const known = l ? { backend: l.decoder.backend, device: l.decoder.device, tokensPerSec: l.tokensPerSec } : this.#choice.get(name);
      const first = this.#opts.backends[0]!;
      const cap: ModelCapability = { name, backend: known?.backend ?? first.backend, device: known?.device ?? first.device, loaded: l !== undefined };
      if (known?.tokensPerSec !== undefined && Number.isFinite(known.tokensPerSec)) cap.tokensPerSec = Math.min(1e7, Math.max(0, known.tokensPerSec));
      const adapters = [name, `${name}@adapters`].flatMap((k) => this.#loaded.get(k)?.decoder.adapters?.names() ?? []);
      if (adapters.length > 0) cap.adapters = [...new Set(adapters)].sort().slice(0, MAX_MODEL_ADAPTERS);
      out.push(cap);
    }
    return out;
  }

  async cached(): Promise<CachedModelInfo[]> {
    if (this.#opts.source.cached) return this.#opts.source.cached();
    const names = await this.#opts.source.list().catch(() => []);
    return names.map((name) => ({ name, bytes: 0, totalBytes: null, verified: true, complete: true, lastUsed: 0 }));
  }

  stats(): InferenceRuntimeStats {
    let active = 0;
    let waiting = this.#waiting;
    let memory = 0;
    for (const l of this.#loaded.values()) {
      const s = l.batcher.stats();
      active += s.active;
      waiting += s.waiting;
      memory += l.decoder.memoryBytes;
    }
    return {
      active,
      waiting,
      maxSequences: this.maxSequences,
      tokensGenerated: this.#tokens,
      tokensPerSec: this.#rate(),
      gpuMemoryBytes: memory,
      gpuBudgetBytes: this.#opts.memoryBudgetBytes ?? DEFAULT_BUDGET,
    };
  }

  cancel(taskId: string, reason = 'cancelled'): boolean {
    const r = this.#running.get(taskId);
    if (!r) return false;
    r.reason ??= { code: 'CANCELLED', message: reason };
    r.controller.abort();
    return true;
  }

  async generate(req: GenerateRunRequest, onProgress?: (p: GenerationProgress) => void): Promise<GenerateRunOutcome> {
    const started = this.#now();
    if (this.#running.has(req.taskId)) {
      return fail('INTERNAL', `Task ${req.taskId} is already generating on this node.`);
    }
    const running: Running = { controller: new AbortController(), reason: null };
    this.#running.set(req.taskId, running);
    let timer: ReturnType<typeof setTimeout> | null = null;
    if (req.deadline !== undefined && req.deadline !== null) {
      const left = req.deadline - started;
      if (left <= 0) {
        this.#running.delete(req.taskId);
        return fail('DEADLINE_EXCEEDED', 'The task passed its deadline before it started.');
      }
      timer = setTimeout(() => {
        running.reason ??= { code: 'DEADLINE_EXCEEDED', message: 'The task passed its deadline while generating.' };
        running.controller.abort();
      }, left);
    }
    let model: Loaded | null = null;
    /** The model whose active count this request raised (lowered again in finally). */
    let counted: Loaded | null = null;
    try {
      if (this.#closed) throw new AppError('NODE_DRAINING', 'The inference runtime is closing.');
      this.#waiting++;
      try {
        model = await this.#model(req.model, running.controller.signal, req.adapter !== undefined);
        if (req.adapter !== undefined) await this.#adapter(model, req.adapter);
      } finally {
        this.#waiting--;
      }
      this.#checkAbort(running);
      model.active++;
      counted = model;
      model.lastUsed = this.#now();
      const gen = this.#request(model, req, running.controller.signal, onProgress);
      const out = await model.batcher.submit(gen);
      this.#count(out.completionTokens, model.name);
      return { ok: true, result: this.#result(model, out, started) };
    } catch (err) {
      const reason = running.reason;
      if (reason) return fail(reason.code, reason.message);
      const info = serializeError(err);
      if (info.code === 'CANCELLED' && model?.unloadedWith) {
        // Not this task's cancel: its model went away under it (a lost device); it is retried.
        return fail(model.unloadedWith, `The model ${model.name} was unloaded while this task waited or ran (${model.unloadedWith}); it is retried.`);
      }
      if (model && (info.code === 'GPU_DEVICE_LOST' || info.code === 'GPU_OUT_OF_MEMORY')) {
        // The device is gone (or full): drop the model so the retry reloads it from the store.
        void this.unload(model.key, info.code);
      }
      return { ok: false, error: info };
    } finally {
      if (timer !== null) clearTimeout(timer);
      this.#running.delete(req.taskId);
      if (counted) {
        counted.active--;
        counted.lastUsed = this.#now();
      }
    }
  }

  /** Whether a backend here trains (the engine, on WebGPU). */
  get trains(): boolean {
    return this.#opts.backends.some((b) => b.train !== undefined);
  }

  /**
   * Runs one `train` task: the model's files from the source, the run on the first backend that trains
   * (one run at a time per node: the GPU is shared with generation). Never throws.
   */
  async train(req: TrainRunRequest, onProgress?: (p: TrainProgress) => void): Promise<TrainRunOutcome> {
    const backend = this.#opts.backends.find((b) => b.train !== undefined);
    if (!backend?.train) return fail('MODEL_UNSUPPORTED', 'This node trains on the engine (WebGPU), which it does not offer.');
    if (this.#running.has(req.taskId)) return fail('INTERNAL', `Task ${req.taskId} is already running on this node.`);
    const running: Running = { controller: new AbortController(), reason: null };
    this.#running.set(req.taskId, running);
    let timer: ReturnType<typeof setTimeout> | null = null;
    if (req.deadline !== undefined && req.deadline !== null) {
      timer = setTimeout(() => {
        running.reason ??= { code: 'DEADLINE_EXCEEDED', message: 'The task passed its deadline while training.' };
        running.controller.abort();
      }, Math.max(0, req.deadline - this.#now()));
    }
    let files: ModelFiles | null = null;
    try {
      if (this.#closed) throw new AppError('NODE_DRAINING', 'The inference runtime is closing.');
      const run: Promise<TrainRunResult> = this.#training.catch(() => undefined).then(async () => {
        this.#checkAbort(running);
        files = await this.#opts.source.ensure(req.model, {
          onProgress: (loadedBytes, totalBytes) => this.#emit({ type: 'download', model: req.model, loadedBytes, totalBytes }),
          signal: running.controller.signal,
        });
        return backend.train!(files, req, (p) => onProgress?.(p), running.controller.signal);
      });
      this.#training = run;
      return { ok: true, result: await run };
    } catch (err) {
      const reason = running.reason;
      if (reason) return fail(reason.code, reason.message);
      return { ok: false, error: serializeError(err) };
    } finally {
      if (timer !== null) clearTimeout(timer);
      this.#running.delete(req.taskId);
      (files as ModelFiles | null)?.release?.();
    }
  }

  /** Loads a model ahead of any task (the page's "load" button, the benchmark). */
  async load(name: string): Promise<{ backend: InferenceBackendKind; device: InferenceDevice }> {
    const l = await this.#model(name, undefined);
    return { backend: l.decoder.backend, device: l.decoder.device };
  }

  /** Unloads a model (by name, or the key of its adapter copy); its running sequences fail CANCELLED. */
  async unload(key: string, reason = 'unloaded'): Promise<boolean> {
    const l = this.#loaded.get(key);
    if (!l) return false;
    const name = l.name;
    this.#loaded.delete(key);
    l.unloadedWith = reason === 'GPU_DEVICE_LOST' || reason === 'GPU_OUT_OF_MEMORY' ? reason : 'INFERENCE_FAILED';
    l.batcher.close();
    await l.decoder.release().catch(() => undefined);
    l.files.release?.();
    this.#emit({ type: 'unload', model: name, reason });
    return true;
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const r of this.#running.values()) {
      r.reason ??= { code: 'CANCELLED', message: 'The node is closing.' };
      r.controller.abort();
    }
    for (const name of [...this.#loaded.keys()]) await this.unload(name, 'closing');
  }

  // ------------------------------------------------------------------ models

  /**
   * The loaded model; with `adapters`, one whose backend switches LoRA adapters per request (the
   * engine): when the faster backend chosen for the model has none, an engine copy is loaded beside it.
   */
  async #model(name: string, signal: AbortSignal | undefined, adapters = false): Promise<Loaded> {
    const have = this.#loaded.get(name);
    if (have && (!adapters || have.decoder.adapters)) return have;
    if (!have && !adapters) return this.#loadOnce(name, name, signal, this.#opts.backends);
    if (!have) {
      // Nothing loaded yet: a backend with adapters serves both kinds of request.
      const withAdapters = this.#opts.backends.filter((b) => b.backend === 'engine');
      if (withAdapters.length === 0) throw new AppError('MODEL_UNSUPPORTED', `Adapters run on the engine (WebGPU), which this node does not offer; ${name} cannot run with an adapter here.`);
      const l = await this.#loadOnce(name, name, signal, withAdapters);
      if (l.decoder.adapters) return l;
    }
    const key = `${name}@adapters`;
    const copy = this.#loaded.get(key);
    if (copy) return copy;
    const engines = this.#opts.backends.filter((b) => b.backend === 'engine');
    if (engines.length === 0) throw new AppError('MODEL_UNSUPPORTED', `Adapters run on the engine (WebGPU), which this node does not offer; ${name} cannot run with an adapter here.`);
    return this.#loadOnce(key, name, signal, engines);
  }

  #loadOnce(key: string, name: string, signal: AbortSignal | undefined, backends: readonly InferenceBackend[]): Promise<Loaded> {
    let p = this.#loading.get(key);
    if (!p) {
      p = this.#load(key, name, signal, backends).finally(() => this.#loading.delete(key));
      this.#loading.set(key, p);
    }
    return p;
  }

  /** Makes the named adapter (`adapters/<name>/` in the model folder, PEFT layout) ready on the model's decoder. */
  async #adapter(model: Loaded, adapter: string): Promise<void> {
    const host = model.decoder.adapters;
    if (!host) throw new AppError('MODEL_UNSUPPORTED', `The ${model.decoder.backend} backend runs no adapters.`);
    if (host.has(adapter)) return;
    const dir = `adapters/${adapter}`;
    const valid = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(adapter);
    if (valid && !model.files.paths.includes(`${dir}/adapter_config.json`)) {
      // The coordinator's adapter registry may have gained it since the model loaded: ask the source once more
      // (a fresh manifest; the weight store fetches and verifies only the new files).
      const fresh = await this.#opts.source.ensure(model.name, {});
      const old = model.files;
      model.files = fresh;
      old.release?.();
    }
    if (!valid || !model.files.paths.includes(`${dir}/adapter_config.json`)) {
      const known = [...new Set(model.files.paths.filter((p) => p.startsWith('adapters/')).map((p) => p.split('/')[1]))];
      throw new AppError('ADAPTER_NOT_FOUND', `${model.name} has no adapter ${adapter} (adapters/<name>/ in its folder); it has ${known.length ? known.join(', ') : 'none'}.`, {
        model: model.name,
        adapter,
        adapters: known,
      });
    }
    const [configBytes, safetensors] = await Promise.all([model.files.readFile(`${dir}/adapter_config.json`), model.files.readFile(`${dir}/adapter_model.safetensors`)]);
    await host.load(adapter, { configJson: new TextDecoder().decode(configBytes), safetensors });
    this.#emit({ type: 'adapter', model: model.name, adapter });
  }

  async #load(key: string, name: string, signal: AbortSignal | undefined, backends: readonly InferenceBackend[]): Promise<Loaded> {
    const t0 = this.#now();
    const files = await this.#opts.source.ensure(name, {
      onProgress: (loadedBytes, totalBytes) => this.#emit({ type: 'download', model: name, loadedBytes, totalBytes }),
      signal,
    });
    const fetchedAt = this.#now();
    let decoder: BatchDecoder | null = null;
    try {
      const config = parseConfig(await files.readFile('config.json'));
      checkModelType(config); // MODEL_CONFIG_INCONSISTENT for either backend, before any weights load
      const tokenizer = await loadTokenizer((p) => files.readFile(p));
      const context = typeof config.max_position_embeddings === 'number' ? config.max_position_embeddings : DEFAULT_POSITIONS;
      const req: LoadRequest = {
        name,
        files,
        config,
        maxSlots: this.maxSequences,
        maxPositions: Math.min(context, this.#opts.maxPositions ?? DEFAULT_POSITIONS),
      };
      await this.#makeRoom(name, estimateBytes(files, config, req));
      const picked = await this.#pick(req, backends);
      decoder = picked.decoder;
      const stopIds = eosIds(config, tokenizer);
      const chatStop = tokenizer.tokenToId('<|im_end|>');
      const loaded: Loaded = {
        key,
        name,
        decoder,
        batcher: new Batcher({
          decoder,
          decode: (ids) => tokenizer.decode(ids, { skipSpecialTokens: true }),
          specialIds: specialIds(await files.readFile('tokenizer_config.json'), tokenizer),
        }),
        tokenizer,
        stopIds,
        chatStopIds: chatStop !== null && !stopIds.includes(chatStop) ? [...stopIds, chatStop] : stopIds,
        files,
        lastUsed: this.#now(),
        active: 0,
        tokensPerSec: picked.tokensPerSec,
      };
      this.#loaded.set(key, loaded);
      if (key === name) this.#choice.set(name, { backend: decoder.backend, device: decoder.device, ...(picked.tokensPerSec !== undefined ? { tokensPerSec: picked.tokensPerSec } : {}) });
      this.#emit({ type: 'load', model: name, backend: decoder.backend, device: decoder.device, ms: this.#now() - t0, filesMs: fetchedAt - t0 });
      return loaded;
    } catch (err) {
      await decoder?.release().catch(() => undefined);
      files.release?.();
      throw err;
    }
  }

  /** Unloads idle models, least recently used first, until `bytes` more fit the budget. */
  async #makeRoom(name: string, bytes: number): Promise<void> {
    const budget = this.#opts.memoryBudgetBytes ?? DEFAULT_BUDGET;
    if (bytes > budget) {
      throw new AppError('MODEL_TOO_LARGE', `Model ${name} needs about ${bytes} bytes; this node's inference budget is ${budget}.`, { model: name, bytes, budget });
    }
    const used = (): number => [...this.#loaded.values()].reduce((n, l) => n + l.decoder.memoryBytes, 0);
    const idle = [...this.#loaded.values()].filter((l) => l.active === 0).sort((a, b) => a.lastUsed - b.lastUsed);
    for (const l of idle) {
      if (used() + bytes <= budget) break;
      await this.unload(l.key, 'least recently used, to make room');
    }
    if (used() + bytes > budget) {
      throw new AppError('GPU_OUT_OF_MEMORY', `Model ${name} (about ${bytes} bytes) does not fit beside the models running now; it is retried.`, { model: name, bytes, budget, used: used() });
    }
  }

  async #pick(req: LoadRequest, backends: readonly InferenceBackend[]): Promise<{ decoder: BatchDecoder; tokensPerSec?: number }> {
    const reasons: string[] = [];
    const able: InferenceBackend[] = [];
    for (const b of backends) {
      const why = b.unsupported(req);
      if (why === null) able.push(b);
      else reasons.push(`${b.backend}/${b.device}: ${why}`);
    }
    if (able.length === 0) {
      throw new AppError('MODEL_UNSUPPORTED', `No backend on this node runs ${req.name}: ${reasons.join('; ')}.`, { model: req.name, reasons });
    }
    const known = this.#choice.get(req.name);
    const preferred = known ? able.find((b) => b.backend === known.backend && b.device === known.device) : undefined;
    if (preferred || able.length === 1 || this.#opts.choose === 'first') {
      return { decoder: await (preferred ?? able[0]!).load(req), ...(known?.tokensPerSec !== undefined ? { tokensPerSec: known.tokensPerSec } : {}) };
    }
    // Several can: load each in turn, measure, keep the fastest.
    let best: { decoder: BatchDecoder; tokensPerSec: number } | null = null;
    const failures: string[] = [];
    for (const b of able) {
      let d: BatchDecoder;
      try {
        d = await b.load(req);
      } catch (err) {
        failures.push(`${b.backend}/${b.device}: ${(err as Error).message}`);
        continue;
      }
      const tps = await measureDecoder(d).catch(() => 0);
      if (!best || tps > best.tokensPerSec) {
        if (best) await best.decoder.release();
        best = { decoder: d, tokensPerSec: tps };
      } else {
        await d.release();
      }
    }
    if (!best) throw new AppError('MODEL_UNSUPPORTED', `Every backend failed to load ${req.name}: ${failures.join('; ')}.`, { model: req.name });
    return best;
  }

  // ------------------------------------------------------------------ requests

  #request(model: Loaded, req: GenerateRunRequest, signal: AbortSignal, onProgress?: (p: GenerationProgress) => void): GenerationRequest {
    const tok = model.tokenizer;
    let promptIds: number[];
    let chat = false;
    if (req.messages !== undefined && req.prompt !== undefined) {
      throw new AppError('SCHEMA_VIOLATION', 'A generate task takes prompt or messages, not both.');
    }
    if (req.messages !== undefined) {
      chat = true;
      promptIds = tok.withPrefix(tok.encode(tok.applyChatTemplate(req.messages, { addGenerationPrompt: true }), { addSpecialTokens: false }));
    } else if (req.prompt !== undefined) {
      promptIds = tok.encode(req.prompt, { addSpecialTokens: true });
    } else {
      throw new AppError('SCHEMA_VIOLATION', 'A generate task needs prompt or messages.');
    }
    const positions = model.decoder.maxPositions;
    if (promptIds.length === 0) throw new AppError('SCHEMA_VIOLATION', 'The prompt is empty after tokenization.');
    if (promptIds.length >= positions) {
      throw new AppError('PROMPT_TOO_LONG', `The prompt is ${promptIds.length} tokens; this model holds ${positions} positions per sequence here, and at least one must be left to generate.`, {
        promptTokens: promptIds.length,
        maxPositions: positions,
      });
    }
    const gen: GenerationRequest = {
      id: req.taskId,
      promptIds,
      maxNewTokens: Math.max(1, Math.min(req.maxNewTokens ?? this.#opts.defaultMaxNewTokens ?? DEFAULT_MAX_NEW, positions - promptIds.length)),
      stopTokenIds: chat ? model.chatStopIds : model.stopIds,
      signal,
    };
    if (req.temperature !== undefined) gen.temperature = req.temperature;
    if (req.topK !== undefined) gen.topK = req.topK;
    if (req.topP !== undefined) gen.topP = req.topP;
    if (req.seed !== undefined) gen.seed = req.seed;
    if (req.stop !== undefined) gen.stopStrings = req.stop;
    if (req.logprobs !== undefined) gen.logprobs = req.logprobs;
    if (req.responseFormat !== undefined) gen.responseFormat = req.responseFormat;
    if (req.adapter !== undefined) gen.adapter = req.adapter;
    if (onProgress) gen.onProgress = onProgress;
    return gen;
  }

  #result(model: Loaded, out: GenerationOutput, started: number): GenerateResult {
    const durationMs = Math.max(0, this.#now() - started);
    const result: GenerateResult = {
      text: out.text,
      tokens: out.tokens,
      finishReason: out.finishReason,
      usage: { promptTokens: out.promptTokens, completionTokens: out.completionTokens },
      backend: model.decoder.backend,
      device: model.decoder.device,
      ttftMs: out.ttftMs,
      durationMs,
      tokensPerSec: durationMs > 0 ? (out.completionTokens * 1000) / durationMs : 0,
    };
    if (out.logprobs) result.logprobs = out.logprobs;
    return result;
  }

  #checkAbort(running: Running): void {
    if (running.controller.signal.aborted) {
      const r = running.reason ?? { code: 'CANCELLED' as const, message: 'cancelled' };
      throw new AppError(r.code, r.message);
    }
  }

  #count(n: number, model: string): void {
    this.#tokens += n;
    const at = this.#now();
    this.#recent.push({ at, n });
    while (this.#recent.length && this.#recent[0]!.at < at - RATE_WINDOW_MS) this.#recent.shift();
    this.#emit({ type: 'tokens', model, tokens: n, at });
  }

  #rate(): number {
    const at = this.#now();
    while (this.#recent.length && this.#recent[0]!.at < at - RATE_WINDOW_MS) this.#recent.shift();
    return (this.#recent.reduce((s, r) => s + r.n, 0) * 1000) / RATE_WINDOW_MS;
  }

  #emit(e: InferenceEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch {
        // a listener's fault is not the runtime's
      }
    }
  }
}

function fail(code: ErrorCode, message: string): { ok: false; error: ErrorInfo } {
  return { ok: false, error: { code, name: 'AppError', message } };
}

/** Ids of the tokenizer's special tokens (tokenizer_config.json's added_tokens_decoder), never shown as text. */
function specialIds(configBytes: Uint8Array, tok: ModelTokenizer): number[] {
  const ids = new Set<number>();
  for (const id of [tok.bosId, tok.eosId, tok.padId]) if (id !== null) ids.add(id);
  try {
    const cfg = JSON.parse(new TextDecoder().decode(configBytes)) as { added_tokens_decoder?: Record<string, { special?: boolean }> };
    for (const [id, t] of Object.entries(cfg.added_tokens_decoder ?? {})) if (t.special && Number.isInteger(Number(id))) ids.add(Number(id));
  } catch {
    // the tokenizer already parsed this file; nothing more to learn from it
  }
  return [...ids];
}

function parseConfig(bytes: Uint8Array): Record<string, unknown> {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    throw new AppError('MODEL_CORRUPT', `config.json is not JSON (${(err as Error).message}).`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new AppError('MODEL_CORRUPT', 'config.json is not a JSON object.');
  return raw as Record<string, unknown>;
}

/** EOS ids from config.json (a number or a list) and the tokenizer's EOS token. */
function eosIds(config: Record<string, unknown>, tok: ModelTokenizer): number[] {
  const ids = new Set<number>();
  const e = config.eos_token_id;
  if (typeof e === 'number') ids.add(e);
  else if (Array.isArray(e)) for (const x of e) if (typeof x === 'number') ids.add(x);
  if (tok.eosId !== null) ids.add(tok.eosId);
  return [...ids];
}

/** Weights (their files) plus the KV cache the slots will take, in fp32. */
function estimateBytes(files: ModelFiles, config: Record<string, unknown>, req: LoadRequest): number {
  const num = (k: string, d: number): number => (typeof config[k] === 'number' ? (config[k] as number) : d);
  const layers = num('num_hidden_layers', 0);
  const heads = num('num_attention_heads', 1);
  const kvHeads = num('num_key_value_heads', heads);
  const headDim = num('head_dim', num('hidden_size', 0) / Math.max(1, heads));
  const kv = 2 * layers * req.maxSlots * req.maxPositions * kvHeads * headDim * 4;
  // Both formats may sit in the folder; a backend loads one of them.
  const weights = Math.max(1, files.totalBytes / 2);
  return Math.round(weights + kv);
}

/**
 * Decode tokens per second of one sequence on a freshly loaded decoder (the slot left free after):
 * what a request waits for, and the figure the node advertises. Two steps first: pipelines and
 * sessions warm up on their first calls.
 */
async function measureDecoder(d: BatchDecoder): Promise<number> {
  const prompt = Uint32Array.from({ length: 8 }, (_, i) => (i * 7 + 3) % Math.max(2, d.vocabSize));
  const entry = { slot: 0, tokens: prompt, adapter: null };
  await d.prefill([entry]);
  const steps = Math.min(10, Math.max(1, d.maxPositions - prompt.length - 1));
  const warm = Math.min(2, steps - 1);
  let t0 = 0;
  for (let i = 0; i < steps; i++) {
    if (i === warm) t0 = performance.now();
    await d.decode([{ slot: 0, token: (i + 2) % d.vocabSize, adapter: null }]);
  }
  const ms = performance.now() - t0;
  d.free(0);
  return ((steps - warm) * 1000) / Math.max(1e-3, ms);
}
