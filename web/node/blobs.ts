/**
 * Blobs a task's mounts name (`{ "blob": "sha256:<hex>" }`), resolved to bytes before the run:
 * `fetchBlob(sha256)` answers them from the node's cache or fetches `GET /v1/blobs/:sha256` with the
 * node's token, checks the SHA-256 (and the announced length) with crypto.subtle, and caches them.
 *
 * The cache is Cache Storage (`exec-node-blobs`, kept across page loads, like the HTTP cache the modules
 * use) where the page has it, else memory only; it is bounded (`maxBytes`) and evicts the least recently
 * used blobs past it. An index entry in the same cache keeps each blob's size and last use. Bytes that do
 * not match their digest are refused with BLOB_CORRUPT and never cached; a missing blob is BLOB_NOT_FOUND.
 * Concurrent calls for one blob share one fetch.
 */
import { AppError, errorFromAnswer } from '../../shared';
import { sha256Hex } from '../../worker/agents/module-cache';

export type BlobFetch = (url: string, init: RequestInit) => Promise<Response>;

export interface BlobCacheOptions {
  /** The coordinator's HTTP base (`http://host:port`); '' for this origin. */
  baseUrl?: string;
  /** The node's join token (role node), sent as a bearer token. */
  token?: string;
  /** Most bytes kept (default 512 MiB). The most recently used blob stays even when it alone is larger. */
  maxBytes?: number;
  /** Cache Storage name (default `exec-node-blobs`); null: memory only. */
  cacheName?: string | null;
  fetch?: BlobFetch;
}

export const DEFAULT_MAX_BLOB_CACHE_BYTES = 512 << 20;
const INDEX_KEY = 'https://exec-node.invalid/blobs/index.json';
const HEX = /^[0-9a-f]{64}$/;

interface IndexEntry {
  bytes: number;
  usedAt: number;
}

/** `sha256:<hex>` or `<hex>` → the hex digest, or BLOB_NOT_FOUND naming what was asked for. */
export function blobHex(ref: string): string {
  const hex = (ref.startsWith('sha256:') ? ref.slice(7) : ref).toLowerCase();
  if (!HEX.test(hex)) throw new AppError('BLOB_NOT_FOUND', `${JSON.stringify(ref.slice(0, 80))} is not a blob id (sha256:<64 hex digits>).`, { blob: ref.slice(0, 80) });
  return hex;
}

export class BlobCache {
  #baseUrl: string;
  readonly #token: string | undefined;
  readonly #maxBytes: number;
  readonly #cacheName: string | null;
  readonly #fetch: BlobFetch;
  readonly #pending = new Map<string, Promise<Uint8Array>>();
  /** Memory-only store (no Cache Storage), least recently used first. */
  readonly #memory = new Map<string, Uint8Array>();
  #index: Promise<Map<string, IndexEntry>> | null = null;
  #fetches = 0;
  #evictions = 0;

  /** Fetches from another coordinator of the pool from now on (the node moved to it); what is cached stays. */
  setBase(baseUrl: string): void {
    this.#baseUrl = baseUrl.replace(/\/$/, '');
  }

  constructor(opts: BlobCacheOptions = {}) {
    this.#baseUrl = (opts.baseUrl ?? '').replace(/\/$/, '');
    this.#token = opts.token || undefined;
    this.#maxBytes = opts.maxBytes !== undefined && opts.maxBytes >= 1 ? Math.floor(opts.maxBytes) : DEFAULT_MAX_BLOB_CACHE_BYTES;
    const name = opts.cacheName === undefined ? 'exec-node-blobs' : opts.cacheName;
    this.#cacheName = name !== null && typeof caches !== 'undefined' ? name : null;
    this.#fetch = opts.fetch ?? ((url, init) => globalThis.fetch(url, init));
  }

  /** HTTP fetches made (cache misses). */
  get fetches(): number {
    return this.#fetches;
  }

  get evictions(): number {
    return this.#evictions;
  }

  /** Whether the blobs live in Cache Storage (across page loads) or in memory only. */
  get persistent(): boolean {
    return this.#cacheName !== null;
  }

