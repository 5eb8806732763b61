/**
 * The coordinator's metrics on prom-client: one Registry per coordinator (tests run many in one
 * process; the global default registry is never used), the default process metrics, the
 * coordinator's own counters, gauges and histograms, and per-node series collected at scrape time
 * from the scheduler's node sessions. The KPI summary (`/v1/kpis`, and the `coordinator_kpi_*`
 * gauges) is computed from the same events over a sliding window of KPI_WINDOW_S seconds.
 *
 * Nodes' own figures are bounded here (NODE_METRIC_BOUNDS): a value that is not finite, negative or
 * above its bound is dropped and counted, never exported as given.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { ERRORS, NODE_METRIC_BOUNDS, RESULT_METRIC_BOUNDS, TASK_KINDS, type NodeMetrics, type TaskKind, type TaskState } from '../shared';
import type { Clock, Ended } from './journal';
import { INFRA_CODES, type NodeSession } from './node';

/** The window every KPI of `/v1/kpis` is computed over (seconds). */
export const KPI_WINDOW_S = 300;
/** Task latencies kept for the p50 (the newest, within the window). */
const RECENT = 8192;
/** Most distinct `model` label values; further models are counted under `other`. */
const MAX_MODEL_LABELS = 64;
const MIB = 1024 * 1024;

const TASK_LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const DISPATCH_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const SPAWN_BUCKETS_S = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const TTFT_BUCKETS_S = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const TOKENS_PER_SECOND_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000];

export interface Kpi {
  value: number | null;
  target: string;
  unit: string;
  /** null when there is no data yet. */
  pass: boolean | null;
}

/** The KPIs of the seed and the label each has in `coordinator_kpi_value` (in base units there). */
export type KpiName = 'successRate' | 'errorRate' | 'throughput' | 'latencyP50' | 'availability' | 'agentSpawn' | 'memoryPerAgent' | 'utilisation';
const KPI_LABELS: Record<KpiName, { label: string; scale: number }> = {
  agentSpawn: { label: 'agentSpawn', scale: 1 / 1000 },
  latencyP50: { label: 'taskLatencyP50', scale: 1 / 1000 },
  availability: { label: 'availability', scale: 1 },
  memoryPerAgent: { label: 'memoryPerAgent', scale: 1 },
  successRate: { label: 'successRate', scale: 1 },
  utilisation: { label: 'utilisation', scale: 1 },
  throughput: { label: 'throughput', scale: 1 },
  errorRate: { label: 'errorRate', scale: 1 },
};

/** What a scrape reads beyond the events the metrics were told about. */
export interface MetricsSource {
  clock: Clock;
  journal: {
    readonly db: { readonly open: boolean };
    readonly duplicatesDropped: number;
    countsByState(): Record<TaskState, number>;
    queuedByPriority(): Array<{ priority: number; n: number }>;
  };
  nodes(): Iterable<NodeSession>;
  webhooks: { readonly delivered: number; readonly failed: number };
  maintenance: { readonly on: boolean };
  /** Null when tracing is off. */
  tracing: { readonly droppedNodeSpans: number; readonly droppedSpans: number } | null;
  heartbeatIntervalMs: number;
  prefetch: number;
}

/** Per-second sums over the last `seconds`, one column per figure. */
class SecondRing {
  readonly #seconds: number;
  readonly #secondOf: Float64Array;
  readonly #cols: Int32Array[];

  constructor(seconds: number, columns: number) {
    this.#seconds = seconds;
    this.#secondOf = new Float64Array(seconds).fill(-Infinity);
    this.#cols = Array.from({ length: columns }, () => new Int32Array(seconds));
  }

