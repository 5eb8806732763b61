/**
 * The node's weight store: model folders fetched from the coordinator in chunks into IndexedDB,
 * each chunk stored as it arrives with its own SHA-256 and each file checked against the
 * manifest's. An interrupted download keeps its chunks and the next `ensure` fetches the rest; a
 * model already stored and verified costs one manifest request (or none, offline). A budget (the
 * smaller of `budgetBytes` and a fraction of the origin's quota) is kept by evicting the least
 * recently used models that nobody holds. Works in pages and Web Workers.
 */
import { AppError } from '../../shared';
import type { ReadFile } from '../model';
import { digestHex } from './digest';
import { exclusive, holdShared, ifFree } from './locks';
import { cancelled, fetchManifest, fetchRange, ServedMismatch } from './remote';
import { fileChunkRange, modelChunkRange, modelFileRange, openWeightDb, type ChunkRecord, type FileRecord, type ManifestFile, type ModelRecord, type WeightDatabase, type WeightManifest } from './schema';

export const DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024;
/** Files up to this size are kept in memory once verified (WeightStore #hot), up to HOT_BYTES in all. */
const HOT_FILE_BYTES = 4 << 20;
const HOT_BYTES = 32 << 20;
/** A model touched again within this long after it was the last one touched is not written again. */
const TOUCH_EVERY_MS = 5_000;

export interface WeightStoreOptions {
  /** Coordinator origin, e.g. `http://127.0.0.1:8080`; '' (default) is the page's own origin. */
  base?: string;
  /** IndexedDB database name. Default 'weights'. */
  dbName?: string;
  /** Bytes per chunk and per Range request; files no larger are fetched in one request. Default 8 MiB. */
  chunkBytes?: number;
  /** Chunk requests in flight per file. Default 3. */
  concurrency?: number;
  /** Upper bound on stored bytes. */
  budgetBytes?: number;
  /** Share of `navigator.storage.estimate().quota` the store may use. Default 0.8. */
  quotaFraction?: number;
  /** Extra attempts for a chunk whose request failed on the network. Default 2. */
  retries?: number;
}

export interface WeightProgress {
  model: string;
  /** The file whose bytes just landed; null for the first report (bytes found already stored). */
  file: string | null;
  /** Bytes of the model stored so far, those already stored before this call included. */
  loadedBytes: number;
  totalBytes: number;
}

export interface EnsureOptions {
  onProgress?: (p: WeightProgress) => void;
  signal?: AbortSignal;
  /** Skip the coordinator and trust the stored manifest (MODEL_FILE_MISSING if the model is not complete). */
  offline?: boolean;
}

export interface EnsureResult {
  model: string;
  totalBytes: number;
  /** Bytes fetched by this call (0 when everything was stored). */
  downloadedBytes: number;
  /** File requests made by this call (the manifest not counted). */
  requests: number;
  /** 'coordinator': the manifest was fetched; 'stored': the stored manifest was trusted (offline). */
  manifestSource: 'coordinator' | 'stored';
  /** Files whose stored copy did not match a newer manifest and was dropped. */
  replacedFiles: string[];
}

export interface StoredModel {
  name: string;
  /** Bytes stored (chunks present). */
  bytes: number;
  /** Files with at least one chunk stored. */
  files: number;
  /** Every manifest file stored and matching the manifest's digest. */
  verified: boolean;
  /** Every manifest file fully stored (verified or not yet checked). */
  complete: boolean;
  lastUsed: number;
  totalBytes: number | null;
}

export interface WeightStats {
  models: number;
  bytes: number;
  /** The effective budget: min(budgetBytes, quotaFraction × quota); null when neither is known. */
  budgetBytes: number | null;
  quotaBytes: number | null;
  usageBytes: number | null;
  /** The answer of `navigator.storage.persist()` (asked once); null before it was asked or where it does not exist. */
  persisted: boolean | null;
  chunkBytes: number;
  /** Fetched by this store object since it was made. */
  downloadedBytes: number;
  requests: number;
  /** Files whose damaged chunks readFile fetched again. */
  repairedFiles: number;
}

