/**
 * Gets agent modules into the runtime: each hash is fetched from the coordinator
 * at most once at a time, however many tasks ask for it together.
 */
import { AppError, PREPARED_FORMAT, errorFromAnswer, type HostMemoryDescriptor } from '../../shared';
import type { AgentRuntime } from '../../worker';
import { compileStreamingCoded, sha256Hex } from '../../worker/agents/module-cache';

export type FetchLike = (url: string) => Promise<Response>;

/** A runtime that can also hold a module the node compiled itself (AgentPool.addCompiledModule). */
type LoaderRuntime = Pick<AgentRuntime, 'hasModule' | 'addModule'> & {
  addCompiledModule?: (hash: string, module: WebAssembly.Module, memory: HostMemoryDescriptor, byteLength: number) => void;
};

/** Where a node remembers prepared modules whose bytes it checked (localStorage key prefix). */
const VERIFIED_KEY = 'exec-node:prepared-verified:';

/**
 * The User Timing measure each prepared load leaves in the page (fetch, compileStreaming and the digest check, ms):
 * `performance.getEntriesByName(MODULE_LOAD_MEASURE)`, detail `{ hash, bytes, fromCache, digestSkipped }`.
 */
export const MODULE_LOAD_MEASURE = 'exec-node:module-load';

export class ModuleLoader {
  readonly #runtime: LoaderRuntime;
  #baseUrl: string;
  readonly #fetch: FetchLike;
  readonly #pending = new Map<string, Promise<void>>();
  readonly #loaded = new Set<string>();
  #fetches = 0;

  #compiledStreaming = 0;
  #digestsSkipped = 0;

  /** Fetches from another coordinator of the pool from now on (the node moved to it). */
  setBase(baseUrl: string): void {
    this.#baseUrl = baseUrl.replace(/\/$/, '');
  }

  constructor(runtime: LoaderRuntime, baseUrl: string, fetchImpl?: FetchLike) {
    this.#runtime = runtime;
    this.#baseUrl = baseUrl.replace(/\/$/, '');
    this.#fetch = fetchImpl ?? ((url) => globalThis.fetch(url));
  }

