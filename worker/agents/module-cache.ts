/**
 * Agent modules by content: bytes verified against their SHA-256, validated and
 * fuel-instrumented once, then compiled once per memory cap. Bounded: past
 * `maxModules` hashes or `maxBytes` bytes the least recently used module goes,
 * bytes and compiled variants together, and `onEvict` names the worker keys to drop.
 */
import {
  AppError,
  DEFAULT_AGENT_LIMITS,
  capMemory,
  instrumentFuel,
  memoryAsImport,
  pagesForMB,
  validateAgentModule,
  HOST_IMPORT_MODULES,
  type AgentModuleInfo,
  type HostMemoryDescriptor,
} from '../../shared';
import type { ExternKind } from '../../shared/wasm/module';

/** A compiled module ready to instantiate, with the cap it was compiled under. */
export interface PreparedModule {
  /** `${hash}:${memoryMB}`: what the workers cache it by. */
  key: string;
  module: WebAssembly.Module;
  capPages: number;
  /**
   * The memory the module imports as `agent_host.memory` (its own memory section, capped, made an
   * import so the worker can reuse one memory across runs); null: the module defines its memory.
   */
  memory: HostMemoryDescriptor | null;
  /** Size of the (instrumented, capped) bytes it was compiled from: what the cache's byte bound counts. */
  byteLength: number;
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

export const moduleKey = (hash: string, memoryMB: number): string => `${hash}:${memoryMB}`;

/** Validates, instruments, caps and compiles bytes (no hash check). */
export async function prepareAgentModule(bytes: Uint8Array, memoryMB: number, hash = ''): Promise<PreparedModule> {
  validateAgentModule(bytes, { imports: HOST_IMPORT_MODULES });
  return compileInstrumented(instrumentFuel(bytes), memoryMB, hash);
}

async function compileInstrumented(instrumented: Uint8Array, memoryMB: number, hash: string): Promise<PreparedModule> {
  const capPages = pagesForMB(memoryMB);
  const capped = capMemory(instrumented, capPages);
  const imported = memoryAsImport(capped);
  const final = imported?.bytes ?? capped;
  const module = await compileCoded(final);
  return { key: moduleKey(hash, memoryMB), module, capPages, memory: imported?.memory ?? null, byteLength: final.byteLength };
}

/**
 * WebAssembly.compile with coded errors: a module the engine refuses is WASM_INVALID; a compile that runs out
 * of memory (a RangeError, or the engine's "Out of memory" CompileError) is WASM_COMPILE_OUT_OF_MEMORY, retryable
 * elsewhere. Either way the node keeps serving: nothing of the failed compile is kept.
 */
export async function compileCoded(bytes: Uint8Array): Promise<WebAssembly.Module> {
  return codedCompile(bytes.byteLength, () => WebAssembly.compile(bytes as Uint8Array<ArrayBuffer>));
}

/**
 * WebAssembly.compileStreaming with the same coded errors. Given the fetch Response itself (not bytes), so that
 * Chromium can use and fill V8's code cache for the response's URL (see docs/api.md, Module caching).
 */
export async function compileStreamingCoded(response: Response, bytes: number): Promise<WebAssembly.Module> {
  return codedCompile(bytes, () => WebAssembly.compileStreaming(response));
}

async function codedCompile(byteLength: number, compile: () => Promise<WebAssembly.Module>): Promise<WebAssembly.Module> {
  const bytes = { byteLength };
  try {
    return await compile();
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    if (err instanceof RangeError || /out of memory/i.test(message)) {
      throw new AppError('WASM_COMPILE_OUT_OF_MEMORY', `Compiling the ${bytes.byteLength}-byte module ran out of memory (${message.slice(0, 200)}); the task goes to another node.`, {
        bytes: bytes.byteLength,
      });
    }
    if (err instanceof WebAssembly.CompileError) {
      throw new AppError('WASM_INVALID', `The engine refuses the module: ${message.slice(0, 300)}. Rebuild it with a WebAssembly toolchain for wasm32-wasi.`);
    }
    throw err;
  }
}

const externKind = (k: string): ExternKind => (k === 'function' ? 'func' : (k as ExternKind));

export const DEFAULT_MAX_MODULES = 64;
export const DEFAULT_MAX_MODULE_BYTES = 256 << 20;

export interface ModuleCacheOptions {
  /** Most module hashes held, each with all its compiled memory-cap variants (default 64). */
  maxModules?: number;
  /**
   * Most bytes held (default 256 MiB): each module's instrumented bytes plus the bytes each
   * compiled variant was compiled from. The engine's machine code is not measurable; it grows
   * with these bytes. The most recently used module stays even when it alone is larger.
   */
  maxBytes?: number;
  /** Called for each module evicted, with the keys (`hash:memoryMB`) of the compiled variants it had. */
  onEvict?: (hash: string, keys: string[]) => void;
}

interface Entry {
  hash: string;
  info: AgentModuleInfo;
  /** null: added already compiled from the coordinator's prepared bytes (addCompiled); every cap shares `shared`. */
  instrumented: Uint8Array | null;
  shared: { module: WebAssembly.Module; memory: HostMemoryDescriptor; byteLength: number } | null;
  /** memoryMB → compiled variant. */
  compiled: Map<number, PreparedModule>;
  compiling: Map<number, Promise<PreparedModule>>;
  /** instrumented bytes + every compiled variant's bytes. */
  bytes: number;
  /** 'adding' until #add puts it in the LRU; 'evicted' once it left it. */
  state: 'adding' | 'held' | 'evicted';
}

const bound = (n: number | undefined, fallback: number): number => (n === undefined || !(n >= 1) ? fallback : Math.floor(n));

function missing(hash: string, why: string): AppError {
  return new AppError('AGENT_MODULE_MISSING', `No module with hash ${hash} is loaded (${why}); call addModule(hash, bytes) before run().`, { hash });
}

export class ModuleCache {
  /** hash → entry, least recently used first (a use re-inserts the entry). */
  readonly #entries = new Map<string, Entry>();
  readonly #adding = new Map<string, Promise<AgentModuleInfo>>();
  readonly #maxModules: number;
  readonly #maxBytes: number;
  readonly #onEvict: ((hash: string, keys: string[]) => void) | undefined;
  #bytes = 0;
  #compiledCount = 0;
  #evictions = 0;