  add(col: number, now: number, by = 1): void {
    const sec = Math.floor(now / 1000);
    const slot = ((sec % this.#seconds) + this.#seconds) % this.#seconds;
    if (this.#secondOf[slot] !== sec) {
      this.#secondOf[slot] = sec;
      for (const c of this.#cols) c[slot] = 0;
    }
    this.#cols[col]![slot]! += by;
  }

  /** The column's sum over the last `seconds` (at most the ring's). */
  sum(col: number, now: number, seconds = this.#seconds): number {
    const sec = Math.floor(now / 1000);
    const c = this.#cols[col]!;
    const span = Math.min(seconds, this.#seconds);
    let n = 0;
    for (let i = 0; i < this.#seconds; i++) {
      const age = sec - this.#secondOf[i]!;
      if (age >= 0 && age < span) n += c[i]!;
    }
    return n;
  }
}

// Columns of the KPI window.
const SUCCEEDED = 0;
const FAILED = 1;
const FINISHED = 2;
const ATTEMPTS = 3;
const INFRA = 4;
const HTTP = 5;
const HTTP_ERRORS = 6;
const FAIL_VERDICTS = 7;

type PerNode = [name: string, help: string, get: (n: NodeSession, now: number) => number | undefined];

export class Metrics {
  readonly startedAt: number;
  /** This coordinator's registry: `GET /metrics` answers `registry.metrics()`. */
  readonly registry = new Registry();
  #source: MetricsSource | null = null;

  readonly #submitted: Counter<'kind'>;
  readonly #completed: Counter<'kind'>;
  readonly #failed: Counter<'kind' | 'code'>;
  readonly #deadLettered: Counter<'kind'>;
  readonly #cancelled: Counter;
  readonly #attemptErrors: Counter<'code' | 'infra'>;
  readonly #attemptsEnded: Counter;
  readonly #verdicts: Counter<'verdict'>;
  readonly #http: Counter<'class'>;
  readonly #httpServerErrors: Counter;
  readonly #modelFiles: Counter<'model'>;
  readonly #disconnects: Counter<'reason'>;
  readonly #rejected: Counter;
  readonly #dispatch: Histogram;
  readonly #taskLatency: Histogram<'kind'>;
  readonly #spawn: Histogram;
  readonly #ttft: Histogram<'model'>;
  readonly #tokensPerSecond: Histogram<'model'>;
  readonly #models = new Set<string>();

  readonly #window = new SecondRing(KPI_WINDOW_S, 8);
  readonly #latencyMs = new Float64Array(RECENT);
  readonly #latencyAt = new Float64Array(RECENT).fill(-Infinity);
  #latencyN = 0;
  #lastKpis: { at: number; kpis: Record<KpiName, Kpi> } | null = null;

  constructor(now: number) {
    this.startedAt = now;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // Gauges whose `_total` suffix promtool flags; each is the sum of its labelled twin (nodejs_active_handles{type}, …).
    for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) this.registry.removeSingleMetric(name);

    this.#submitted = new Counter({ name: 'coordinator_tasks_submitted_total', help: 'Tasks accepted by POST /v1/tasks, by kind.', labelNames: ['kind'], registers });
    this.#completed = new Counter({ name: 'coordinator_tasks_completed_total', help: 'Tasks that ended succeeded, by kind.', labelNames: ['kind'], registers });
    this.#failed = new Counter({ name: 'coordinator_tasks_failed_total', help: 'Tasks that ended failed or dead, by kind and last error code.', labelNames: ['kind', 'code'], registers });
    this.#deadLettered = new Counter({ name: 'coordinator_tasks_dead_lettered_total', help: 'Tasks that went to the dead-letter state (attempts spent on retryable errors).', labelNames: ['kind'], registers });
    this.#cancelled = new Counter({ name: 'coordinator_tasks_cancelled_total', help: 'Tasks cancelled.', registers });
    this.#attemptErrors = new Counter({
      name: 'coordinator_task_attempt_errors_total',
      help: 'Attempts that ended in an error, by code; infra="true" for infrastructure codes (the error-rate KPI).',
      labelNames: ['code', 'infra'],
      registers,
    });
    this.#attemptsEnded = new Counter({ name: 'coordinator_task_attempts_ended_total', help: 'Attempts that ended, in any way (the error-rate denominator).', registers });
    this.#verdicts = new Counter({ name: 'coordinator_verdicts_total', help: 'Layer 3 verdicts posted on results.', labelNames: ['verdict'], registers });
    this.#http = new Counter({ name: 'coordinator_http_requests_total', help: 'HTTP requests answered, by status class.', labelNames: ['class'], registers });
    this.#httpServerErrors = new Counter({ name: 'coordinator_http_server_errors_total', help: 'HTTP answers 5xx other than 503 (the availability KPI).', registers });
    this.#modelFiles = new Counter({ name: 'coordinator_model_file_requests_total', help: 'Model file requests answered (GET /models/), by model.', labelNames: ['model'], registers });
    this.#disconnects = new Counter({ name: 'coordinator_node_disconnects_total', help: 'Nodes lost: lost (socket closed without a drain) or drained.', labelNames: ['reason'], registers });
    this.#rejected = new Counter({ name: 'coordinator_node_metrics_rejected_total', help: 'Node-reported values refused: not finite, negative, or over their bound.', registers });
    for (const kind of TASK_KINDS) {
      this.#submitted.inc({ kind }, 0);
      this.#completed.inc({ kind }, 0);
      this.#deadLettered.inc({ kind }, 0);
    }
    for (const verdict of ['pass', 'fail']) this.#verdicts.inc({ verdict }, 0);
    for (const reason of ['lost', 'drained']) this.#disconnects.inc({ reason }, 0);
    this.#httpServerErrors.inc(0);
    this.#cancelled.inc(0);
    this.#attemptsEnded.inc(0);
    this.#rejected.inc(0);

    this.#dispatch = new Histogram({ name: 'coordinator_dispatch_latency_seconds', help: 'From a task being ready (accepted, or its backoff over) to its assignment to a node.', buckets: DISPATCH_BUCKETS_S, registers });
    this.#taskLatency = new Histogram({ name: 'coordinator_task_latency_seconds', help: 'From submit to the final result, by kind.', labelNames: ['kind'], buckets: TASK_LATENCY_BUCKETS_S, registers });
    this.#spawn = new Histogram({ name: 'coordinator_agent_spawn_seconds', help: 'Agent spawn time as nodes report it per agent task.', buckets: SPAWN_BUCKETS_S, registers });
    this.#ttft = new Histogram({ name: 'coordinator_time_to_first_token_seconds', help: 'Time to the first token of generate tasks, by model.', labelNames: ['model'], buckets: TTFT_BUCKETS_S, registers });
    this.#tokensPerSecond = new Histogram({ name: 'coordinator_generation_tokens_per_second', help: 'Decode speed of generate tasks, by model.', labelNames: ['model'], buckets: TOKENS_PER_SECOND_BUCKETS, registers });

    this.#scrapeTimeSeries(registers);
  }

  /** Gives the scrape what it reads from the coordinator's parts (journal, nodes, webhooks, maintenance). */
  attach(source: MetricsSource): void {
    this.#source = source;
  }

  /**
   * Prometheus text of the registry, and its content type. prom-client writes a NaN sample as `Nan`; the text
   * format's spelling is `NaN` (a scrape right after start has one: the event-loop lag before its first sample).
   */
  async scrape(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: (await this.registry.metrics()).replace(/ Nan$/gm, ' NaN') };
  }

