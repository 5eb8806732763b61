/**
 * A `BatchDecoder` on transformers.js: the model is loaded by `AutoModelForCausalLM.from_pretrained`,
 * then its ONNX session is called directly, so one decode step runs every active sequence at once on
 * the decoder's batch dimension. Each slot keeps its own cache (one batch-1 array per cache input);
 * a step joins them left-padded to the longest past, with the attention mask 0 over the padding and
 * each row's true position, and splits `present.*` back per slot.
 */
import { AppError } from '../../../shared';
import type { InferenceDevice } from '../../../shared';
import type { BatchDecoder, DecodeEntry, PrefillEntry } from '../types';
import { configureTransformersEnv, transformersLib, usesInjectedOrt, type TransformersEnvOptions } from './env';
import { joinRows, rowSize, splitRows, type CacheData, type CacheLayout } from './kv';
import { checkLocalFolder, loadError } from './load-errors';

/** Where the model runs: `webgpu` or `wasm` in the browser, `cpu` (onnxruntime-node) in Node. */
export type TransformersDevice = 'webgpu' | 'wasm' | 'cpu';

export interface TransformersDecoderOptions {
  /** The model folder's name under `localModelPath` (Node) or `remoteHost` (browser). */
  modelId: string;
  device: TransformersDevice;
  /** Sequences held at once (default 8). */
  maxSlots?: number;
  /** Positions per sequence; the model's `max_position_embeddings` or less. */
  maxPositions?: number;
  /** Which ONNX file to load (always passed on: the wasm device would pick q8 files otherwise); default fp32. */
  dtype?: string;
  /** Bytes of the weight files (from the manifest) for `memoryBytes`; in Node read from the folder when absent. */
  weightBytes?: number;
  /** When given, transformers.js's `env` is set from these first (see `configureTransformersEnv`). */
  env?: TransformersEnvOptions;
  /** The onnxruntime module transformers.js must use (`onnxruntime-web/wasm` in a WASM worker); first load only. */
  ort?: object;
}

/** The parts of an onnxruntime tensor this file reads. */
interface OrtTensor {
  readonly type: string;
  readonly dims: readonly number[];
  readonly data: unknown;
  readonly location?: string;
  getData?(releaseData?: boolean): Promise<unknown>;
  dispose?(): void;
}

interface OrtValueMetadata {
  name: string;
  isTensor: boolean;
  type?: string;
  shape?: readonly (number | string)[];
}

/** The parts of an onnxruntime `InferenceSession` this file uses. */
interface OrtSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly OrtValueMetadata[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
}

interface LoadedModel {
  sessions: Record<string, unknown>;
  config: { model_type?: string; max_position_embeddings?: number; vocab_size?: number; normalized_config?: Record<string, unknown> } & Record<string, unknown>;
  dispose(): Promise<unknown>;
}

type MakeTensor = (type: 'int64' | 'float32' | 'float16' | 'bool', data: BigInt64Array | Float32Array | Uint16Array | Uint8Array, dims: number[]) => OrtTensor;

/** One cache input and the output that returns it one step longer. */
interface CacheSpec extends CacheLayout {
  input: string;
  output: string;
  type: 'float32' | 'float16';
}

interface Slot {
  /** Positions in the cache. */
  length: number;
  /** One array per cache spec, `[1, outer, length, inner]`. */
  caches: CacheData[];
}

const KNOWN_INPUTS = new Set(['input_ids', 'attention_mask', 'position_ids', 'use_cache_branch', 'num_logits_to_keep']);

/** Models whose positions count from 1 (as transformers.js's own `create_position_ids` does). */
const ONE_BASED_POSITIONS = new Set(['paligemma', 'gemma3_text', 'gemma3']);

function cacheOutputName(input: string): string {
  return input.startsWith('past_key_values') ? input.replace('past_key_values', 'present') : input.replace(/^past_/, 'present_');
}

