/**
 * One seam for the coordinator's CPU-heavy work that must not stall the event loop that serves tasks,
 * heartbeats, leases and /healthz: a worker thread that answers calls, one at a time, in order.
 *
 * `OffThread` is the caller's side: the thread starts on first use, is unref'd (it never keeps the process
 * alive), and a thread that dies fails the calls it held and is started anew by the next call. `serveCalls`
 * is the thread's side: a module calls it at load with its role and handler; it does nothing on the main
 * thread or in a worker of another role. Threads are booted through server/ts-worker.mjs (tsx's loader does
 * not follow --import into worker threads on Node 20).
 *
 * Used by server/prepare-worker.ts (fuel instrumentation of agent modules, about a second on 64 MiB) and
 * server/json.ts (the bounds scan of large JSON bodies).
 */
import { Worker, isMainThread, parentPort, workerData, type Transferable } from 'node:worker_threads';

type Call<Req> = { id: number; request: Req };
type Answer<Res> = { id: number; ok: true; result: Res } | { id: number; ok: false; message: string };

/** The caller's side of a worker thread of role `role`, running the module at `entry` (its import.meta.url). */
export class OffThread<Req, Res> {
  #worker: Worker | null = null;
  #nextId = 0;
  readonly #waiting = new Map<number, { resolve: (r: Res) => void; reject: (e: Error) => void }>();

  constructor(
    readonly entry: string,
    readonly role: string,
  ) {}

  /** Runs `request` on the thread; rejects when the handler throws or the thread dies. */
  call(request: Req, transfer: readonly Transferable[] = []): Promise<Res> {
    const worker = this.#start();
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      worker.postMessage({ id, request } satisfies Call<Req>, transfer);
    });
  }

  /** Calls sent and not yet answered. */
  get pending(): number {
    return this.#waiting.size;
  }

  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = null;
    if (w) await w.terminate();
  }

  #start(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(new URL('./ts-worker.mjs', import.meta.url), { workerData: { entry: this.entry, role: this.role } });
    w.unref();
    w.on('message', (m: Answer<Res>) => {
      const waiter = this.#waiting.get(m.id);
      if (!waiter) return;
      this.#waiting.delete(m.id);
      if (m.ok) waiter.resolve(m.result);
      else waiter.reject(new Error(m.message));
    });
    const fail = (err: Error): void => {
      if (this.#worker === w) this.#worker = null;
      for (const waiter of this.#waiting.values()) waiter.reject(err);
      this.#waiting.clear();
    };
    w.on('error', fail);
    w.on('exit', (code) => fail(new Error(`The ${this.role} thread exited (code ${code}).`)));
    this.#worker = w;
    return w;
  }
}

/**
 * The thread's side: when this is a worker of `role`, answers each call with `handler`'s result (sent with
 * the buffers `transfer` names), or with the message of what it threw.
 */
export function serveCalls<Req, Res>(role: string, handler: (request: Req) => Res, transfer: (result: Res) => Transferable[] = () => []): void {
  if (isMainThread || !parentPort || (workerData as { role?: string } | null)?.role !== role) return;
  const port = parentPort;
  port.on('message', (m: Call<Req>) => {
    let answer: Answer<Res>;
    let moved: Transferable[] = [];
    try {
      const result = handler(m.request);
      answer = { id: m.id, ok: true, result };
      moved = transfer(result);
    } catch (err) {
      answer = { id: m.id, ok: false, message: err instanceof Error ? err.message : String(err) };
    }
    port.postMessage(answer, moved);
  });
}