  /** Hashes the runtime holds now (for the node's capabilities); ones it evicted are forgotten. */
  get hashes(): string[] {
    for (const h of this.#loaded) if (!this.#runtime.hasModule(h)) this.#loaded.delete(h);
    return [...this.#loaded];
  }

  /** How many HTTP fetches were made (each hash once unless one failed). */
  get fetches(): number {
    return this.#fetches;
  }

  /** Modules compiled with compileStreaming from the prepared URL, and how many of those skipped hashing (from a checked cache entry). */
  get streaming(): { compiled: number; digestsSkipped: number } {
    return { compiled: this.#compiledStreaming, digestsSkipped: this.#digestsSkipped };
  }

  has(hash: string): boolean {
    return this.#runtime.hasModule(hash);
  }

  /** Resolves once the runtime has the module; concurrent calls share one fetch. */
  ensure(hash: string): Promise<void> {
    if (this.#runtime.hasModule(hash)) return Promise.resolve();
    let p = this.#pending.get(hash);
    if (!p) {
      p = this.#load(hash).finally(() => this.#pending.delete(hash));
      this.#pending.set(hash, p);
    }
    return p;
  }

  async #loadPrepared(hash: string): Promise<boolean> {
    const add = this.#runtime.addCompiledModule;
    if (!add) return false;
    this.#fetches++;
    const got = await preparedLoad(hash, `${this.#baseUrl}/v1/modules/${hash}?prepared=${PREPARED_FORMAT}`, this.#fetch);
    if (!got) return false;
    add.call(this.#runtime, hash, got.module, got.memory, got.bytes);
    this.#compiledStreaming++;
    if (got.skipped) this.#digestsSkipped++;
    this.#loaded.add(hash);
    return true;
  }

  async #load(hash: string): Promise<void> {
    // The prepared form when the coordinator has one; the plain bytes when it says it has none (not when the module is missing).
    if (this.#runtime.addCompiledModule && typeof WebAssembly.compileStreaming === 'function' && (await this.#loadPrepared(hash))) return;
    this.#fetches++;
    const url = `${this.#baseUrl}/v1/modules/${hash}`;
    let res: Response;
    try {
      res = await this.#fetch(url);
    } catch (err) {
      throw new AppError('INTERNAL', `Could not fetch module ${hash} from ${url}: ${String(err)}. Check the coordinator.`, undefined, {
        cause: err,
      });
    }
    if (!res.ok) throw await responseError(res, `Fetching module ${hash} answered ${res.status}.`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    await this.#runtime.addModule(hash, bytes);
    this.#loaded.add(hash);
  }
}

/**
 * The prepared path: compileStreaming(fetch(the immutable prepared URL)), so that the browser's HTTP cache and V8's
 * code cache make the next page load's compile a cache read. The bytes are checked against the digest the coordinator
 * states (x-prepared-sha256) when they came over the network; an answer from the HTTP cache whose digest this node
 * checked before (localStorage) is not hashed again. Null: the coordinator has no prepared form of it (an error
 * whose details say `prepared: false`, or an answer without the prepared headers) and the plain path follows; any
 * other error answer (the module is missing, say) is thrown, so a missing module costs one fetch, not two.
 */
async function preparedLoad(
  hash: string,
  url: string,
  fetchImpl: FetchLike,
): Promise<{ module: WebAssembly.Module; memory: HostMemoryDescriptor; bytes: number; skipped: boolean } | null> {
  const t0 = performance.now();
  let res: Response;
  try {
    res = await fetchImpl(url);
  } catch {
    return null;
  }
  if (!res.ok) {
    const error = await responseError(res, `Fetching the prepared module ${hash} answered ${res.status}.`);
    if ((error.details as { prepared?: unknown } | undefined)?.prepared === false) return null;
    throw error;
  }
  const digest = res.headers.get('x-prepared-sha256')?.toLowerCase() ?? '';
  const memory = parseMemory(res.headers.get('x-memory'));
  if (!/^[0-9a-f]{64}$/.test(digest) || !memory) {
    await res.body?.cancel().catch(() => undefined);
    return null;
  }
  const bytes = Number(res.headers.get('content-length') ?? 0);
  const store = storage();
  const checkedBefore = store?.getItem(VERIFIED_KEY + url) === digest;
  const copy = res.clone();
  const compiled = compileStreamingCoded(res, bytes);
  // Decide after the body has arrived whether it came from the local cache (transferSize 0) of a checked entry.
  const module = await compiled.catch(async (err: unknown) => {
    await copy.body?.cancel().catch(() => undefined);
    throw err;
  });
  const fromCache = servedFromCache(url);
  if (checkedBefore && fromCache) {
    await copy.body?.cancel().catch(() => undefined);
    measureLoad(t0, { hash, bytes, fromCache, digestSkipped: true });
    return { module, memory, bytes, skipped: true };
  }
  const actual = await sha256Hex(new Uint8Array(await copy.arrayBuffer()));
  if (actual !== digest) {
    store?.removeItem(VERIFIED_KEY + url);
    // Replace whatever the HTTP cache holds for this URL before the next try.
    void fetchImpl(url).then((r) => r.body?.cancel()).catch(() => undefined);
    throw new AppError('WASM_HASH_MISMATCH', `The prepared module ${hash} hashes to ${actual}, not the stated ${digest}; fetch it again from the coordinator.`, {
      expected: digest,
      actual,
    });
  }
  store?.setItem(VERIFIED_KEY + url, digest);
  measureLoad(t0, { hash, bytes, fromCache, digestSkipped: false });
  return { module, memory, bytes, skipped: false };
}

function measureLoad(start: number, detail: { hash: string; bytes: number; fromCache: boolean; digestSkipped: boolean }): void {
  try {
    performance.measure(MODULE_LOAD_MEASURE, { start, end: performance.now(), detail });
  } catch {
    // no User Timing here: nothing to record
  }
}

function parseMemory(header: string | null): HostMemoryDescriptor | null {
  const m = /^(\d+),(\d*),([01])$/.exec(header ?? '');
  if (!m) return null;
  return { initialPages: Number(m[1]), maximumPages: m[2] === '' ? null : Number(m[2]), shared: m[3] === '1' };
}

function storage(): Storage | null {
  try {
    return typeof localStorage === 'undefined' ? null : localStorage;
  } catch {
    return null;
  }
}

/** Whether the page's last resource entry for this URL says the body came from the local cache. */
function servedFromCache(url: string): boolean {
  if (typeof performance === 'undefined' || typeof performance.getEntriesByName !== 'function') return false;
  const abs = new URL(url, typeof location === 'undefined' ? 'http://localhost/' : location.href).href;
  const entries = performance.getEntriesByName(abs, 'resource') as PerformanceResourceTiming[];
  const last = entries[entries.length - 1];
  return last !== undefined && last.transferSize === 0 && last.encodedBodySize > 0;
}

async function responseError(res: Response, fallback: string): Promise<AppError> {
  const body: unknown = await res.json().catch(() => null); // not JSON: the fallback
  return errorFromAnswer(body, fallback) ?? new AppError(res.status === 404 ? 'NOT_FOUND' : 'INTERNAL', fallback);
}
