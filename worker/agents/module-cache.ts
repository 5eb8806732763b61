/**
 * Agent modules by content: bytes verified against their SHA-256, validated and
 * fuel-instrumented once, then compiled once per memory cap.
 */
import {
  AppError,
  DEFAULT_AGENT_LIMITS,
  capMemory,
  instrumentFuel,
  pagesForMB,
  validateAgentModule,
  type AgentModuleInfo,
} from '../../shared';

/** A compiled module ready to instantiate, with the cap it was compiled under. */
export interface PreparedModule {
  /** `${hash}:${memoryMB}`: what the workers cache it by. */
  key: string;
  module: WebAssembly.Module;
  capPages: number;
}

export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest('SHA-256', bytes as Uint8Array<ArrayBuffer>);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

export const moduleKey = (hash: string, memoryMB: number): string => `${hash}:${memoryMB}`;

/** Validates, instruments, caps and compiles bytes (no hash check). */
export async function prepareAgentModule(bytes: Uint8Array, memoryMB: number, hash = ''): Promise<PreparedModule> {
  validateAgentModule(bytes);
  return compileInstrumented(instrumentFuel(bytes), memoryMB, hash);
}

async function compileInstrumented(instrumented: Uint8Array, memoryMB: number, hash: string): Promise<PreparedModule> {
  const capPages = pagesForMB(memoryMB);
  const capped = capMemory(instrumented, capPages);
  const module = await WebAssembly.compile(capped as Uint8Array<ArrayBuffer>);
  return { key: moduleKey(hash, memoryMB), module, capPages };
}

interface Entry {
  info: AgentModuleInfo;
  instrumented: Uint8Array;
}

export class ModuleCache {
  readonly #entries = new Map<string, Entry>();
  readonly #compiled = new Map<string, PreparedModule>();
  readonly #compiling = new Map<string, Promise<PreparedModule>>();
  readonly #adding = new Map<string, Promise<AgentModuleInfo>>();

  has(hash: string): boolean {
    return this.#entries.has(hash.toLowerCase());
  }

  info(hash: string): AgentModuleInfo | undefined {
    return this.#entries.get(hash.toLowerCase())?.info;
  }

  get compiledCount(): number {
    return this.#compiled.size;
  }

  /**
   * Verifies the bytes' SHA-256 against `hash` (WASM_HASH_MISMATCH), validates and
   * instruments them, and compiles them for the default memory cap. Adding a hash
   * twice (even at once) does the work once.
   */
  add(hash: string, bytes: Uint8Array): Promise<AgentModuleInfo> {
    const h = hash.toLowerCase();
    const existing = this.#entries.get(h);
    if (existing) return Promise.resolve(existing.info);
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
    const info = validateAgentModule(bytes);
    const entry: Entry = { info, instrumented: instrumentFuel(bytes) };
    if (info.initialPages <= pagesForMB(DEFAULT_AGENT_LIMITS.memoryMB)) {
      await this.#compile(hash, entry, DEFAULT_AGENT_LIMITS.memoryMB);
    }
    this.#entries.set(hash, entry);
    return info;
  }

  /** The compiled module for (hash, memoryMB) if it is ready now; no work done. */
  peek(hash: string, memoryMB: number): PreparedModule | undefined {
    return this.#compiled.get(moduleKey(hash.toLowerCase(), memoryMB));
  }

  /** The compiled module for (hash, memoryMB), compiling it on first use. */
  async get(hash: string, memoryMB: number): Promise<PreparedModule> {
    const ready = this.peek(hash, memoryMB);
    if (ready) return ready;
    const entry = this.#entries.get(hash.toLowerCase());
    if (!entry) {
      throw new AppError('AGENT_MODULE_MISSING', `No module with hash ${hash} was added; call addModule(hash, bytes) before run().`, { hash });
    }
    return this.#compile(hash.toLowerCase(), entry, memoryMB);
  }

  #compile(hash: string, entry: Entry, memoryMB: number): Promise<PreparedModule> {
    const key = moduleKey(hash, memoryMB);
    let pending = this.#compiling.get(key);
    if (!pending) {
      pending = compileInstrumented(entry.instrumented, memoryMB, hash).then(
        (prepared) => {
          this.#compiled.set(key, prepared);
          this.#compiling.delete(key);
          return prepared;
        },
        (err: unknown) => {
          this.#compiling.delete(key);
          throw err;
        },
      );
      this.#compiling.set(key, pending);
    }
    return pending;
  }
}
