/**
 * The adapter registry: PEFT LoRA adapters uploaded for a base model the coordinator serves, each
 * upload a new version (1, 2, …; the latest wins, `name@N` names one), kept in the coordinator's
 * own data folder (never in the user's model folders):
 * `<root>/<base>/<name>/<version>/{adapter_config.json, adapter_model.safetensors, meta.json}`.
 *
 * An upload is checked with the engine's own PEFT loader (worker/model/peft.ts `loadAdapter`): the
 * safetensors header parses, tensor names follow PEFT, shapes fit the base's config (hidden size,
 * heads, intermediate size, layers, rank r), target modules exist, and a `base_fingerprint` in the
 * safetensors metadata (the engine's fingerprint, written by our trainer) equals the base's. The
 * registry also records its own base fingerprint: SHA-256 of the base's config.json bytes, a newline,
 * and the manifest digests of its `*.safetensors` files (sorted by path, `path:sha256` per line);
 * an upload may state it (`fingerprint`) and is refused with ADAPTER_MISMATCH when it differs.
 *
 * The latest version of each adapter is served to the nodes inside the base's manifest as
 * `adapters/<name>/adapter_config.json` and `adapters/<name>/adapter_model.safetensors`.
 *
 * Several coordinators on one PostgreSQL journal: the journal numbers and keeps every version (`adapter_versions`,
 * the files and meta.json), and each coordinator's folder is a cache of it, filled before each read, so an
 * adapter uploaded to (or trained through) one coordinator is listed, served and applied by all of them.
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { AppError, base64ToBytes, parseName, type PartRef, type TrainResult, type TrainedAdapterFiles } from '../shared';
import { parseLlamaConfig, type LlamaConfig } from '../worker/model/config';
import { loadModelFolder, readSafetensorsFiles } from '../worker/model/folder';
import { mergeLora } from '../worker/model/merge';
import { safetensorsChunks } from '../worker/model/safetensors';
import { buildDecoderOnnx } from '../worker/model/onnx-llama';
import { encodeModel, encodeModelExternal, externalDataChunks, tensorBytes } from '../worker/model/onnx-proto';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, baseModelFingerprint, loadAdapter } from '../worker/model/peft';
import { walk, type ModelFile, type ModelStore } from './models';
import { wholePart, type ResultPart } from './node';

export const ADAPTER_FILES = [ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE] as const;
export type AdapterFileName = (typeof ADAPTER_FILES)[number];

/** Largest adapter_model.safetensors an upload may carry. */
export const MAX_ADAPTER_BYTES = 64 << 20;
/**
 * Largest base (bytes of its weight files) the coordinator merges an adapter into: it holds the base's files and the
 * merged weights in float32 in memory (about 3× this for a bf16 base), writing the outputs a tensor at a time.
 */
export const MAX_MERGE_BYTES = 4 * 2 ** 30;
/** Initializer bytes past which the merged ONNX keeps its weights in external data files (a protobuf is at most 2 GB). */
export const MERGE_EXTERNAL_DATA_ABOVE = 2 ** 30;
/** Most bytes in one external data file (`model.onnx_data`, `_1`, …): a browser reads each into one ArrayBuffer. */
const EXTERNAL_CHUNK_BYTES = 2 ** 30;

/** A whole file read through a handle (readFile stops at 2 GiB; one safetensors file of a 1B model is 2.5 GB). */
async function readWhole(path: string): Promise<Uint8Array> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    const out = new Uint8Array(size);
    for (let off = 0; off < size; ) {
      const { bytesRead } = await fh.read(out, off, Math.min(2 ** 30, size - off), off);
      if (bytesRead === 0) throw new AppError('MODEL_CORRUPT', `${path} ended at ${off} of its ${size} bytes while it was read.`);
      off += bytesRead;
    }
    return out;
  } finally {
    await fh.close();
  }
}

