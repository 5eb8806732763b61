/**
 * Prepares agent modules (shared/wasm/prepared.ts: fuel instrumentation, memory as the host's import) on a
 * worker thread: on a 64 MiB module that is about a second of CPU, which would otherwise stall the event loop
 * that serves tasks, heartbeats and leases. One thread, started on first use, unref'd; requests queue on it.
 * Booted through server/ts-worker.mjs (tsx's loader does not follow --import into worker threads on Node 20).
 */
import { createHash } from 'node:crypto';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { prepareForHost, type HostMemoryDescriptor } from '../shared';

export interface PreparedModule {
  bytes: Buffer;
  /** Hex SHA-256 of `bytes`. */
  sha256: string;
  memory: HostMemoryDescriptor;
}

type Request = { id: number; bytes: Uint8Array };
type Answer = { id: number; ok: true; prepared: { bytes: Uint8Array; sha256: string; memory: HostMemoryDescriptor } | null } | { id: number; ok: false; message: string };

/** Prepares on one worker thread; null when the module has no prepared form (no memory, or several). */
export class ModulePreparer {
  #worker: Worker | null = null;
  #nextId = 0;
  readonly #waiting = new Map<number, { resolve: (p: PreparedModule | null) => void; reject: (e: Error) => void }>();

  prepare(bytes: Uint8Array): Promise<PreparedModule | null> {
    const worker = this.#start();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      worker.postMessage({ id, bytes } satisfies Request);
    });
  }

  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = null;
    if (w) await w.terminate();
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(new URL('./ts-worker.mjs', import.meta.url), { workerData: { entry: new URL(import.meta.url).href, preparer: true } });
    w.unref();
    w.on('message', (m: Answer) => {
      const waiter = this.#waiting.get(m.id);
      if (!waiter) return;
      this.#waiting.delete(m.id);
      if (!m.ok) waiter.reject(new Error(m.message));
      else waiter.resolve(m.prepared && { bytes: Buffer.from(m.prepared.bytes.buffer, m.prepared.bytes.byteOffset, m.prepared.bytes.byteLength), sha256: m.prepared.sha256, memory: m.prepared.memory });
    });
    const fail = (err: Error): void => {
      if (this.#worker === w) this.#worker = null;
      for (const waiter of this.#waiting.values()) waiter.reject(err);
      this.#waiting.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`The module preparer thread exited (code ${code}).`)));
    this.#worker = w;
    return w;
  }
}

function serve(port: NonNullable<typeof parentPort>): void {
  port.on('message', (m: Request) => {
    let answer: Answer;
    try {
      const out = prepareForHost(m.bytes);
      answer = { id: m.id, ok: true, prepared: out && { bytes: out.bytes, sha256: createHash('sha256').update(out.bytes).digest('hex'), memory: out.memory } };
    } catch (err) {
      answer = { id: m.id, ok: false, message: err instanceof Error ? err.message : String(err) };
    }
    port.postMessage(answer, answer.ok && answer.prepared ? [answer.prepared.bytes.buffer as ArrayBuffer] : []);
  });
}

if (!isMainThread && parentPort && (workerData as { preparer?: boolean } | null)?.preparer) serve(parentPort);