  constructor(options: ModuleCacheOptions = {}) {
    this.#maxModules = bound(options.maxModules, DEFAULT_MAX_MODULES);
    this.#maxBytes = bound(options.maxBytes, DEFAULT_MAX_MODULE_BYTES);
    this.#onEvict = options.onEvict;
  }

  has(hash: string): boolean {
    return this.#entries.has(hash.toLowerCase());
  }

  info(hash: string): AgentModuleInfo | undefined {
    return this.#entries.get(hash.toLowerCase())?.info;
  }

  /** Compiled variants held, over all modules. */
  get compiledCount(): number {
    return this.#compiledCount;
  }

  /** Bytes held, as the byte bound counts them. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Modules evicted so far. */
  get evictions(): number {
    return this.#evictions;
  }

  /**
   * Verifies the bytes' SHA-256 against `hash` (WASM_HASH_MISMATCH), validates and
   * instruments them, and compiles them for the default memory cap. Adding a hash
   * twice (even at once) does the work once. Adding may evict the least recently used modules.
   */
  add(hash: string, bytes: Uint8Array): Promise<AgentModuleInfo> {
    const h = hash.toLowerCase();
    const existing = this.#entries.get(h);
    if (existing) {
      this.#touch(existing);
      return Promise.resolve(existing.info);
    }
    let pending = this.#adding.get(h);
    if (!pending) {
      pending = this.#add(h, bytes).finally(() => this.#adding.delete(h));
      this.#adding.set(h, pending);
    }
    return pending;
  }

  async #add(hash: string, bytes: Uint8Array): Promise<AgentModuleInfo> {
    const actual = await sha256Hex(bytes);
    if (actual !== hash) {
      throw new AppError('WASM_HASH_MISMATCH', `The module bytes hash to ${actual}, not ${hash}; fetch the module again from the coordinator.`, {
        expected: hash,
        actual,
      });
    }
    // The engine's own check happens in the compile below (compileCoded: WASM_INVALID).
    // Host imports a version declares were checked against its config at upload; the node takes any it offers.
    const info = validateAgentModule(bytes, { engine: false, imports: HOST_IMPORT_MODULES });
    const instrumented = instrumentFuel(bytes);
    const entry: Entry = { hash, info, instrumented, shared: null, compiled: new Map(), compiling: new Map(), bytes: instrumented.byteLength, state: 'adding' };
    if (info.initialPages <= pagesForMB(DEFAULT_AGENT_LIMITS.memoryMB)) {
      await this.#compile(entry, DEFAULT_AGENT_LIMITS.memoryMB);
    }
    entry.state = 'held';
    this.#entries.set(hash, entry);
    this.#bytes += entry.bytes;
    this.#compiledCount += entry.compiled.size;
    this.#evict();
    return info;
  }