  #url(hex: string): string {
    return `${this.#baseUrl}/v1/blobs/${hex}`;
  }

  /** The blob's bytes, from the cache or the coordinator (verified); concurrent calls share the work. */
  get(ref: string): Promise<Uint8Array> {
    const hex = blobHex(ref);
    let p = this.#pending.get(hex);
    if (!p) {
      p = this.#get(hex).finally(() => this.#pending.delete(hex));
      this.#pending.set(hex, p);
    }
    return p;
  }

  async #get(hex: string): Promise<Uint8Array> {
    const cached = await this.#cached(hex);
    if (cached) return cached;
    const bytes = await this.#download(hex);
    await this.#store(hex, bytes);
    return bytes;
  }

  async #cached(hex: string): Promise<Uint8Array | null> {
    if (this.#cacheName === null) {
      const b = this.#memory.get(hex);
      if (!b) return null;
      this.#memory.delete(hex);
      this.#memory.set(hex, b);
      return b;
    }
    const cache = await caches.open(this.#cacheName);
    const res = await cache.match(this.#url(hex));
    if (!res) return null;
    const bytes = new Uint8Array(await res.arrayBuffer());
    // A cached copy is checked too (a disk can rot); a bad one is dropped and fetched again.
    if ((await sha256Hex(bytes)) !== hex) {
      await cache.delete(this.#url(hex));
      return null;
    }
    const index = await this.#loadIndex();
    index.set(hex, { bytes: bytes.byteLength, usedAt: Date.now() });
    await this.#saveIndex(cache, index);
    return bytes;
  }

  async #download(hex: string): Promise<Uint8Array> {
    this.#fetches++;
    const headers: Record<string, string> = {};
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    let res: Response;
    try {
      // no-store: the bytes are kept in this cache, not twice (the HTTP cache too).
      res = await this.#fetch(this.#url(hex), { headers, cache: 'no-store' });
    } catch (err) {
      throw new AppError('INTERNAL', `Could not fetch blob ${hex} from ${this.#url(hex)}: ${String(err)}. Check the coordinator.`, undefined, { cause: err });
    }
    if (!res.ok) throw await responseError(res, hex);
    const bytes = new Uint8Array(await res.arrayBuffer());
    const announced = res.headers.get('content-length');
    const actual = await sha256Hex(bytes);
    if (actual !== hex || (announced !== null && Number(announced) !== bytes.byteLength)) {
      throw new AppError('BLOB_CORRUPT', `The coordinator's answer for blob ${hex} has ${bytes.byteLength} bytes hashing to ${actual}; it was not used or cached. Retry, or upload the blob again.`, {
        blob: `sha256:${hex}`,
        actual,
        bytes: bytes.byteLength,
        ...(announced !== null ? { announced: Number(announced) } : {}),
      });
    }
    return bytes;
  }

  async #store(hex: string, bytes: Uint8Array): Promise<void> {
    if (this.#cacheName === null) {
      this.#memory.set(hex, bytes);
      let total = 0;
      for (const b of this.#memory.values()) total += b.byteLength;
      for (const [h, b] of this.#memory) {
        if (total <= this.#maxBytes || this.#memory.size <= 1) break;
        this.#memory.delete(h);
        total -= b.byteLength;
        this.#evictions++;
      }
      return;
    }
    const cache = await caches.open(this.#cacheName);
    const index = await this.#loadIndex();
    index.set(hex, { bytes: bytes.byteLength, usedAt: Date.now() });
    // Evict least recently used first, before writing, so the cache never holds more than the bound plus one blob.
    let total = 0;
    for (const e of index.values()) total += e.bytes;
    const oldest = [...index.entries()].filter(([h]) => h !== hex).sort((a, b) => a[1].usedAt - b[1].usedAt);
    for (const [h, e] of oldest) {
      if (total <= this.#maxBytes) break;
      await cache.delete(this.#url(h));
      index.delete(h);
      total -= e.bytes;
      this.#evictions++;
    }
    await cache.put(this.#url(hex), new Response(bytes as Uint8Array<ArrayBuffer>, { headers: { 'content-type': 'application/octet-stream', 'content-length': String(bytes.byteLength) } }));
    await this.#saveIndex(cache, index);
  }

  #loadIndex(): Promise<Map<string, IndexEntry>> {
    this.#index ??= (async () => {
      const cache = await caches.open(this.#cacheName!);
      const res = await cache.match(INDEX_KEY);
      const index = new Map<string, IndexEntry>();
      if (res) {
        try {
          for (const [h, e] of Object.entries((await res.json()) as Record<string, IndexEntry>)) {
            if (HEX.test(h) && Number.isFinite(e.bytes) && Number.isFinite(e.usedAt)) index.set(h, e);
          }
        } catch {
          // an unreadable index: rebuilt from what is stored below
        }
      }
      // Blobs stored but missing from the index (a crash between put and index write) are counted as old.
      for (const req of await cache.keys()) {
        const h = req.url.slice(req.url.lastIndexOf('/') + 1);
        if (HEX.test(h) && !index.has(h)) index.set(h, { bytes: Number((await cache.match(req))?.headers.get('content-length') ?? 0), usedAt: 0 });
      }
      return index;
    })();
    return this.#index;
  }

  async #saveIndex(cache: Cache, index: Map<string, IndexEntry>): Promise<void> {
    await cache.put(INDEX_KEY, new Response(JSON.stringify(Object.fromEntries(index)), { headers: { 'content-type': 'application/json' } }));
  }

  /** What the cache holds now: hex → bytes (for the page and tests). */
  async held(): Promise<Map<string, number>> {
    if (this.#cacheName === null) return new Map([...this.#memory].map(([h, b]) => [h, b.byteLength]));
    return new Map([...(await this.#loadIndex())].map(([h, e]) => [h, e.bytes]));
  }
}

async function responseError(res: Response, hex: string): Promise<AppError> {
  const body: unknown = await res.json().catch(() => null); // not JSON: the fallback below
  return errorFromAnswer(body) ?? new AppError(res.status === 404 ? 'BLOB_NOT_FOUND' : 'INTERNAL', `Fetching blob ${hex} answered ${res.status}.`, { blob: `sha256:${hex}` });
}

let shared: BlobCache | null = null;

/** Points `fetchBlob` at a coordinator (the node client calls it when it starts). */
/** The shared cache (set up by configureBlobs) fetches from another coordinator of the pool from now on, keeping what it holds and its token. */
export function setBlobBase(baseUrl: string): void {
  shared?.setBase(baseUrl);
}

export function configureBlobs(opts: BlobCacheOptions): BlobCache {
  shared = new BlobCache(opts);
  return shared;
}

/**
 * The blob's bytes (`sha256:<hex>` or the hex digest), verified: from this node's cache or the coordinator.
 * The agent runner resolves each `{ "blob": … }` of a task's mounts through it before the run.
 */
export function fetchBlob(sha256: string): Promise<Uint8Array> {
  shared ??= new BlobCache();
  return shared.get(sha256);
}