/** What transformers.js needs as `env.customCache`. */
export interface WeightCache {
  match(key: string | Request): Promise<Response | undefined>;
  put(key: string | Request, response: Response): Promise<void>;
}

/** A model marked in use (never evicted) until released. */
export interface ModelHold {
  release(): void;
}

interface Tally {
  loaded: number;
  downloaded: number;
  requests: number;
}

function chunkLength(rec: FileRecord, index: number): number {
  return Math.min(rec.chunkBytes, rec.size - index * rec.chunkBytes);
}

function chunkCount(size: number, chunkBytes: number): number {
  return size === 0 ? 0 : Math.ceil(size / chunkBytes);
}

function contentType(path: string): string {
  if (path.endsWith('.json')) return 'application/json';
  if (path.endsWith('.txt') || path.endsWith('.jinja')) return 'text/plain';
  return 'application/octet-stream';
}

let persistAnswer: Promise<boolean | null> | null = null;

/** `navigator.storage.persist()`, asked at most once per context (null where it does not exist). */
function askPersistOnce(): Promise<boolean | null> {
  persistAnswer ??= (async () => {
    if (typeof navigator === 'undefined' || !navigator.storage?.persist) return null;
    try {
      return (await navigator.storage.persisted()) || (await navigator.storage.persist());
    } catch {
      return null;
    }
  })();
  return persistAnswer;
}

export class WeightStore {
  readonly base: string;
  readonly chunkBytes: number;
  readonly #dbName: string;
  readonly #concurrency: number;
  readonly #budgetOption: number | undefined;
  readonly #quotaFraction: number;
  readonly #retries: number;
  #db: Promise<WeightDatabase> | null = null;
  #downloaded = 0;
  #requests = 0;
  #repaired = 0;
  /**
   * Small files verified lately (an adapter's two files, configs, tokenizers), by model, path and SHA-256, least
   * recently used first: a read of one skips assembling and hashing its chunks again. Keyed by digest, so an entry
   * never stands for other bytes; bounded by HOT_BYTES.
   */
  readonly #hot = new Map<string, Uint8Array>();
  #hotBytes = 0;
  /** The last model #touch wrote, and when. */
  #lastTouch: { model: string; at: number } | null = null;

  constructor(opts: WeightStoreOptions = {}) {
    this.base = (opts.base ?? '').replace(/\/+$/, '');
    this.chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    if (!Number.isSafeInteger(this.chunkBytes) || this.chunkBytes <= 0) throw new RangeError(`chunkBytes must be a positive integer, not ${opts.chunkBytes}`);
    this.#dbName = opts.dbName ?? 'weights';
    this.#concurrency = Math.max(1, opts.concurrency ?? 3);
    this.#budgetOption = opts.budgetBytes;
    this.#quotaFraction = opts.quotaFraction ?? 0.8;
    this.#retries = opts.retries ?? 2;
  }