/** Writes chunks to a file as they are made (each let go once written). */
async function writeChunks(path: string, chunks: Iterable<Uint8Array>): Promise<void> {
  const fh = await open(path, 'w');
  try {
    for (const c of chunks) {
      for (let off = 0; off < c.length; ) off += (await fh.write(c, off, c.length - off)).bytesWritten;
    }
  } finally {
    await fh.close();
  }
}
/** Bases up to this size are read whole to compute the engine's fingerprint (checked against the adapter's metadata). */
const ENGINE_FINGERPRINT_MAX_BYTES = 256 << 20;
const META_FILE = 'meta.json';

export interface AdapterVersion {
  base: string;
  name: string;
  version: number;
  /** Bytes of adapter_model.safetensors. */
  size: number;
  /** SHA-256 of adapter_model.safetensors. */
  sha256: string;
  configSha256: string;
  configSize: number;
  createdAt: number;
  /** The registry's base fingerprint (see the module comment) of the base it was checked against. */
  fingerprint: string;
  /** `base_model_name_or_path` of adapter_config.json ('' when absent). */
  baseModel: string;
  /** `base_fingerprint` from the safetensors metadata (the engine's), or null. */
  engineFingerprint: string | null;
  r: number;
  alpha: number;
  targetModules: string[];
}

export interface AdapterRecord {
  base: string;
  name: string;
  latest: number;
  versions: AdapterVersion[];
}

const sha256 = (b: Uint8Array | string): string => createHash('sha256').update(b).digest('hex');

/** `name` or `name@N` → the name and the version (null: the latest). */
export function parseAdapterRef(raw: string): { name: string; version: number | null } {
  const at = raw.indexOf('@');
  const name = parseName(at < 0 ? raw : raw.slice(0, at));
  if (at < 0) return { name, version: null };
  const v = raw.slice(at + 1);
  if (!/^[1-9][0-9]{0,8}$/.test(v)) {
    throw new AppError('SCHEMA_VIOLATION', `The adapter version in ${JSON.stringify(raw.slice(0, 200))} must be a positive integer (name@N).`, {
      errors: [{ path: '/name', message: 'name@N' }],
    });
  }
  return { name, version: Number(v) };
}

/** Where a shared journal keeps adapter versions for every coordinator (server/journal.ts). */
export interface AdapterShelf {
  putAdapterVersion(base: string, name: string, meta: (version: number) => object, config: Uint8Array, weights: Uint8Array): number;
  adapterVersions(): Array<{ base: string; name: string; version: number }>;
  adapterVersion(base: string, name: string, version: number): { meta: string; config: Uint8Array; weights: Uint8Array } | null;
  /** A shared setting (first writer wins): merged models are recorded as `merged-model:<id>`. */
  setting(key: string, make: () => string): string;
  settingsWithPrefix(prefix: string): Array<{ key: string; value: string }>;
}

const MERGED_KEY = 'merged-model:';

export class AdapterRegistry {
  readonly root: string;
  readonly #store: ModelStore | null;
  readonly #shelf: AdapterShelf | null;
  #queue: Promise<unknown> = Promise.resolve();
  readonly #engineFingerprints = new Map<string, string>();
  /** Versions (`base/name/version`) known to be in the folder. */
  readonly #cached = new Set<string>();
  #pulling: Promise<void> | null = null;

  constructor(root: string, store: ModelStore | null, shelf: AdapterShelf | null = null) {
    this.root = root;
    this.#store = store;
    this.#shelf = shelf;
  }