  /**
   * Holds a module compiled elsewhere from the coordinator's prepared bytes (fuel-instrumented, its memory made the
   * import `memory` describes, no cap written: the cap goes on the host's Memory object, so one compiled module
   * serves every cap). The caller has checked the bytes' digest; the runtime still refuses a module without the
   * fuel exports. `byteLength`: the prepared bytes' size, for the byte bound.
   */
  addCompiled(hash: string, module: WebAssembly.Module, memory: HostMemoryDescriptor, byteLength: number): AgentModuleInfo {
    const h = hash.toLowerCase();
    const existing = this.#entries.get(h);
    if (existing) {
      this.#touch(existing);
      return existing.info;
    }
    const info: AgentModuleInfo = {
      byteLength,
      imports: WebAssembly.Module.imports(module).map((i) => ({ module: i.module, name: i.name, kind: externKind(i.kind) })),
      exports: WebAssembly.Module.exports(module).map((e) => ({ name: e.name, kind: externKind(e.kind), index: -1 })), // the engine does not say the index
      initialPages: memory.initialPages,
      maximumPages: memory.maximumPages,
      functions: 0,
    };
    const entry: Entry = { hash: h, info, instrumented: null, shared: { module, memory, byteLength }, compiled: new Map(), compiling: new Map(), bytes: byteLength, state: 'held' };
    this.#entries.set(h, entry);
    this.#bytes += entry.bytes;
    this.#evict();
    return info;
  }

  /** The compiled module for (hash, memoryMB) if it is ready now; no work done but marking it used. */
  peek(hash: string, memoryMB: number): PreparedModule | undefined {
    const entry = this.#entries.get(hash.toLowerCase());
    const ready = entry?.compiled.get(memoryMB);
    if (ready) this.#touch(entry as Entry);
    return ready;
  }

  /** The compiled module for (hash, memoryMB), compiling it on first use (AGENT_MODULE_MISSING if not held). */
  async get(hash: string, memoryMB: number): Promise<PreparedModule> {
    const ready = this.peek(hash, memoryMB);
    if (ready) return ready;
    const entry = this.#entries.get(hash.toLowerCase());
    if (!entry) throw missing(hash, 'never added, or evicted as least recently used');
    return this.#compile(entry, memoryMB);
  }

  #compile(entry: Entry, memoryMB: number): Promise<PreparedModule> {
    if (entry.shared) {
      // One compiled module for every cap: the cap is the host Memory's maximum.
      const { module, memory } = entry.shared;
      const capPages = pagesForMB(memoryMB);
      const maximumPages = memory.maximumPages === null ? capPages : Math.min(memory.maximumPages, capPages);
      const prepared: PreparedModule = { key: moduleKey(entry.hash, memoryMB), module, capPages, memory: { ...memory, maximumPages }, byteLength: 0 };
      entry.compiled.set(memoryMB, prepared);
      this.#compiledCount++;
      this.#touch(entry);
      return Promise.resolve(prepared);
    }
    const instrumented = entry.instrumented as Uint8Array;
    let pending = entry.compiling.get(memoryMB);
    if (!pending) {
      pending = compileInstrumented(instrumented, memoryMB, entry.hash).then(
        (prepared) => {
          entry.compiling.delete(memoryMB);
          if (entry.state === 'evicted') throw missing(entry.hash, 'evicted as least recently used while it compiled');
          entry.compiled.set(memoryMB, prepared);
          entry.bytes += prepared.byteLength;
          if (entry.state === 'held') {
            this.#bytes += prepared.byteLength;
            this.#compiledCount++;
            this.#touch(entry);
            this.#evict();
          }
          return prepared;
        },
        (err: unknown) => {
          entry.compiling.delete(memoryMB);
          throw err;
        },
      );
      entry.compiling.set(memoryMB, pending);
    }
    return pending;
  }

  /** Marks an entry most recently used: O(1), a Map re-insert. */
  #touch(entry: Entry): void {
    this.#entries.delete(entry.hash);
    this.#entries.set(entry.hash, entry);
  }

  /** Drops least recently used modules until both bounds hold, keeping at least the newest. */
  #evict(): void {
    for (const entry of this.#entries.values()) {
      if (this.#entries.size <= 1 || (this.#entries.size <= this.#maxModules && this.#bytes <= this.#maxBytes)) return;
      this.#entries.delete(entry.hash);
      entry.state = 'evicted';
      this.#bytes -= entry.bytes;
      this.#compiledCount -= entry.compiled.size;
      this.#evictions++;
      const keys = Array.from(entry.compiled.values(), (p) => p.key);
      entry.compiled.clear();
      this.#onEvict?.(entry.hash, keys);
    }
  }
}