  #hotKey(rec: { model: string; path: string; sha256: string }): string {
    return `${rec.model}\n${rec.path}\n${rec.sha256}`;
  }

  /** Keeps verified bytes of a small file (a copy) for the next read. */
  #keepHot(rec: { model: string; path: string; sha256: string }, bytes: Uint8Array): void {
    if (bytes.length > HOT_FILE_BYTES) return;
    const key = this.#hotKey(rec);
    const had = this.#hot.get(key);
    if (had) {
      this.#hot.delete(key);
      this.#hotBytes -= had.length;
    }
    this.#hot.set(key, bytes.slice());
    this.#hotBytes += bytes.length;
    for (const [k, v] of this.#hot) {
      if (this.#hotBytes <= HOT_BYTES) break;
      this.#hot.delete(k);
      this.#hotBytes -= v.length;
    }
  }

  #open(): Promise<WeightDatabase> {
    this.#db ??= openWeightDb(this.#dbName);
    return this.#db;
  }

  #useLock(model: string): string {
    return `weights:${this.#dbName}:use:${model}`;
  }

  #writeLock(model: string): string {
    return `weights:${this.#dbName}:write:${model}`;
  }

  /** Marks a model in use (a loaded engine, a running backend) so eviction skips it until released. */
  async hold(model: string): Promise<ModelHold> {
    const release = await holdShared(this.#useLock(model));
    return { release };
  }

  /**
   * Makes every file of the model's manifest present and verified in the store, fetching only
   * what is missing. Throws MODEL_NOT_FOUND, MODEL_DOWNLOAD_FAILED (retryable; what was stored is
   * kept), MODEL_CORRUPT (a file that did not match its digest twice), STORAGE_QUOTA, CANCELLED.
   */
  async ensure(model: string, opts: EnsureOptions = {}): Promise<EnsureResult> {
    const release = await holdShared(this.#useLock(model));
    try {
      void this.#askPersist();
      let manifest: WeightManifest;
      let manifestSource: EnsureResult['manifestSource'] = 'coordinator';
      if (opts.offline) {
        manifest = await this.#storedComplete(model);
        manifestSource = 'stored';
      } else {
        try {
          manifest = await fetchManifest(this.base, model, opts.signal);
        } catch (err) {
          // The coordinator is unreachable: a model already complete here is still usable.
          if (!(err instanceof AppError && err.code === 'MODEL_DOWNLOAD_FAILED')) throw err;
          manifest = await this.#storedComplete(model).catch(() => {
            throw err;
          });
          manifestSource = 'stored';
        }
      }
      const result = await exclusive(this.#writeLock(model), () => this.#fill(manifest, opts), opts.signal).catch((err: unknown) => {
        if (opts.signal?.aborted && !(err instanceof AppError)) throw cancelled(model, opts.signal);
        throw err;
      });
      await this.#touch(model);
      return { ...result, manifestSource };
    } finally {
      release();
    }
  }

  /** The stored manifest of a model whose files are all stored, else MODEL_FILE_MISSING. */
  async #storedComplete(model: string): Promise<WeightManifest> {
    const entry = (await this.list()).find((m) => m.name === model);
    const rec = await (await this.#open()).get('models', model);
    if (!entry?.complete || !rec?.manifest) {
      throw new AppError('MODEL_FILE_MISSING', `Model ${model} is not fully stored on this node and the coordinator cannot be asked; connect and ensure() it.`, { model });
    }
    return rec.manifest;
  }

  async #fill(manifest: WeightManifest, opts: EnsureOptions): Promise<Omit<EnsureResult, 'manifestSource'>> {
    const db = await this.#open();
    const model = manifest.name;
    const replacedFiles = await this.#adopt(db, manifest);
    const tally: Tally = { loaded: 0, downloaded: 0, requests: 0 };
    const work: { rec: FileRecord; missing: number[] }[] = [];
    for (const f of manifest.files) {
      const rec = (await db.get('files', [model, f.path]))!;
      const have = new Set((await db.getAllKeys('chunks', fileChunkRange(model, f.path))).map((k) => k[2]));
      for (const i of have) tally.loaded += chunkLength(rec, i);
      const missing: number[] = [];
      for (let i = 0; i < rec.chunkCount; i++) if (!have.has(i)) missing.push(i);
      if (missing.length > 0 || !rec.verified) work.push({ rec, missing });
    }
    const report = (file: string | null): void => opts.onProgress?.({ model, file, loadedBytes: tally.loaded, totalBytes: manifest.totalBytes });
    report(null);
    if (work.some((w) => w.missing.length > 0)) {
      await this.#makeRoom(db, model, manifest.totalBytes).catch(async (err: unknown) => {
        // A model refused before any of it was stored leaves no record behind.
        if (tally.loaded === 0) await this.#remove(db, model);
        throw err;
      });
    }
    for (const { rec, missing } of work) {
      await this.#fillFile(db, rec, missing, tally, report, opts.signal);
    }
    return { model, totalBytes: manifest.totalBytes, downloadedBytes: tally.downloaded, requests: tally.requests, replacedFiles };
  }

  /** Records the manifest; drops stored files it no longer lists or lists with another digest; creates records for new ones. */
  async #adopt(db: WeightDatabase, manifest: WeightManifest): Promise<string[]> {
    const model = manifest.name;
    const tx = db.transaction(['models', 'files', 'chunks'], 'readwrite');
    const prev = await tx.objectStore('models').get(model);
    const now = Date.now();
    await tx.objectStore('models').put({ name: model, manifest, lastUsed: prev?.lastUsed ?? now, createdAt: prev?.createdAt ?? now });
    const wanted = new Map(manifest.files.map((f) => [f.path, f]));
    const replaced: string[] = [];
    const files = tx.objectStore('files');
    for (const rec of await files.getAll(modelFileRange(model))) {
      const want = wanted.get(rec.path);
      if (want && want.size === rec.size && want.sha256 === rec.sha256) continue;
      if (want) replaced.push(rec.path);
      await files.delete([model, rec.path]);
      await tx.objectStore('chunks').delete(fileChunkRange(model, rec.path));
    }
    for (const f of manifest.files) {
      if (await files.getKey([model, f.path])) continue;
      await files.put(this.#newFileRecord(model, f, 'coordinator'));
    }
    await tx.done;
    return replaced;
  }

  #newFileRecord(model: string, f: ManifestFile, origin: FileRecord['origin']): FileRecord {
    const chunkBytes = f.size <= this.chunkBytes ? Math.max(1, f.size) : this.chunkBytes;
    return { model, path: f.path, size: f.size, sha256: f.sha256, chunkBytes, chunkCount: chunkCount(f.size, chunkBytes), verified: false, origin };
  }

  /** Fetches the missing chunks of one file, then checks the whole file; a mismatch is fetched once more, then MODEL_CORRUPT. */
  async #fillFile(db: WeightDatabase, rec: FileRecord, missing: number[], tally: Tally, report: (file: string) => void, signal: AbortSignal | undefined): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      let problem: string | null = null;
      try {
        await this.#fetchChunks(db, rec, missing, tally, () => report(rec.path), signal);
        const check = await this.#assemble(db, rec);
        const redo = [...check.damaged, ...check.absent];
        if (redo.length > 0) {
          // A chunk damaged (or dropped) between storing and checking: fetch those again, then check again.
          await this.#fetchChunks(db, rec, redo, tally, () => report(rec.path), signal);
          const again = await this.#assemble(db, rec);
          const still = [...again.damaged, ...again.absent];
          problem = still.length > 0 ? `chunks ${still.join(', ')} do not match their digests` : again.sha256 === rec.sha256 ? null : `digest ${again.sha256}`;
        } else {
          problem = check.sha256 === rec.sha256 ? null : `digest ${check.sha256}`;
          if (problem === null) this.#keepHot(rec, check.bytes);
        }
      } catch (err) {
        if (!(err instanceof ServedMismatch)) throw err;
        problem = err.message;
      }
      if (problem === null) {
        await db.put('files', { ...rec, verified: true });
        return;
      }
      tally.loaded -= await this.#dropChunks(db, rec);
      report(rec.path);
      if (attempt >= 1) {
        throw new AppError('MODEL_CORRUPT', `${rec.model}/${rec.path} fetched twice and did not match the manifest (${problem}, expected ${rec.sha256}); the coordinator's copy or its manifest is wrong.`, {
          model: rec.model,
          file: rec.path,
          expected: rec.sha256,
          problem,
        });
      }
      missing = Array.from({ length: rec.chunkCount }, (_, i) => i);
    }
  }

  async #dropChunks(db: WeightDatabase, rec: FileRecord): Promise<number> {
    const tx = db.transaction(['files', 'chunks'], 'readwrite');
    const keys = await tx.objectStore('chunks').getAllKeys(fileChunkRange(rec.model, rec.path));
    await tx.objectStore('chunks').delete(fileChunkRange(rec.model, rec.path));
    await tx.objectStore('files').put({ ...rec, verified: false });
    await tx.done;
    return keys.reduce((n, k) => n + chunkLength(rec, k[2]), 0);
  }

  /** Fetches the given chunks (a few at a time), storing each with its digest as it arrives. Stops at the first failure once the others settle. */
  async #fetchChunks(db: WeightDatabase, rec: FileRecord, indices: number[], tally: Tally, onChunk: () => void, signal: AbortSignal | undefined): Promise<void> {
    let next = 0;
    let failure: unknown = null;
    const lane = async (): Promise<void> => {
      while (failure === null && next < indices.length) {
        if (signal?.aborted) throw cancelled(rec.model, signal);
        const index = indices[next++]!;
        const start = index * rec.chunkBytes;
        const data = await this.#fetchWithRetry(rec, start, start + chunkLength(rec, index), tally, signal);
        const chunk: ChunkRecord = { model: rec.model, path: rec.path, index, data, sha256: await digestHex(data) };
        await db.put('chunks', chunk);
        tally.loaded += data.length;
        onChunk();
      }
    };
    const lanes = Array.from({ length: Math.min(this.#concurrency, indices.length) }, () =>
      lane().catch((err: unknown) => {
        failure ??= err;
      }),
    );
    await Promise.all(lanes);
    if (failure !== null) throw failure;
  }

  async #fetchWithRetry(rec: FileRecord, start: number, end: number, tally: Tally, signal: AbortSignal | undefined): Promise<Uint8Array> {
    for (let attempt = 0; ; attempt++) {
      tally.requests++;
      this.#requests++;
      try {
        const bytes = await fetchRange(this.base, rec.model, rec.path, start, end, rec.size, signal);
        tally.downloaded += bytes.length;
        this.#downloaded += bytes.length;
        return bytes;
      } catch (err) {
        const retry = err instanceof AppError && err.code === 'MODEL_DOWNLOAD_FAILED' && attempt < this.#retries && !signal?.aborted;
        if (!retry) throw err;
        await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
      }
    }
  }

  /**
   * Reads every chunk of a file in order: the bytes, the stored chunks whose digest (or length) is
   * wrong, the chunks not stored at all, and the file's digest when nothing is wrong or absent.
   */
  /**
   * One stored file's bytes, each chunk checked against its digest (in parallel: WebCrypto digests run
   * off the calling thread). The whole file's digest is taken only when `whole` (a file not verified
   * yet): once a file matched its manifest, chunks that match the digests taken from those bytes are
   * those bytes, and a second pass over a large file would double a warm load's hashing.
   */
  async #assemble(db: WeightDatabase, rec: FileRecord, whole = true): Promise<{ bytes: Uint8Array; damaged: number[]; absent: number[]; sha256: string }> {
    const bytes = new Uint8Array(rec.size);
    const damaged: number[] = [];
    const seen = new Set<number>();
    const chunks = await db.getAll('chunks', fileChunkRange(rec.model, rec.path));
    const ok = await Promise.all(
      chunks.map(async (c) => c.data instanceof Uint8Array && c.data.length === chunkLength(rec, c.index) && (await digestHex(c.data)) === c.sha256),
    );
    chunks.forEach((c, i) => {
      seen.add(c.index);
      if (!ok[i]) damaged.push(c.index);
      else bytes.set(c.data, c.index * rec.chunkBytes);
    });
    const absent: number[] = [];
    for (let i = 0; i < rec.chunkCount; i++) if (!seen.has(i)) absent.push(i);
    const complete = damaged.length === 0 && absent.length === 0;
    const sha256 = !complete ? '' : whole ? await digestHex(bytes) : rec.sha256;
    return { bytes, damaged, absent, sha256 };
  }

  /**
   * The verified bytes of one stored file. A chunk whose digest no longer matches is fetched again
   * from the coordinator and the file's digest checked again. MODEL_FILE_MISSING when the file is
   * not (fully) stored; MODEL_CORRUPT when it cannot be repaired.
   */
  async readFile(model: string, path: string): Promise<Uint8Array> {
    const release = await holdShared(this.#useLock(model));
    try {
      const db = await this.#open();
      const rec = await db.get('files', [model, path]);
      if (!rec) throw new AppError('MODEL_FILE_MISSING', `${model}/${path} is not in the weight store; ensure('${model}') first.`, { model, file: path });
      const hot = rec.verified ? this.#hot.get(this.#hotKey(rec)) : undefined;
      if (hot) {
        const key = this.#hotKey(rec);
        this.#hot.delete(key);
        this.#hot.set(key, hot); // most recently used now
        await this.#touch(model);
        return hot.slice();
      }
      let got = await this.#assemble(db, rec, !rec.verified);
      if (got.absent.length > 0) {
        throw new AppError('MODEL_FILE_MISSING', `${model}/${path} is only partly stored (${got.absent.length} of ${rec.chunkCount} chunks missing); ensure('${model}') fetches the rest.`, { model, file: path });
      }
      if (got.damaged.length > 0 || got.sha256 !== rec.sha256) {
        if (rec.origin !== 'coordinator') {
          await this.#dropChunks(db, rec);
          await db.delete('files', [model, path]);
          throw new AppError('MODEL_CORRUPT', `${model}/${path} (stored by transformers.js) is damaged in IndexedDB and was dropped; it will be fetched again.`, { model, file: path });
        }
        const file = rec;
        got = await exclusive(this.#writeLock(model), async () => {
          const tally: Tally = { loaded: 0, downloaded: 0, requests: 0 };
          // The damaged chunks again from the coordinator, then the whole file's digest again.
          if (got.damaged.length > 0) await this.#fetchChunks(db, file, got.damaged, tally, () => undefined, undefined);
          const again = await this.#assemble(db, file);
          if (again.damaged.length === 0 && again.absent.length === 0 && again.sha256 === file.sha256) return again;
          // Still wrong: the whole file once more, then MODEL_CORRUPT.
          await this.#dropChunks(db, file);
          await this.#fillFile(db, file, Array.from({ length: file.chunkCount }, (_, i) => i), tally, () => undefined, undefined);
          return this.#assemble(db, file);
        });
        this.#repaired++;
      }
      if (!rec.verified) await db.put('files', { ...rec, verified: true });
      this.#keepHot(rec, got.bytes);
      await this.#touch(model);
      return got.bytes;
    } finally {
      release();
    }
  }

  /** A `ReadFile` (worker/model) over one stored model, for `loadModelFolder`. */
  reader(model: string): ReadFile {
    return (name) => this.readFile(model, name);
  }

  async #touch(model: string): Promise<void> {
    // The model this store touched last, touched again within a few seconds: its place in the LRU order is the
    // same (no other model was used since), so the write is skipped (a read-write transaction per file read).
    const now = Date.now();
    if (this.#lastTouch?.model === model && now - this.#lastTouch.at < TOUCH_EVERY_MS) return;
    this.#lastTouch = { model, at: now };
    const db = await this.#open();
    const tx = db.transaction('models', 'readwrite');
    const rec = await tx.store.get(model);
    if (rec) await tx.store.put({ ...rec, lastUsed: Math.max(Date.now(), rec.lastUsed + 1) });
    await tx.done;
  }

  async #modelBytes(db: WeightDatabase, model: string): Promise<{ bytes: number; files: Map<string, number> }> {
    const recs = new Map((await db.getAll('files', modelFileRange(model))).map((r) => [r.path, r]));
    const files = new Map<string, number>();
    let bytes = 0;
    for (const k of await db.getAllKeys('chunks', modelChunkRange(model))) {
      const rec = recs.get(k[1]);
      if (!rec) continue;
      const n = chunkLength(rec, k[2]);
      bytes += n;
      files.set(k[1], (files.get(k[1]) ?? 0) + 1);
    }
    return { bytes, files };
  }

  async #budget(): Promise<{ budget: number; quota: number | null; usage: number | null }> {
    let quota: number | null = null;
    let usage: number | null = null;
    if (typeof navigator !== 'undefined' && navigator.storage?.estimate) {
      const e = await navigator.storage.estimate();
      quota = e.quota ?? null;
      usage = e.usage ?? null;
    }
    const fromQuota = quota === null ? Infinity : Math.floor(quota * this.#quotaFraction);
    return { budget: Math.min(this.#budgetOption ?? Infinity, fromQuota), quota, usage };
  }

  /** Evicts least-recently-used models nobody holds until `need` bytes for `model` fit the budget; STORAGE_QUOTA if they cannot. */
  async #makeRoom(db: WeightDatabase, model: string, need: number): Promise<void> {
    const { budget } = await this.#budget();
    if (need > budget) {
      throw new AppError('STORAGE_QUOTA', `Model ${model} needs ${need} bytes, more than the weight store's whole budget of ${budget}; raise budgetBytes or free browser storage.`, {
        model,
        needBytes: need,
        budgetBytes: budget,
      });
    }
    const others = (await db.getAll('models')).filter((m) => m.name !== model).sort((a, b) => a.lastUsed - b.lastUsed);
    const sizes = new Map<string, number>();
    let used = 0;
    for (const m of others) {
      const { bytes } = await this.#modelBytes(db, m.name);
      sizes.set(m.name, bytes);
      used += bytes;
    }
    const busy: string[] = [];
    for (const m of others) {
      if (used + need <= budget) return;
      const evicted = await ifFree(this.#useLock(m.name), () => exclusive(this.#writeLock(m.name), () => this.#remove(db, m.name)));
      if (evicted) used -= sizes.get(m.name)!;
      else busy.push(m.name);
    }
    if (used + need > budget) {
      throw new AppError('STORAGE_QUOTA', `Model ${model} needs ${need} bytes; the budget is ${budget} and ${used} are held by models in use (${busy.join(', ')}).`, {
        model,
        needBytes: need,
        budgetBytes: budget,
        usedBytes: used,
        inUse: busy,
      });
    }
  }

  async #remove(db: WeightDatabase, model: string): Promise<void> {
    const tx = db.transaction(['models', 'files', 'chunks'], 'readwrite');
    await tx.objectStore('chunks').delete(modelChunkRange(model));
    await tx.objectStore('files').delete(modelFileRange(model));
    await tx.objectStore('models').delete(model);
    await tx.done;
  }

  /** Removes a model and its bytes (waits for a download of it in this origin to stop first). */
  async delete(model: string): Promise<void> {
    const db = await this.#open();
    await exclusive(this.#writeLock(model), () => this.#remove(db, model));
  }

  /** Every stored model, least recently used first. */
  async list(): Promise<StoredModel[]> {
    const db = await this.#open();
    const out: StoredModel[] = [];
    for (const m of (await db.getAll('models')).sort((a, b) => a.lastUsed - b.lastUsed)) {
      const recs = new Map((await db.getAll('files', modelFileRange(m.name))).map((r) => [r.path, r]));
      const { bytes, files } = await this.#modelBytes(db, m.name);
      const listed = m.manifest?.files ?? [];
      const full = (path: string): boolean => {
        const r = recs.get(path);
        return r !== undefined && (files.get(path) ?? 0) === r.chunkCount;
      };
      const complete = m.manifest !== null && listed.every((f) => full(f.path));
      out.push({
        name: m.name,
        bytes,
        files: files.size + [...recs.values()].filter((r) => r.chunkCount === 0).length,
        complete,
        verified: complete && listed.every((f) => recs.get(f.path)!.verified),
        lastUsed: m.lastUsed,
        totalBytes: m.manifest?.totalBytes ?? null,
      });
    }
    return out;
  }

  async stats(): Promise<WeightStats> {
    const models = await this.list();
    const { budget, quota, usage } = await this.#budget();
    return {
      models: models.length,
      bytes: models.reduce((n, m) => n + m.bytes, 0),
      budgetBytes: Number.isFinite(budget) ? budget : null,
      quotaBytes: quota,
      usageBytes: usage,
      persisted: await this.#askPersist(),
      chunkBytes: this.chunkBytes,
      downloadedBytes: this.#downloaded,
      requests: this.#requests,
      repairedFiles: this.#repaired,
    };
  }

  /** Asks for persistent storage (once per page or worker; the answer is in stats()). */
  #askPersist(): Promise<boolean | null> {
    return askPersistOnce();
  }

  /**
   * `env.customCache` for transformers.js: keys whose path is `{prefix}{model}/{file}` (prefix
   * '/models/', what `env.remoteHost = base + '/models/'` with `remotePathTemplate = '{model}/'`
   * and the default `localModelPath` give) are answered from the store, and what transformers.js
   * puts is stored (checked against the manifest when the model has one).
   */
  customCache(opts: { prefix?: string } = {}): WeightCache {
    const prefix = opts.prefix ?? '/models/';
    const locate = (key: string | Request): { model: string; path: string } | null => {
      const raw = typeof key === 'string' ? key : key.url;
      let pathname: string;
      try {
        const origin = this.base || (typeof location !== 'undefined' ? location.href : 'http://localhost/');
        pathname = new URL(raw, origin).pathname;
      } catch {
        return null;
      }
      if (!pathname.startsWith(prefix)) return null;
      const parts = pathname.slice(prefix.length).split('/').map((s) => decodeURIComponent(s));
      if (parts.length < 2 || parts.some((p) => p === '' || p === '.' || p === '..')) return null;
      return { model: parts[0]!, path: parts.slice(1).join('/') };
    };
    return {
      match: async (key) => {
        const at = locate(key);
        if (!at) return undefined;
        try {
          const bytes = await this.readFile(at.model, at.path);
          return new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { 'content-length': String(bytes.length), 'content-type': contentType(at.path) } });
        } catch (err) {
          if (err instanceof AppError && (err.code === 'MODEL_FILE_MISSING' || err.code === 'MODEL_CORRUPT')) return undefined;
          throw err;
        }
      },
      put: async (key, response) => {
        const at = locate(key);
        if (!at) return;
        const bytes = new Uint8Array(await response.arrayBuffer());
        await this.#putFile(at.model, at.path, bytes);
      },
    };
  }

  async #putFile(model: string, path: string, bytes: Uint8Array): Promise<void> {
    const release = await holdShared(this.#useLock(model));
    try {
      const db = await this.#open();
      const sha256 = await digestHex(bytes);
      await exclusive(this.#writeLock(model), async () => {
        const m = await db.get('models', model);
        const listed = m?.manifest?.files.find((f) => f.path === path);
        if (listed && (listed.sha256 !== sha256 || listed.size !== bytes.length)) {
          throw new AppError('MODEL_CORRUPT', `${model}/${path} handed to the cache does not match the manifest (${sha256}, expected ${listed.sha256}).`, { model, file: path });
        }
        const existing = await this.#modelBytes(db, model);
        const old = await db.get('files', [model, path]);
        const oldBytes = old ? Math.min(old.size, (existing.files.get(path) ?? 0) * old.chunkBytes) : 0;
        await this.#makeRoom(db, model, Math.max(m?.manifest?.totalBytes ?? 0, existing.bytes - oldBytes + bytes.length));
        const rec: FileRecord = { ...this.#newFileRecord(model, { path, size: bytes.length, sha256 }, listed ? 'coordinator' : 'cache'), verified: true };
        const chunks: ChunkRecord[] = [];
        for (let i = 0; i < rec.chunkCount; i++) {
          const data = bytes.slice(i * rec.chunkBytes, i * rec.chunkBytes + chunkLength(rec, i));
          chunks.push({ model, path, index: i, data, sha256: await digestHex(data) });
        }
        const now = Date.now();
        const tx = db.transaction(['models', 'files', 'chunks'], 'readwrite');
        const prev = await tx.objectStore('models').get(model);
        const record: ModelRecord = prev ?? { name: model, manifest: null, lastUsed: now, createdAt: now };
        await tx.objectStore('models').put({ ...record, lastUsed: Math.max(now, record.lastUsed) });
        await tx.objectStore('chunks').delete(fileChunkRange(model, path));
        await tx.objectStore('files').put(rec);
        for (const c of chunks) await tx.objectStore('chunks').put(c);
        await tx.done;
      });
    } finally {
      release();
    }
  }
}
