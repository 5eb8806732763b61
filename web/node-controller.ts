/**
 * Ties a node client's lifecycle to an element: subscribes while the element is
 * connected and re-renders it at most a few times a second, however many tasks
 * finish in between (no per-task DOM updates).
 */
import type { ReactiveController, ReactiveControllerHost } from 'lit';
import type { NodeClient, NodeStats, RunningTask, TaskEntry } from './node';

export interface RateSample {
  t: number;
  /** Tasks finished per second over the last interval. */
  perSec: number;
}

export interface NodeView {
  stats: NodeStats;
  running: RunningTask[];
  recent: TaskEntry[];
  rate: RateSample[];
}

export class NodeController implements ReactiveController {
  readonly #host: ReactiveControllerHost;
  readonly #intervalMs: number;
  #client: NodeClient | null = null;
  #unsubscribe: (() => void) | null = null;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #sampler: ReturnType<typeof setInterval> | null = null;
  #dirty = false;
  #connected = false;
  #rate: RateSample[] = [];
  #lastCount = 0;
  #lastT = 0;
  view: NodeView | null = null;

  constructor(host: ReactiveControllerHost, intervalMs = 250) {
    this.#host = host;
    this.#intervalMs = intervalMs;
    host.addController(this);
  }

  get client(): NodeClient | null {
    return this.#client;
  }

  set client(client: NodeClient | null) {
    if (client === this.#client) return;
    this.#detach();
    this.#client = client;
    this.#rate = [];
    if (this.#connected) this.#attach();
  }

  hostConnected(): void {
    this.#connected = true;
    this.#attach();
  }

  hostDisconnected(): void {
    this.#connected = false;
    this.#detach();
  }

  #attach(): void {
    const client = this.#client;
    if (!client || this.#unsubscribe) return;
    this.#unsubscribe = client.on(() => this.#invalidate());
    const s = client.stats();
    this.#lastCount = s.tasksDone + s.tasksFailed;
    this.#lastT = performance.now();
    this.#sampler = setInterval(() => this.#sample(), 1000);
    this.#refresh();
  }

  #detach(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#sampler !== null) clearInterval(this.#sampler);
    this.#timer = this.#sampler = null;
  }

  #sample(): void {
    const client = this.#client;
    if (!client) return;
    const s = client.stats();
    const now = performance.now();
    const count = s.tasksDone + s.tasksFailed;
    const perSec = ((count - this.#lastCount) * 1000) / Math.max(1, now - this.#lastT);
    this.#lastCount = count;
    this.#lastT = now;
    this.#rate.push({ t: Date.now(), perSec });
    if (this.#rate.length > 120) this.#rate.shift();
    this.#invalidate();
  }

  #invalidate(): void {
    if (this.#timer !== null) {
      this.#dirty = true;
      return;
    }
    this.#refresh();
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (this.#dirty) this.#invalidate();
    }, this.#intervalMs);
  }

  #refresh(): void {
    this.#dirty = false;
    const client = this.#client;
    if (!client) return;
    this.view = { stats: client.stats(), running: client.running(), recent: client.recent(), rate: [...this.#rate] };
    this.#host.requestUpdate();
  }
}