  /** Checks and stores a new version of `base`'s adapter `name`. */
  upload(rawBase: string, rawName: string, configJson: string, safetensors: Uint8Array, statedFingerprint?: string): Promise<AdapterVersion> {
    const run = this.#queue.then(() => this.#upload(rawBase, rawName, configJson, safetensors, statedFingerprint));
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #upload(rawBase: string, rawName: string, configJson: string, safetensors: Uint8Array, statedFingerprint?: string): Promise<AdapterVersion> {
    const base = parseName(rawBase);
    const name = parseName(rawName);
    const { config, fingerprint, engineFingerprint } = await this.#base(base);
    if (statedFingerprint !== undefined && statedFingerprint !== fingerprint) {
      throw new AppError('ADAPTER_MISMATCH', `The adapter states base fingerprint ${statedFingerprint.slice(0, 80)}, but ${base} has ${fingerprint}; upload it for the base it was trained on.`, {
        base,
        expected: fingerprint,
        actual: statedFingerprint.slice(0, 80),
      });
    }
    const adapter = loadAdapter({ configJson, safetensors }, config, engineFingerprint ?? undefined);
    const dir = join(this.root, base, name);
    await mkdir(dir, { recursive: true });
    const configBytes = Buffer.from(configJson, 'utf8');
    const metaOf = (version: number): AdapterVersion => ({
      base,
      name,
      version,
      size: safetensors.byteLength,
      sha256: sha256(safetensors),
      configSha256: sha256(configBytes),
      configSize: configBytes.byteLength,
      createdAt: Date.now(),
      fingerprint,
      baseModel: adapter.baseModel,
      engineFingerprint: adapter.baseFingerprint || null,
      r: adapter.settings.r,
      alpha: adapter.settings.alpha,
      targetModules: [...adapter.settings.targetModules],
    });
    // A shared journal numbers the version (and keeps it for the other coordinators); else the folder does.
    const version = this.#shelf
      ? this.#shelf.putAdapterVersion(base, name, metaOf, configBytes, safetensors)
      : (await this.#versionsOf(dir)).reduce((m, v) => Math.max(m, v), 0) + 1;
    const meta = metaOf(version);
    await this.#write(meta, configBytes, safetensors);
    return meta;
  }

  /** Writes a version's folder (a temporary one renamed into place; a version already there is kept). */
  async #write(meta: AdapterVersion, config: Uint8Array, weights: Uint8Array): Promise<void> {
    const dir = join(this.root, meta.base, meta.name);
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.upload-${meta.version}-${randomUUID()}`);
    await mkdir(tmp);
    try {
      await writeFile(join(tmp, ADAPTER_CONFIG_FILE), config);
      await writeFile(join(tmp, ADAPTER_WEIGHTS_FILE), weights);
      await writeFile(join(tmp, META_FILE), JSON.stringify(meta, null, 2) + '\n');
      await rename(tmp, join(dir, String(meta.version))).catch(async (err: NodeJS.ErrnoException) => {
        // Another pull wrote the same version first: the same bytes, kept.
        if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err;
      });
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    this.#cached.add(`${meta.base}/${meta.name}/${meta.version}`);
  }

  /** Shared journal: brings the versions other coordinators stored into the folder (one pull at a time). */
  #pull(): Promise<void> {
    if (!this.#shelf) return Promise.resolve();
    this.#pulling ??= (async () => {
      for (const { base, name, version } of this.#shelf!.adapterVersions()) {
        const key = `${base}/${name}/${version}`;
        if (this.#cached.has(key)) continue;
        if (await this.#meta(base, name, version)) {
          this.#cached.add(key);
          continue;
        }
        const v = this.#shelf!.adapterVersion(base, name, version);
        if (v) await this.#write({ ...(JSON.parse(v.meta) as AdapterVersion), base, name, version }, v.config, v.weights);
      }
    })().finally(() => {
      this.#pulling = null;
    });
    return this.#pulling;
  }

  /** The base's parsed config, the registry fingerprint and (for bases small enough) the engine's fingerprint. */
  async #base(base: string): Promise<{ config: LlamaConfig; fingerprint: string; engineFingerprint: string | null }> {
    if (!this.#store) throw new AppError('MODEL_NOT_FOUND', `This coordinator serves no model folders, so it keeps no adapters for ${base}; start it with --models DIR.`, { model: base });
    const folder = await this.#store.locate(base);
    const manifest = await this.#store.manifest(base);
    const configBytes = await readFile(join(folder.dir, 'config.json'));
    const config = parseLlamaConfig(configBytes.toString('utf8'));
    const weights = manifest.files.filter((f) => f.path.endsWith('.safetensors') && !f.path.startsWith('adapters/'));
    const fingerprint = sha256(Buffer.concat([configBytes, Buffer.from('\n' + weights.map((f) => `${f.path}:${f.sha256}`).join('\n'))]));
    let engineFingerprint: string | null = this.#engineFingerprints.get(fingerprint) ?? null;
    const weightBytes = weights.reduce((n, f) => n + f.size, 0);
    if (engineFingerprint === null && weights.length > 0 && weightBytes <= ENGINE_FINGERPRINT_MAX_BYTES) {
      const files = await readSafetensorsFiles(async (p) => new Uint8Array(await readFile(join(folder.dir, ...p.split('/')))));
      engineFingerprint = baseModelFingerprint(config, files);
      this.#engineFingerprints.set(fingerprint, engineFingerprint);
    }
    return { config, fingerprint, engineFingerprint };
  }

  async #versionsOf(dir: string): Promise<number[]> {
    const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
    return entries.filter((e) => e.isDirectory() && /^[1-9][0-9]*$/.test(e.name)).map((e) => Number(e.name)).sort((a, b) => a - b);
  }

  async #meta(base: string, name: string, version: number): Promise<AdapterVersion | null> {
    const text = await readFile(join(this.root, base, name, String(version), META_FILE), 'utf8').catch(() => null);
    return text === null ? null : (JSON.parse(text) as AdapterVersion);
  }

  /** Every adapter, by base then name. */
  async list(): Promise<AdapterRecord[]> {
    await this.#pull();
    const out: AdapterRecord[] = [];
    for (const base of (await dirNames(this.root)).sort()) {
      for (const name of (await dirNames(join(this.root, base))).sort()) {
        const rec = await this.#get(base, name);
        if (rec) out.push(rec);
      }
    }
    return out;
  }

  /** One adapter with all its versions, or null. */
  async get(rawBase: string, rawName: string): Promise<AdapterRecord | null> {
    await this.#pull();
    return this.#get(rawBase, rawName);
  }

  async #get(rawBase: string, rawName: string): Promise<AdapterRecord | null> {
    const base = parseName(rawBase);
    const name = parseName(rawName);
    const versions: AdapterVersion[] = [];
    for (const v of await this.#versionsOf(join(this.root, base, name))) {
      const m = await this.#meta(base, name, v);
      if (m) versions.push(m);
    }
    if (!versions.length) return null;
    return { base, name, latest: versions[versions.length - 1]!.version, versions };
  }

  /** The version `ref` names (`name` → latest, `name@N`), or ADAPTER_NOT_FOUND. */
  async resolve(rawBase: string, ref: string): Promise<AdapterVersion> {
    const base = parseName(rawBase);
    const { name, version } = parseAdapterRef(ref);
    const rec = await this.get(base, name);
    const found = rec && (version === null ? rec.versions[rec.versions.length - 1] : rec.versions.find((v) => v.version === version));
    if (!found) {
      throw new AppError('ADAPTER_NOT_FOUND', `No adapter ${ref.slice(0, 200)} for ${base} in the registry; GET /v1/adapters lists them.`, { model: base, adapter: ref.slice(0, 200) });
    }
    return found;
  }

  /** Absolute path of one file of a version. */
  filePath(v: AdapterVersion, file: AdapterFileName): string {
    return join(this.root, v.base, v.name, String(v.version), file);
  }

  /** The latest version of each of `base`'s adapters, as manifest entries under `adapters/<name>/`. */
  async manifestFiles(base: string): Promise<ModelFile[]> {
    await this.#pull();
    const out: ModelFile[] = [];
    for (const name of (await dirNames(join(this.root, base))).sort()) {
      const rec = await this.#get(base, name);
      if (!rec) continue;
      const v = rec.versions[rec.versions.length - 1]!;
      out.push({ path: `adapters/${name}/${ADAPTER_CONFIG_FILE}`, size: v.configSize, sha256: v.configSha256 });
      out.push({ path: `adapters/${name}/${ADAPTER_WEIGHTS_FILE}`, size: v.size, sha256: v.sha256 });
    }
    return out;
  }

  /**
   * Merges version `ref` of `base`'s adapter into the base (W + alpha/r · B·A, float32) and writes the result under
   * `outRoot/<base>-<name>-v<version>/` as a model folder of its own: the base's config, tokenizer and other files,
   * `model.safetensors` (the merged weights, F32, the merge in its metadata) and `onnx/model.onnx` (the decoder graph
   * transformers.js loads), so it is served as its own model id. Answers the id and whether it was made now (a
   * version already merged is kept). A base over MAX_MERGE_BYTES of weights: MODEL_TOO_LARGE (the merge holds it whole).
   */
  /**
   * Merged models another coordinator of the shared journal made (recorded there), by id: made here on first use
   * (ModelStore.onDemand) from the same adapter version and this coordinator's copy of the base.
   */
  mergedElsewhere(): Map<string, { base: string; ref: string }> {
    const out = new Map<string, { base: string; ref: string }>();
    for (const { key, value } of this.#shelf?.settingsWithPrefix(MERGED_KEY) ?? []) {
      try {
        const r = JSON.parse(value) as { base: string; name: string; version: number };
        out.set(key.slice(MERGED_KEY.length), { base: r.base, ref: `${r.name}@${r.version}` });
      } catch {
        // a record another version wrote: skipped
      }
    }
    return out;
  }

  async merge(rawBase: string, ref: string, outRoot: string, opts: { above?: number; chunkBytes?: number } = {}): Promise<{ model: string; created: boolean; version: AdapterVersion; files: Array<{ path: string; size: number }> }> {
    const out = await this.#merge(rawBase, ref, outRoot, opts);
    // On a shared journal every coordinator lists the merged model and makes its own copy when first asked for it.
    this.#shelf?.setting(`${MERGED_KEY}${out.model}`, () => JSON.stringify({ base: out.version.base, name: out.version.name, version: out.version.version }));
    return out;
  }

  async #merge(rawBase: string, ref: string, outRoot: string, opts: { above?: number; chunkBytes?: number }): Promise<{ model: string; created: boolean; version: AdapterVersion; files: Array<{ path: string; size: number }> }> {
    const v = await this.resolve(rawBase, ref);
    const model = parseName(`${v.base}-${v.name}-v${v.version}`);
    const dir = join(outRoot, model);
    const listed = async (): Promise<Array<{ path: string; size: number }>> => {
      const out: Array<{ path: string; size: number }> = [];
      for (const f of await walk(dir)) out.push({ path: f.rel, size: (await stat(f.abs)).size });
      return out;
    };
    if ((await stat(join(dir, 'config.json')).catch(() => null))?.isFile()) return { model, created: false, version: v, files: await listed() };
    if (!this.#store) throw new AppError('MODEL_NOT_FOUND', `This coordinator serves no model folders, so it cannot merge into ${v.base}; start it with --models DIR.`, { model: v.base });
    const folder = await this.#store.locate(v.base);
    const manifest = await this.#store.manifest(v.base);
    const weightBytes = manifest.files.filter((f) => f.path.endsWith('.safetensors') && !f.path.startsWith('adapters/')).reduce((n, f) => n + f.size, 0);
    if (weightBytes > MAX_MERGE_BYTES) {
      throw new AppError('MODEL_TOO_LARGE', `${v.base} has ${weightBytes} bytes of weights; the coordinator merges bases up to ${MAX_MERGE_BYTES} (it holds the whole model in float32 in memory).`, {
        model: v.base,
        bytes: weightBytes,
        limit: MAX_MERGE_BYTES,
      });
    }
    const read = (p: string): Promise<Uint8Array> => readWhole(join(folder.dir, ...p.split('/')));
    const loaded = await loadModelFolder(read);
    const adapter = loadAdapter({ configJson: await readFile(this.filePath(v, ADAPTER_CONFIG_FILE), 'utf8'), safetensors: new Uint8Array(await readFile(this.filePath(v, ADAPTER_WEIGHTS_FILE))) }, loaded.config);
    const merged = mergeLora(loaded.config, loaded.weights, adapter);
    const from = `${v.base}:${v.name}@${v.version}`;
    const tmp = join(outRoot, `.merge-${model}-${randomUUID()}`);
    await mkdir(tmp, { recursive: true });
    try {
      // Everything of the base but its weights (safetensors, ONNX) and its own adapters.
      for (const p of manifest.files.map((f) => f.path)) {
        if (p.endsWith('.safetensors') || p.endsWith('.safetensors.index.json') || p.startsWith('onnx/') || p.startsWith('adapters/') || p.endsWith('.onnx') || p.endsWith('.onnx_data')) continue;
        await mkdir(dirname(join(tmp, ...p.split('/'))), { recursive: true });
        await writeFile(join(tmp, ...p.split('/')), await read(p));
      }
      const tensors = [...merged].map(([name, w]) => ({ name, dtype: 'F32' as const, shape: w.shape, data: w.data }));
      await writeChunks(join(tmp, 'model.safetensors'), safetensorsChunks(tensors, { format: 'pt', merged_from: from, base_fingerprint: loaded.fingerprint }));
      await mkdir(join(tmp, 'onnx'), { recursive: true });
      const graph = buildDecoderOnnx(loaded.config, merged, `${v.base} with adapter ${from} merged (W + alpha/r · B·A).`);
      const initializerBytes = graph.graph.initializers.reduce((n, t) => n + tensorBytes(t), 0);
      if (initializerBytes > (opts.above ?? MERGE_EXTERNAL_DATA_ABOVE)) {
        // Past a protobuf's 2 GB: the weights go to onnx/model.onnx_data (and _1, … of at most 1 GiB each), which
        // transformers.js reads when config.json's transformers.js_config.use_external_data_format says how many.
        const external = encodeModelExternal(graph, { modelName: 'model.onnx', chunkBytes: opts.chunkBytes ?? EXTERNAL_CHUNK_BYTES });
        await writeFile(join(tmp, 'onnx', 'model.onnx'), external.model);
        for (const f of external.files) await writeChunks(join(tmp, 'onnx', f.name), externalDataChunks(f));
        const config = JSON.parse(await readFile(join(tmp, 'config.json'), 'utf8')) as Record<string, unknown>;
        const tjs = (config['transformers.js_config'] ?? {}) as Record<string, unknown>;
        config['transformers.js_config'] = { ...tjs, use_external_data_format: external.files.length };
        await writeFile(join(tmp, 'config.json'), JSON.stringify(config, null, 2));
      } else {
        await writeFile(join(tmp, 'onnx', 'model.onnx'), encodeModel(graph));
      }
      await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOTEMPTY' && err.code !== 'EEXIST') throw err; // merged meanwhile by another request
      });
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    return { model, created: true, version: v, files: await listed() };
  }

  /** Whether `base` has an adapter `ref` (registry, or `adapters/<name>/adapter_config.json` in its folder). */
  async has(base: string, ref: string): Promise<boolean> {
    try {
      await this.resolve(base, ref);
      return true;
    } catch (err) {
      if (!(err instanceof AppError)) throw err;
    }
    if (!this.#store || ref.includes('@')) return false;
    const folder = await this.#store.locate(base).catch(() => null);
    if (!folder) return false;
    return (await stat(join(folder.dir, 'adapters', ref, ADAPTER_CONFIG_FILE)).catch(() => null))?.isFile() ?? false;
  }

  /** Adapter names of `base`: the registry's and those in its folder's `adapters/`. */
  async namesFor(base: string): Promise<string[]> {
    await this.#pull();
    const names = new Set<string>();
    for (const n of await dirNames(join(this.root, base))) if ((await this.#versionsOf(join(this.root, base, n))).length) names.add(n);
    const folder = this.#store ? await this.#store.locate(base).catch(() => null) : null;
    if (folder) {
      for (const n of await dirNames(join(folder.dir, 'adapters'))) {
        if ((await stat(join(folder.dir, 'adapters', n, ADAPTER_CONFIG_FILE)).catch(() => null))?.isFile()) names.add(n);
      }
    }
    return [...names].sort();
  }
}

function isPartRef(v: unknown): v is PartRef {
  const p = v as Partial<PartRef> | null;
  return typeof p === 'object' && p !== null && typeof p.part === 'string' && Number.isInteger(p.bytes) && typeof p.sha256 === 'string';
}

/** The bytes of a result file sent in parts, checked against what the result states of it. */
function fromParts(ref: PartRef, parts: ReadonlyMap<string, ResultPart> | null): Uint8Array {
  const file = parts?.get(ref.part);
  const whole = wholePart(file, ref.bytes, ref.sha256);
  if ('missing' in whole) {
    throw new AppError('RESULT_PARTS_INCOMPLETE', `The train result names ${ref.part.slice(0, 64)} (${ref.bytes} bytes) in parts, but ${whole.missing} arrived on its lease.`, {
      part: ref.part.slice(0, 64),
      bytes: ref.bytes,
      received: file?.received ?? 0,
    });
  }
  if ('mismatch' in whole) {
    throw new AppError('ADAPTER_INVALID', `Invalid LoRA adapter: the parts of ${ref.part.slice(0, 64)} do not hash to the SHA-256 the result states.`);
  }
  return whole.bytes;
}

/** Visible subdirectory names of `dir` ([] when it does not exist). */
async function dirNames(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory() && !e.name.startsWith('.')).map((e) => e.name);
}

/**
 * A train task's result from its node, made the record's: the adapter files it carries are checked and stored
 * as a new version of the task's own `adapterName` for its own `model` (never names the node chose), and the
 * result keeps the version's reference instead of the files. A result without files, with files that are not
 * base64 or that the registry refuses (ADAPTER_INVALID, ADAPTER_MISMATCH for another base) fails the attempt.
 * An adapter too large for one socket message comes in `parts` (task.part, on the lease): all of them, of the
 * size and SHA-256 the result states, or RESULT_PARTS_INCOMPLETE (retryable) / ADAPTER_INVALID.
 */
export async function storeTrainedAdapter(
  registry: AdapterRegistry,
  task: { model: string; adapterName: string } | null,
  result: unknown,
  parts: ReadonlyMap<string, ResultPart> | null = null,
): Promise<TrainResult> {
  if (!task) throw new AppError('TASK_NOT_FOUND', 'The train task of this result is not in the journal.');
  const r = result as Partial<TrainResult> | null;
  const files = r?.adapter as Partial<TrainedAdapterFiles> | undefined;
  if (!r || typeof r !== 'object' || !files || typeof files.config !== 'string' || (typeof files.safetensors !== 'string' && !isPartRef(files.safetensors))) {
    throw new AppError('ADAPTER_INVALID', 'Invalid LoRA adapter: the train result carries no adapter files (adapter.config, and adapter.safetensors in base64 or named parts).');
  }
  const bytes = typeof files.safetensors === 'string' ? base64ToBytes(files.safetensors) : fromParts(files.safetensors as PartRef, parts);
  if (!bytes) throw new AppError('ADAPTER_INVALID', 'Invalid LoRA adapter: adapter.safetensors in the train result is not base64.');
  // The engine's base fingerprint is in the safetensors metadata, which the registry checks against the base.
  const v = await registry.upload(task.model, task.adapterName, files.config, bytes);
  return { ...(r as TrainResult), adapterName: task.adapterName, adapter: { id: `${v.base}:${v.name}@${v.version}`, base: v.base, name: v.name, version: v.version } };
}