function layoutOf(meta: OrtValueMetadata, config: LoadedModel['config'], modelId: string): CacheSpec {
  const shape = meta.shape ?? [];
  const type = meta.type;
  if (type !== 'float32' && type !== 'float16') {
    throw new AppError('MODEL_UNSUPPORTED', `${modelId}: cache input ${meta.name} is ${String(type)}; float32 and float16 caches are supported.`, { input: meta.name });
  }
  const rest = shape.slice(1);
  const symbolic = rest.map((d, i) => (typeof d === 'string' ? i : -1)).filter((i) => i >= 0);
  const norm = config.normalized_config ?? {};
  if (symbolic.length === 0) {
    const outer = rest.reduce<number>((a, d) => a * (d as number), 1);
    return { input: meta.name, output: cacheOutputName(meta.name), type, outer, inner: 1, hasSeq: false };
  }
  const seq = symbolic[symbolic.length - 1] as number;
  const dims = rest.map((d, i) => {
    if (typeof d === 'number') return d;
    if (i === seq) return 0;
    // A symbolic head count or head size: read it from the config (standard [B, heads, L, headDim] KV only).
    const fromConfig = i === 0 ? norm['num_heads'] : norm['dim_kv'];
    if (rest.length === 3 && typeof fromConfig === 'number') return fromConfig;
    throw new AppError('MODEL_UNSUPPORTED', `${modelId}: cache input ${meta.name} has shape [${shape.join(', ')}], which this backend cannot batch.`, {
      input: meta.name,
    });
  });
  const outer = dims.slice(0, seq).reduce((a, b) => a * b, 1);
  const inner = dims.slice(seq + 1).reduce((a, b) => a * b, 1);
  return { input: meta.name, output: cacheOutputName(meta.name), type, outer, inner, hasSeq: true };
}

async function hostData(t: OrtTensor): Promise<unknown> {
  if (t.location !== undefined && t.location !== 'cpu' && t.location !== 'cpu-pinned' && t.getData !== undefined) return t.getData(true);
  return t.data;
}

function asFloat32(data: unknown, what: string): Float32Array {
  if (data instanceof Float32Array) return data;
  const F16 = (globalThis as { Float16Array?: new (...a: never[]) => ArrayLike<number> }).Float16Array;
  if (F16 !== undefined && data instanceof F16) return Float32Array.from(data as ArrayLike<number>);
  throw new AppError('MODEL_UNSUPPORTED', `${what} came back as ${Object.prototype.toString.call(data)}; float32 logits are expected.`);
}

function asCache(data: unknown, spec: CacheSpec): CacheData {
  if (data instanceof Float32Array || data instanceof Uint16Array) return data;
  const F16 = (globalThis as { Float16Array?: new (...a: never[]) => ArrayLike<number> }).Float16Array;
  if (F16 !== undefined && data instanceof F16) {
    const view = data as unknown as { buffer: ArrayBuffer; byteOffset: number; length: number };
    return new Uint16Array(view.buffer, view.byteOffset, view.length);
  }
  throw new AppError('MODEL_UNSUPPORTED', `${spec.output} came back as ${Object.prototype.toString.call(data)}.`);
}

function bytesPerElement(spec: CacheSpec): number {
  return spec.type === 'float32' ? 4 : 2;
}

export class TransformersDecoder implements BatchDecoder {
  readonly backend = 'transformers' as const;
  readonly device: InferenceDevice;
  readonly vocabSize: number;
  readonly maxSlots: number;
  readonly maxPositions: number;
  readonly memoryBytes: number;
  /** The device transformers.js runs on (`cpu` is onnxruntime-node, advertised as `wasm`: the CPU path). */
  readonly runtimeDevice: TransformersDevice;
  readonly modelId: string;

  #model: LoadedModel | null;
  readonly #session: OrtSession;
  readonly #tensor: MakeTensor;
  readonly #caches: CacheSpec[];
  readonly #inputs: ReadonlySet<string>;
  readonly #positionOffset: number;
  readonly #slots: (Slot | null)[];
  /**
   * The last decode step's batch, kept joined (its `present.*` as they came back) while the same
   * slots decode in the same order: each step then feeds the last one's outputs straight back, and
   * the per-slot caches are split out only when the batch changes (a sequence joins, leaves or is freed).
   * While a slot is in the group its `caches` are stale.
   */
  #group: { slots: number[]; data: CacheData[]; total: number } | null = null;

