/**
 * Ties a node client's lifecycle to an element: subscribes while the element is
 * connected and re-renders it at most a few times a second, however many tasks
 * finish in between (no per-task DOM updates).
 */
import type { ReactiveController, ReactiveControllerHost } from 'lit';
import type { NodeClient, NodeStats, RunningTask, TaskEntry, TrainingCurve } from './node';
import { RenderThrottle } from './render-throttle';

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
  training: readonly TrainingCurve[];
}

export class NodeController implements ReactiveController {
  readonly #host: ReactiveControllerHost;
  readonly #render: RenderThrottle;
  #client: NodeClient | null = null;
  #unsubscribe: (() => void) | null = null;
  #sampler: ReturnType<typeof setInterval> | null = null;
  #connected = false;
  #rate: RateSample[] = [];
  #lastCount = 0;
  #lastT = 0;
  view: NodeView | null = null;

  constructor(host: ReactiveControllerHost, intervalMs = 250) {
    this.#host = host;
    this.#render = new RenderThrottle(() => this.#refresh(), intervalMs);
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
    this.#unsubscribe = client.on(() => this.#render.request());
    const s = client.stats();
    this.#lastCount = s.tasksDone + s.tasksFailed;
    this.#lastT = performance.now();
    this.#sampler = setInterval(() => this.#sample(), 1000);
    this.#render.render();
  }

  #detach(): void {
    this.#unsubscribe?.();
    this.#unsubscribe = null;
    this.#render.cancel();
    if (this.#sampler !== null) clearInterval(this.#sampler);
    this.#sampler = null;
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
    this.#render.request();
  }

  #refresh(): void {
    const client = this.#client;
    if (!client) return;
    this.view = { stats: client.stats(), running: client.running(), recent: client.recent(), rate: [...this.#rate], training: client.training().map((c) => ({ ...c, steps: [...c.steps], loss: [...c.loss], evalSteps: [...c.evalSteps], evalLoss: [...c.evalLoss] })) };
    this.#host.requestUpdate();
  }
}
