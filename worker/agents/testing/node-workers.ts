/**
 * Worker-like objects for driving AgentPool in Node: a real worker thread
 * (for deadlines, stops and crashes), or a MessageChannel served in this
 * thread (for the queue and events, where the agent may block the thread).
 */
import { Worker } from 'node:worker_threads';
import type { WorkerLike } from '../pool';
import { exposeAgentWorker } from '../worker-api';

type Listener = EventListenerOrEventListenerObject;
const call = (l: Listener, ev: Event): void => ('handleEvent' in l ? l.handleEvent(ev) : l(ev));

/** A worker_threads Worker dressed as a Web Worker: `message` and `error` events, terminate(). */
export class NodeThreadWorker implements WorkerLike {
  readonly thread: Worker;
  readonly #message = new Map<Listener, (data: unknown) => void>();
  readonly #error = new Set<Listener>();
  #terminated = false;

  constructor() {
    this.thread = new Worker(new URL('./node-worker-boot.mjs', import.meta.url), {
      workerData: { entry: new URL('./node-worker-entry.ts', import.meta.url).href },
    });
    this.thread.on('error', (err) => this.#fail(err.message));
    this.thread.on('exit', (code) => this.#fail(`the worker thread exited with code ${code}`));
  }

  #fail(message: string): void {
    if (this.#terminated) return;
    this.#terminated = true;
    const ev = Object.assign(new Event('error'), { message });
    for (const l of [...this.#error]) call(l, ev);
  }

  postMessage(message: unknown, transfer?: Transferable[]): void {
    this.thread.postMessage(message, transfer as never);
  }

  addEventListener(type: string, l: Listener): void {
    if (type === 'error') {
      this.#error.add(l);
    } else if (type === 'message') {
      const h = (data: unknown) => call(l, Object.assign(new Event('message'), { data }));
      this.#message.set(l, h);
      this.thread.on('message', h);
    }
  }

  removeEventListener(type: string, l: Listener): void {
    if (type === 'error') this.#error.delete(l);
    const h = this.#message.get(l);
    if (type === 'message' && h) {
      this.thread.off('message', h);
      this.#message.delete(l);
    }
  }

  terminate(): void {
    this.#terminated = true;
    void this.thread.terminate();
  }
}

/** The worker API served over a MessageChannel in this same thread. */
export function sameThreadWorker(): WorkerLike {
  const { port1, port2 } = new MessageChannel();
  exposeAgentWorker(port2 as unknown as WorkerLike);
  return Object.assign(port1 as unknown as WorkerLike, {
    terminate: () => {
      port1.close();
      port2.close();
    },
  });
}