  /** Use `TransformersDecoder.load`. */
  private constructor(init: {
    model: LoadedModel;
    session: OrtSession;
    tensor: MakeTensor;
    caches: CacheSpec[];
    options: TransformersDecoderOptions;
    vocabSize: number;
    maxPositions: number;
    weightBytes: number;
  }) {
    const { options } = init;
    this.#model = init.model;
    this.#session = init.session;
    this.#tensor = init.tensor;
    this.#caches = init.caches;
    this.#inputs = new Set(init.session.inputNames);
    this.#positionOffset = ONE_BASED_POSITIONS.has(init.model.config.model_type ?? '') ? 1 : 0;
    this.modelId = options.modelId;
    this.runtimeDevice = options.device;
    this.device = options.device === 'webgpu' ? 'webgpu' : 'wasm';
    this.vocabSize = init.vocabSize;
    this.maxSlots = options.maxSlots ?? 8;
    this.maxPositions = init.maxPositions;
    this.#slots = Array.from({ length: this.maxSlots }, () => null);
    const kvPerPosition = init.caches.reduce((a, c) => a + (c.hasSeq ? c.outer * c.inner * bytesPerElement(c) : 0), 0);
    const fixedState = init.caches.reduce((a, c) => a + (c.hasSeq ? 0 : c.outer * c.inner * bytesPerElement(c)), 0);
    this.memoryBytes = init.weightBytes + this.maxSlots * (this.maxPositions * kvPerPosition + fixedState);
  }

  /** Loads a decoder; failures are `MODEL_FILE_MISSING`, `MODEL_CORRUPT` or `MODEL_UNSUPPORTED`. */
  static async load(options: TransformersDecoderOptions): Promise<TransformersDecoder> {
    const dtype = options.dtype ?? 'fp32';
    const lib = await transformersLib(options.ort);
    if (options.env !== undefined) configureTransformersEnv(lib.env, options.env);
    const env = lib.env;
    const local = env.allowLocalModels && typeof process !== 'undefined' && process.release?.name === 'node' ? `${env.localModelPath}${options.modelId}` : null;
    let weightBytes = options.weightBytes;
    if (local !== null) {
      const onnxBytes = await checkLocalFolder(local, dtype);
      weightBytes ??= onnxBytes;
    }
    let model: LoadedModel;
    try {
      // With an injected onnxruntime (onnxruntime-web/wasm) transformers.js knows no devices: name the EP directly.
      const placement =
        usesInjectedOrt() && options.device !== 'cpu'
          ? // 'auto' keeps transformers.js from checking the device against its own (empty) list; the EP is named here.
            { device: 'auto' as const, session_options: { executionProviders: [options.device] } }
          : { device: options.device };
      model = (await lib.AutoModelForCausalLM.from_pretrained(options.modelId, { dtype: dtype as 'fp32', ...placement })) as unknown as LoadedModel;
    } catch (err) {
      throw loadError(err, options.modelId);
    }
    try {
      const session = (model.sessions['model'] ?? model.sessions['decoder_model_merged']) as OrtSession | undefined;
      if (session === undefined) {
        throw new AppError('MODEL_UNSUPPORTED', `${options.modelId} is not a single-session decoder (sessions: ${Object.keys(model.sessions).join(', ')}).`);
      }
      const unknown = session.inputNames.filter((n) => !KNOWN_INPUTS.has(n) && !n.startsWith('past_'));
      if (unknown.length > 0 || !session.inputNames.includes('input_ids') || !session.outputNames.includes('logits')) {
        throw new AppError('MODEL_UNSUPPORTED', `${options.modelId}'s decoder takes inputs this backend does not give (${unknown.join(', ') || 'no input_ids/logits'}).`, {
          inputs: session.inputNames,
        });
      }
      const caches = session.inputMetadata.filter((m) => m.name.startsWith('past_')).map((m) => layoutOf(m, model.config, options.modelId));
      for (const c of caches) {
        if (!session.outputNames.includes(c.output)) throw new AppError('MODEL_UNSUPPORTED', `${options.modelId}: ${c.input} has no ${c.output} output.`);
      }
      const configMax = model.config.max_position_embeddings;
      const maxPositions = Math.min(options.maxPositions ?? Infinity, typeof configMax === 'number' && configMax > 0 ? configMax : Infinity);
      if (!Number.isFinite(maxPositions)) throw new AppError('MODEL_UNSUPPORTED', `${options.modelId}: config.json gives no max_position_embeddings; pass maxPositions.`);
      const vocabSize = model.config.vocab_size;
      if (typeof vocabSize !== 'number') throw new AppError('MODEL_UNSUPPORTED', `${options.modelId}: config.json gives no vocab_size.`);
      const Tensor = lib.Tensor;
      const tensor: MakeTensor = (type, data, dims) => new Tensor(type, data, dims).ort_tensor as unknown as OrtTensor;
      return new TransformersDecoder({ model, session, tensor, caches, options, vocabSize, maxPositions, weightBytes: weightBytes ?? 0 });
    } catch (err) {
      await model.dispose();
      throw err;
    }
  }

  /** Sequences holding a slot now. */
  get activeSlots(): number {
    return this.#slots.reduce((a, s) => a + (s === null ? 0 : 1), 0);
  }