  /** The value of one series of a counter or gauge (0 when absent): for tests and the bench, read from the registry. */
  async value(name: string, labels: Record<string, string> = {}): Promise<number> {
    const metric = this.registry.getSingleMetric(name);
    if (!metric) return 0;
    const got = await metric.get();
    const match = got.values.find((v) => Object.entries(labels).every(([k, want]) => String((v.labels as Record<string, unknown>)[k]) === want));
    return match?.value ?? 0;
  }

  submittedTasks(kind: TaskKind, n: number): void {
    this.#submitted.inc({ kind }, n);
  }

  /** One attempt ended (a task result, a lease expiry, a deadline). */
  ended(e: Ended, now: number): void {
    this.#attemptsEnded.inc();
    this.#window.add(ATTEMPTS, now);
    if (e.errorCode) {
      const infra = INFRA_CODES.has(e.errorCode);
      this.#attemptErrors.inc({ code: codeLabel(e.errorCode), infra: infra ? 'true' : 'false' });
      if (infra) this.#window.add(INFRA, now);
    }
    if (e.state === 'queued' || e.state === 'leased') return;
    if (e.state === 'succeeded') {
      this.#completed.inc({ kind: e.kind });
      this.#window.add(SUCCEEDED, now);
    } else if (e.state === 'cancelled') {
      this.#cancelled.inc();
    } else {
      this.#failed.inc({ kind: e.kind, code: codeLabel(e.errorCode ?? 'INTERNAL') });
      if (e.state === 'dead') this.#deadLettered.inc({ kind: e.kind });
      this.#window.add(FAILED, now);
    }
    const latencyMs = Math.max(0, now - e.createdAt);
    this.#taskLatency.observe({ kind: e.kind }, latencyMs / 1000);
    const i = this.#latencyN++ % RECENT;
    this.#latencyMs[i] = latencyMs;
    this.#latencyAt[i] = now;
    this.#window.add(FINISHED, now);
  }

