/**
 * Host-created Wasm memories for agent runs, reused across runs in one worker.
 *
 * Why: each WebAssembly.Memory reserves ~8 GiB of address space (guard regions for
 * bounds-check elimination) until the JS object is garbage collected, whatever its
 * maximum. Chromium puts every memory of a renderer (the page and all its workers) in
 * one 1 TiB V8 sandbox: about 124 memories at once, measured. A worker that fails to
 * reserve collects only its own isolate's garbage before giving up, so dead memories in
 * the other workers made instantiation fail under load. Reusing one memory per module
 * variant means a run that does not grow its memory reserves nothing new.
 *
 * A memory is reused only when the run left it at its initial size (memory cannot shrink:
 * a grown one would give the next run more than the module declares); it is zeroed before
 * it is kept, so nothing of one task reaches the next. Grown, shared and large ones are
 * discarded, and the discarded ones not yet collected are counted (FinalizationRegistry),
 * so the pool can recycle a worker whose garbage would crowd the sandbox.
 */
import { WASM_PAGE_BYTES, type HostMemoryDescriptor } from '../../shared';

/** Memories at most this large are zeroed and kept for the next run of the same variant. */
export const MAX_REUSED_MEMORY_BYTES = 16 << 20;
/** Free memories one worker keeps (one per module variant, least recently used dropped). */
export const MAX_FREE_MEMORIES = 8;

export class HostMemories {
  /** key → one free memory at its initial size, zeroed; least recently used first. */
  readonly #free = new Map<string, WebAssembly.Memory>();
  readonly #maxFree: number;
  readonly #maxReuseBytes: number;
  readonly #registry = new FinalizationRegistry<null>(() => {
    this.#collected++;
  });
  #discarded = 0;
  #collected = 0;
  #created = 0;
  #reused = 0;

  constructor(options: { maxFree?: number; maxReuseBytes?: number } = {}) {
    this.#maxFree = options.maxFree ?? MAX_FREE_MEMORIES;
    this.#maxReuseBytes = options.maxReuseBytes ?? MAX_REUSED_MEMORY_BYTES;
  }

  /** A memory for one run: a kept one for this key, else a new one (a RangeError when the host has no room). */
  take(key: string, d: HostMemoryDescriptor): WebAssembly.Memory {
    const kept = this.#free.get(key);
    if (kept) {
      this.#free.delete(key);
      this.#reused++;
      return kept;
    }
    this.#created++;
    return createMemory(d);
  }

  /** Hands back a memory after its run: kept (zeroed) if it is still at its initial size, else discarded. */
  give(key: string, d: HostMemoryDescriptor, memory: WebAssembly.Memory): void {
    const bytes = memory.buffer.byteLength;
    if (d.shared || bytes !== d.initialPages * WASM_PAGE_BYTES || bytes > this.#maxReuseBytes || this.#free.has(key)) {
      this.#discard(memory);
      return;
    }
    new Uint8Array(memory.buffer).fill(0);
    this.#free.set(key, memory);
    for (const [k, m] of this.#free) {
      if (this.#free.size <= this.#maxFree) break;
      this.#free.delete(k);
      this.#discard(m);
    }
  }

  /** Drops the kept memories of these keys (their module was evicted), or all of them. */
  drop(keys?: readonly string[]): void {
    for (const k of keys ?? [...this.#free.keys()]) {
      const m = this.#free.get(k);
      if (!m) continue;
      this.#free.delete(k);
      this.#discard(m);
    }
  }

  /** Memories this worker let go that the engine has not collected yet (each still reserves address space). */
  get uncollected(): number {
    return this.#discarded - this.#collected;
  }

  stats(): { created: number; reused: number; kept: number; uncollected: number } {
    return { created: this.#created, reused: this.#reused, kept: this.#free.size, uncollected: this.uncollected };
  }

  #discard(memory: WebAssembly.Memory): void {
    this.#discarded++;
    this.#registry.register(memory, null);
  }
}

export function createMemory(d: HostMemoryDescriptor): WebAssembly.Memory {
  const desc: WebAssembly.MemoryDescriptor = { initial: d.initialPages, shared: d.shared };
  if (d.maximumPages !== null) desc.maximum = d.maximumPages;
  return new WebAssembly.Memory(desc);
}

/** Whether an error thrown while reserving or growing Wasm memory says the host ran out (not the agent). */
export function isHostOutOfMemory(err: unknown): boolean {
  return err instanceof RangeError && /out of memory|could not allocate|cannot allocate|allocation failed/i.test(err.message);
}