  /** Positions held by a slot (0 when free). */
  slotLength(slot: number): number {
    return this.#slots[slot]?.length ?? 0;
  }

  async prefill(entries: readonly PrefillEntry[]): Promise<Float32Array[]> {
    this.#ungroup();
    for (const e of entries) {
      this.#checkSlot(e.slot);
      if (e.tokens.length === 0) throw new AppError('INFERENCE_FAILED', `slot ${e.slot}: an empty prompt cannot be prefilled.`);
      if (e.tokens.length > this.maxPositions) {
        throw new AppError('PROMPT_TOO_LONG', `The prompt has ${e.tokens.length} tokens; ${this.modelId} holds ${this.maxPositions} positions.`, {
          promptTokens: e.tokens.length,
          maxPositions: this.maxPositions,
        });
      }
    }
    const out: Float32Array[] = [];
    for (const e of entries) {
      this.#slots[e.slot] = null;
      const T = e.tokens.length;
      const ids = BigInt64Array.from(e.tokens, (t) => BigInt(t));
      const positions = BigInt64Array.from({ length: T }, (_, i) => BigInt(i + this.#positionOffset));
      const feeds: Record<string, OrtTensor> = {
        input_ids: this.#tensor('int64', ids, [1, T]),
        attention_mask: this.#tensor('int64', new BigInt64Array(T).fill(1n), [1, T]),
        position_ids: this.#tensor('int64', positions, [1, T]),
      };
      for (const c of this.#caches) {
        feeds[c.input] = this.#tensor(c.type, c.type === 'float32' ? new Float32Array(rowSize(c, 0)) : new Uint16Array(rowSize(c, 0)), this.#cacheDims(c, 1, 0));
      }
      const results = await this.#run(feeds, false);
      const logits = await this.#logits(results, 1);
      const caches: CacheData[] = [];
      for (const c of this.#caches) caches.push(asCache(await hostData(results[c.output] as OrtTensor), c));
      this.#slots[e.slot] = { length: T, caches };
      out.push(logits[0] as Float32Array);
    }
    return out;
  }

  async decode(entries: readonly DecodeEntry[]): Promise<Float32Array[]> {
    if (entries.length === 0) return [];
    const slots = entries.map((e) => {
      this.#checkSlot(e.slot);
      const s = this.#slots[e.slot];
      if (s === null || s === undefined) throw new AppError('INFERENCE_FAILED', `slot ${e.slot} holds no sequence; prefill it first.`);
      if (s.length + 1 > this.maxPositions) {
        throw new AppError('PROMPT_TOO_LONG', `slot ${e.slot} is full: ${this.modelId} holds ${this.maxPositions} positions.`, { maxPositions: this.maxPositions });
      }
      return s;
    });
    if (new Set(entries.map((e) => e.slot)).size !== entries.length) throw new AppError('INFERENCE_FAILED', 'A decode step names a slot twice.');
    const B = entries.length;
    const g = this.#group;
    const same = g !== null && g.slots.length === B && g.slots.every((slot, b) => slot === entries[b]!.slot);
    if (!same) this.#ungroup();
    // A kept group is padded to its own length (each row's padding unchanged since it was joined).
    const maxPast = same ? g.total : Math.max(...slots.map((s) => s.length));
    const total = maxPast + 1;
    const mask = new BigInt64Array(B * total);
    slots.forEach((s, b) => mask.fill(1n, b * total + (maxPast - s.length), (b + 1) * total));
    const feeds: Record<string, OrtTensor> = {
      input_ids: this.#tensor('int64', BigInt64Array.from(entries, (e) => BigInt(e.token)), [B, 1]),
      attention_mask: this.#tensor('int64', mask, [B, total]),
      position_ids: this.#tensor('int64', BigInt64Array.from(slots, (s) => BigInt(s.length + this.#positionOffset)), [B, 1]),
    };
    this.#caches.forEach((c, i) => {
      let data: CacheData;
      if (same) {
        data = g.data[i] as CacheData;
      } else {
        const rows = slots.map((s) => ({ data: s.caches[i] as CacheData, length: s.length }));
        data = B === 1 ? (rows[0] as { data: CacheData }).data : joinRows(c, rows, maxPast, rows[0]!.data);
      }
      feeds[c.input] = this.#tensor(c.type, data, this.#cacheDims(c, B, maxPast));
    });
    // A failed run leaves the group (or the slots) as they were: nothing has moved yet.
    const results = await this.#run(feeds, true);
    const logits = await this.#logits(results, B);
    const presents: CacheData[] = [];
    let joinedOk = true;
    for (const c of this.#caches) {
      const present = results[c.output] as OrtTensor;
      presents.push(asCache(await hostData(present), c));
      if (c.hasSeq && present.dims[present.dims.length - 2] !== total) joinedOk = false;
    }
    for (const s of slots) s.length += 1;
    if (joinedOk) {
      this.#group = { slots: entries.map((e) => e.slot), data: presents, total };
    } else {
      // Outputs not one position longer than the joined input: split them now, as they say.
      const keep = slots.map((s) => s.length);
      this.#caches.forEach((c, i) => {
        const present = results[c.output] as OrtTensor;
        const seqLen = c.hasSeq ? (present.dims[present.dims.length - 2] ?? total) : 0;
        const rows = splitRows(c, presents[i] as CacheData, seqLen, keep);
        slots.forEach((s, b) => (s.caches[i] = rows[b] as CacheData));
      });
    }
    return logits;
  }

  /** Splits a kept group back into its slots' own caches (dropping each row's padding). */
  #ungroup(): void {
    const g = this.#group;
    if (g === null) return;
    this.#group = null;
    const keep = g.slots.map((slot) => this.#slots[slot]?.length ?? 0);
    this.#caches.forEach((c, i) => {
      const rows = splitRows(c, g.data[i] as CacheData, g.total, keep);
      g.slots.forEach((slot, b) => {
        const s = this.#slots[slot];
        if (s) s.caches[i] = rows[b] as CacheData;
      });
    });
  }

  free(slot: number): void {
    this.#checkSlot(slot);
    if (this.#group?.slots.includes(slot)) this.#ungroup();
    this.#slots[slot] = null;
  }

  async release(): Promise<void> {
    this.#group = null;
    this.#slots.fill(null);
    const model = this.#model;
    this.#model = null;
    if (model !== null) await model.dispose();
  }

  #checkSlot(slot: number): void {
    if (this.#model === null) throw new AppError('INFERENCE_FAILED', `${this.modelId} was released.`);
    if (!Number.isInteger(slot) || slot < 0 || slot >= this.maxSlots) {
      throw new AppError('INFERENCE_FAILED', `slot ${slot} is outside 0..${this.maxSlots - 1}.`, { slot, maxSlots: this.maxSlots });
    }
  }

  #cacheDims(c: CacheSpec, batch: number, length: number): number[] {
    const meta = this.#session.inputMetadata.find((m) => m.name === c.input);
    const rest = (meta?.shape ?? []).slice(1);
    if (!c.hasSeq) return [batch, ...rest.map((d) => d as number)];
    // Only the sequence axis is symbolic here (layoutOf filled the others or refused the model).
    return rest.length === 3 && typeof rest[0] === 'number' && typeof rest[2] === 'number'
      ? [batch, rest[0], length, rest[2]]
      : [batch, c.outer, length, c.inner];
  }

  async #run(feeds: Record<string, OrtTensor>, withPast: boolean): Promise<Record<string, OrtTensor>> {
    if (this.#inputs.has('use_cache_branch')) feeds['use_cache_branch'] = this.#tensor('bool', Uint8Array.of(withPast ? 1 : 0), [1]);
    if (this.#inputs.has('num_logits_to_keep')) feeds['num_logits_to_keep'] = this.#tensor('int64', BigInt64Array.of(1n), []);
    for (const name of [...Object.keys(feeds)]) if (!this.#inputs.has(name)) delete feeds[name];
    try {
      return await this.#session.run(feeds);
    } catch (err) {
      throw new AppError('INFERENCE_FAILED', `${this.modelId}: the ONNX session failed: ${err instanceof Error ? err.message : String(err)}`, undefined, { cause: err });
    }
  }

  /** The last position's logits of each of `B` rows. */
  async #logits(results: Record<string, OrtTensor>, B: number): Promise<Float32Array[]> {
    const t = results['logits'] as OrtTensor;
    const data = asFloat32(await hostData(t), 'logits');
    const V = t.dims[t.dims.length - 1] as number;
    const T = t.dims.length === 3 ? (t.dims[1] as number) : 1;
    return Array.from({ length: B }, (_, b) => data.slice((b * T + T - 1) * V, (b * T + T) * V));
  }
}

/** Loads a transformers.js decoder (see `TransformersDecoderOptions`). */
export function loadTransformersDecoder(options: TransformersDecoderOptions): Promise<TransformersDecoder> {
  return TransformersDecoder.load(options);
}