  /** A task was assigned to a node `seconds` after it became ready. */
  dispatched(seconds: number): void {
    this.#dispatch.observe(Math.max(0, seconds));
  }

  /** A successful result journaled: the timings the node reported in it (bounded like its heartbeat figures). */
  resultReported(kind: TaskKind, model: string | null, result: unknown): void {
    if (result === null || typeof result !== 'object') return;
    const r = result as Record<string, unknown>;
    if (kind === 'agent') {
      const spawn = this.#bounded(r.spawnMs, RESULT_METRIC_BOUNDS.spawnMs);
      if (spawn !== undefined) this.#spawn.observe(spawn / 1000);
    } else if (kind === 'generate') {
      const labels = { model: this.#modelLabel(model) };
      const ttft = this.#bounded(r.ttftMs, RESULT_METRIC_BOUNDS.ttftMs);
      if (ttft !== undefined) this.#ttft.observe(labels, ttft / 1000);
      const tps = this.#bounded(r.tokensPerSec, RESULT_METRIC_BOUNDS.tokensPerSec);
      if (tps !== undefined) this.#tokensPerSecond.observe(labels, tps);
    }
  }

  /**
   * A node's heartbeat figures, bounded: each value that is not a finite number from 0 to its
   * NODE_METRIC_BOUNDS entry is dropped and counted in coordinator_node_metrics_rejected_total.
   */
  nodeReported(m: NodeMetrics): Partial<NodeMetrics> {
    const out: Partial<Record<keyof typeof NODE_METRIC_BOUNDS, number>> = {};
    const given = m as Partial<Record<keyof typeof NODE_METRIC_BOUNDS, unknown>>;
    for (const key of Object.keys(NODE_METRIC_BOUNDS) as Array<keyof typeof NODE_METRIC_BOUNDS>) {
      if (given[key] === undefined) continue;
      const v = this.#bounded(given[key], NODE_METRIC_BOUNDS[key]);
      if (v !== undefined) out[key] = v;
    }
    return out;
  }

  /** A node's socket closed: `drained` when it was draining, else `lost`. */
  nodeDisconnected(reason: 'lost' | 'drained'): void {
    this.#disconnects.inc({ reason });
  }

  /** A verdict posted: `previous` is the one it replaces (the success KPI counts each task's latest). */
  verdict(previous: 'pass' | 'fail' | null, verdict: 'pass' | 'fail', now: number): void {
    this.#verdicts.inc({ verdict });
    if (previous === 'fail') this.#window.add(FAIL_VERDICTS, now, -1);
    if (verdict === 'fail') this.#window.add(FAIL_VERDICTS, now);
  }

  httpAnswered(status: number, now = this.#now()): void {
    this.#http.inc({ class: `${Math.floor(status / 100)}xx` });
    this.#window.add(HTTP, now);
    if (status >= 500 && status !== 503) {
      this.#httpServerErrors.inc();
      this.#window.add(HTTP_ERRORS, now);
    }
  }

  modelFileServed(model: string): void {
    this.#modelFiles.inc({ model: this.#modelLabel(model) });
  }

  /**
   * Every KPI of the seed against its target, over the last KPI_WINDOW_S seconds (utilisation,
   * agent spawn and memory per agent: as the connected nodes stand now).
   */
  kpis(now: number): Record<KpiName, Kpi> {
    const w = this.#window;
    const succeeded = w.sum(SUCCEEDED, now);
    const finished = succeeded + w.sum(FAILED, now);
    const failVerdicts = Math.max(0, w.sum(FAIL_VERDICTS, now));
    const success = finished ? (succeeded - Math.min(failVerdicts, succeeded)) / finished : null;
    const attempts = w.sum(ATTEMPTS, now);
    const errorRate = attempts ? w.sum(INFRA, now) / attempts : null;
    const http = w.sum(HTTP, now);
    const availability = http ? 1 - w.sum(HTTP_ERRORS, now) / http : null;
    const uptimeS = (now - this.startedAt) / 1000;
    const ended = w.sum(FINISHED, now);
    // Tasks ended per minute over the part of the window the coordinator has been up (at least a minute).
    const throughput = uptimeS >= 60 || ended > 0 ? (ended * 60) / Math.max(60, Math.min(KPI_WINDOW_S, uptimeS)) : null;
    const p50 = this.#latencyP50Ms(now);

    let spawn: number | null = null;
    let memory: number | null = null;
    let leases = 0;
    let capacity = 0;
    for (const n of this.#connected()) {
      const m = n.metrics;
      if (m?.spawnP50Ms !== undefined) spawn = Math.max(spawn ?? 0, m.spawnP50Ms);
      if (m?.agentMemoryBytes !== undefined) memory = Math.max(memory ?? 0, m.agentMemoryBytes);
      leases += n.leases.size;
      capacity += n.capabilities.maxConcurrent;
    }
    const utilisation = capacity > 0 ? leases / capacity : null;
    const queued = this.#source && this.#source.journal.db.open ? this.#source.journal.countsByState().queued : 0;

    const kpi = (value: number | null, target: string, unit: string, ok: (v: number) => boolean): Kpi => ({ value, target, unit, pass: value === null ? null : ok(value) });
    const kpis: Record<KpiName, Kpi> = {
      successRate: kpi(success, '> 0.95', 'ratio', (v) => v > 0.95),
      errorRate: kpi(errorRate, '< 0.01', 'ratio', (v) => v < 0.01),
      throughput: kpi(throughput, '>= 1000', 'tasks/min', (v) => v >= 1000),
      latencyP50: kpi(p50, '< 100', 'ms', (v) => v < 100),
      availability: kpi(availability, '> 0.999', 'ratio', (v) => v > 0.999),
      agentSpawn: kpi(spawn, '< 50', 'ms', (v) => v < 50),
      memoryPerAgent: kpi(memory, '< 67108864', 'bytes', (v) => v < 64 * MIB),
      // Idle nodes with nothing queued are not a miss: the target applies while tasks wait.
      utilisation: kpi(utilisation, '> 0.5 while tasks are queued', 'ratio', (v) => v > 0.5 || queued === 0),
    };
    this.#lastKpis = { at: now, kpis };
    return kpis;
  }

  #latencyP50Ms(now: number): number | null {
    const xs = this.recent(now, KPI_WINDOW_S).latenciesMs;
    return xs.length === 0 ? null : xs[Math.floor((xs.length - 1) / 2)]!;
  }

  /**
   * Tasks that ended (any final state) in the last `seconds` (at most KPI_WINDOW_S), and the latencies of
   * the newest of them (submit → end, ms; at most the last RECENT), ascending: for the KPIs and the
   * operator page's history.
   */
  recent(now: number, seconds: number): { ended: number; latenciesMs: number[] } {
    const n = Math.min(this.#latencyN, RECENT);
    const since = now - Math.min(seconds, KPI_WINDOW_S) * 1000;
    const xs: number[] = [];
    for (let i = 0; i < n; i++) if (this.#latencyAt[i]! > since) xs.push(this.#latencyMs[i]!);
    xs.sort((a, b) => a - b);
    return { ended: this.#window.sum(FINISHED, now, seconds), latenciesMs: xs };
  }

  #bounded(v: unknown, max: number): number | undefined {
    if (v === undefined) return undefined;
    if (typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= max) return v;
    this.#rejected.inc();
    return undefined;
  }

  #modelLabel(model: string | null): string {
    if (model === null || model === '') return 'none';
    if (this.#models.has(model)) return model;
    if (this.#models.size >= MAX_MODEL_LABELS) return 'other';
    this.#models.add(model);
    return model;
  }

  #connected(): NodeSession[] {
    if (!this.#source) return [];
    const out: NodeSession[] = [];
    for (const n of this.#source.nodes()) if (n.connected) out.push(n);
    return out;
  }

  #now(): number {
    return this.#source ? this.#source.clock.now() : Date.now();
  }

  /** Gauges and mirrored counters read when Prometheus scrapes. */
  #scrapeTimeSeries(registers: Registry[]): void {
    // Arrow functions keep this object in reach from inside collect(), where `this` is the metric.
    const src = (): MetricsSource | null => this.#source;
    const clockNow = (): number => this.#now();
    const connected = (): NodeSession[] => this.#connected();
    const kpisAt = (t: number): Record<KpiName, Kpi> => this.kpis(t);
    const lastKpis = (): { at: number; kpis: Record<KpiName, Kpi> } | null => this.#lastKpis;
    const startedAt = this.startedAt;
    const states: readonly TaskState[] = ['queued', 'leased', 'succeeded', 'failed', 'dead', 'cancelled'];
    new Gauge({
      name: 'coordinator_tasks',
      help: 'Tasks in the journal by state.',
      labelNames: ['state'],
      registers,
      collect() {
        const source = src();
        if (!source || !source.journal.db.open) return;
        const counts = source.journal.countsByState();
        for (const state of states) this.set({ state }, counts[state]);
      },
    });
    new Gauge({
      name: 'coordinator_tasks_queued',
      help: 'Queued tasks by priority (0-9).',
      labelNames: ['priority'],
      registers,
      collect() {
        const source = src();
        if (!source || !source.journal.db.open) return;
        const by = new Map(source.journal.queuedByPriority().map((r) => [r.priority, r.n]));
        for (let p = 0; p <= 9; p++) this.set({ priority: String(p) }, by.get(p) ?? 0);
      },
    });
    new Counter({
      name: 'coordinator_duplicate_results_total',
      help: 'Late results from a lease that was no longer current, dropped.',
      registers,
      collect() {
        this.reset();
        this.inc(src()?.journal.duplicatesDropped ?? 0);
      },
    });
    new Counter({
      name: 'coordinator_trace_spans_dropped_total',
      help: 'Spans not exported: node_invalid (a node sent spans out of bounds), export_backlog (the OTLP queue was full).',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        const t = src()?.tracing;
        if (!t) return;
        this.inc({ reason: 'node_invalid' }, t.droppedNodeSpans);
        this.inc({ reason: 'export_backlog' }, t.droppedSpans);
      },
    });
    new Counter({
      name: 'coordinator_webhooks_total',
      help: 'Webhook deliveries by outcome.',
      labelNames: ['outcome'],
      registers,
      collect() {
        this.reset();
        this.inc({ outcome: 'delivered' }, src()?.webhooks.delivered ?? 0);
        this.inc({ outcome: 'failed' }, src()?.webhooks.failed ?? 0);
      },
    });
    new Gauge({
      name: 'coordinator_nodes',
      help: 'Nodes by condition (connected, healthy, circuit_open, draining, excluded).',
      labelNames: ['condition'],
      registers,
      collect() {
        const now = clockNow();
        const beat = src()?.heartbeatIntervalMs ?? 0;
        const nodes = connected();
        this.set({ condition: 'connected' }, nodes.length);
        this.set({ condition: 'healthy' }, nodes.filter((n) => n.healthy(now, beat)).length);
        this.set({ condition: 'circuit_open' }, nodes.filter((n) => n.circuit.state(now) !== 'closed').length);
        this.set({ condition: 'draining' }, nodes.filter((n) => n.draining).length);
        this.set({ condition: 'excluded' }, nodes.filter((n) => n.reputation.excluded).length);
      },
    });
    new Gauge({
      name: 'coordinator_maintenance',
      help: '1 while an operator has set maintenance mode (PUT /v1/maintenance): alerts are silenced.',
      registers,
      collect() {
        this.set(src()?.maintenance.on ? 1 : 0);
      },
    });
    new Gauge({
      name: 'coordinator_uptime_seconds',
      help: 'Seconds since the coordinator started.',
      registers,
      collect() {
        this.set((clockNow() - startedAt) / 1000);
      },
    });
    new Gauge({
      name: 'coordinator_kpi_value',
      help: `Each KPI in its base unit over the last ${KPI_WINDOW_S} s, as /v1/kpis (absent without data).`,
      labelNames: ['kpi'],
      registers,
      collect() {
        this.reset();
        const kpis = kpisAt(clockNow());
        for (const [name, k] of Object.entries(kpis) as Array<[KpiName, Kpi]>) {
          if (k.value !== null) this.set({ kpi: KPI_LABELS[name].label }, k.value * KPI_LABELS[name].scale);
        }
      },
    });
    new Gauge({
      name: 'coordinator_kpi_pass',
      help: '1 when the KPI meets its target, 0 when it misses (absent without data).',
      labelNames: ['kpi'],
      registers,
      collect() {
        this.reset();
        const now = clockNow();
        const last = lastKpis();
        const kpis = last && now - last.at < 1000 ? last.kpis : kpisAt(now);
        for (const [name, k] of Object.entries(kpis) as Array<[KpiName, Kpi]>) {
          if (k.pass !== null) this.set({ kpi: KPI_LABELS[name].label }, k.pass ? 1 : 0);
        }
      },
    });

    const perNode: PerNode[] = [
      ['coordinator_node_leases', 'Leases a node holds (running or queued on the node).', (n) => n.leases.size],
      ['coordinator_node_workers', 'Workers a node reports.', (n) => n.metrics?.workers],
      ['coordinator_node_max_concurrent', 'Tasks a node runs at once (its advertised maxConcurrent).', (n) => n.capabilities.maxConcurrent],
      ['coordinator_node_queue_depth', 'Agent tasks a node may hold queued beyond its maxConcurrent.', (n) => n.queueDepth(src()?.prefetch ?? 1)],
      ['coordinator_node_utilisation', 'Leases held divided by maxConcurrent (above 1 while tasks wait queued on the node).', (n) => n.leases.size / n.capabilities.maxConcurrent],
      ['coordinator_node_agent_spawn_p50_seconds', 'Agent spawn time the node reports, median.', (n) => seconds(n.metrics?.spawnP50Ms)],
      ['coordinator_node_agent_spawn_p99_seconds', 'Agent spawn time the node reports, 99th percentile.', (n) => seconds(n.metrics?.spawnP99Ms)],
      ['coordinator_node_memory_bytes', 'Memory the node reports (its page heap).', (n) => n.metrics?.memoryBytes],
      ['coordinator_node_agent_memory_bytes', 'Memory per agent run the node reports (median linear memory of its recent runs).', (n) => n.metrics?.agentMemoryBytes],
      ['coordinator_node_gpu_memory_bytes', 'GPU memory the node reports.', (n) => n.metrics?.gpuMemoryBytes],
      ['coordinator_node_tokens_per_second', 'Generation speed the node reports.', (n) => n.metrics?.tokensPerSec],
      ['coordinator_node_reputation', 'Reputation score 0-1 from quorums and verdicts; below the threshold the node gets no new work.', (n) => n.reputation.score],
      ['coordinator_node_excluded', '1 when the node is excluded from new work by its reputation.', (n) => (n.reputation.excluded ? 1 : 0)],
      ['coordinator_node_circuit_open', '1 while the node circuit is open or half-open.', (n, now) => (n.circuit.state(now) !== 'closed' ? 1 : 0)],
      ['coordinator_node_healthy', '1 while the node heartbeats on time.', (n, now) => (n.healthy(now, src()?.heartbeatIntervalMs ?? 0) ? 1 : 0)],
      ['coordinator_node_draining', '1 while the node drains.', (n) => (n.draining ? 1 : 0)],
    ];
    for (const [name, help, get] of perNode) {
      new Gauge({
        name,
        help,
        labelNames: ['node', 'node_name'],
        registers,
        collect() {
          this.reset();
          const now = clockNow();
          for (const n of connected()) {
            const v = get(n, now);
            if (v !== undefined && Number.isFinite(v)) this.set({ node: n.id, node_name: n.name }, v);
          }
        },
      });
    }
    const nodeCounters: Array<[string, string, (m: Partial<NodeMetrics>) => number | undefined]> = [
      ['coordinator_node_tasks_done_total', 'Tasks a node reports done (its own count, since it started).', (m) => m.tasksDone],
      ['coordinator_node_tasks_failed_total', 'Tasks a node reports failed (its own count, since it started).', (m) => m.tasksFailed],
    ];
    for (const [name, help, get] of nodeCounters) {
      new Counter({
        name,
        help,
        labelNames: ['node', 'node_name'],
        registers,
        collect() {
          this.reset();
          for (const n of connected()) {
            const v = n.metrics ? get(n.metrics) : undefined;
            if (v !== undefined) this.inc({ node: n.id, node_name: n.name }, v);
          }
        },
      });
    }
  }
}

function seconds(ms: number | undefined): number | undefined {
  return ms === undefined ? undefined : ms / 1000;
}

/** Error codes as label values: the known ones, `OTHER` for a code a node made up (bounded cardinality). */
function codeLabel(code: string): string {
  return Object.hasOwn(ERRORS, code) ? code : 'OTHER';
}
