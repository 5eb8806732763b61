/**
 * Counters the coordinator keeps in memory, rendered as Prometheus text and as
 * the KPI summary that Layer 5 reads (each KPI with value, target and pass).
 */
import type { TaskKind, TaskState } from '../shared';
import type { Ended } from './journal';
import { INFRA_CODES, type NodeSession } from './node';

const LATENCY_BUCKETS_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const RECENT = 8192;
const WINDOW_S = 60;

export interface Kpi {
  value: number | null;
  target: string;
  unit: string;
  /** null when there is no data yet. */
  pass: boolean | null;
}

export class Metrics {
  readonly startedAt: number;
  readonly submitted = new Map<TaskKind, number>();
  readonly succeeded = new Map<TaskKind, number>();
  /** Tasks that ended failed or dead, by kind and error code. */
  readonly failed = new Map<string, number>();
  /** Every attempt that ended in an error, by code. */
  readonly attemptErrors = new Map<string, number>();
  attemptsEnded = 0;
  infraErrors = 0;
  cancelled = 0;
  verdicts = { pass: 0, fail: 0 };
  http = { total: 0, serverErrors: 0, byClass: new Map<string, number>() };
  /** Model file requests served to nodes (GET /models/…), by model: a node with a warm store sends none. */
  readonly modelFileRequests = new Map<string, number>();
  readonly #buckets = new Array<number>(LATENCY_BUCKETS_S.length).fill(0);
  #latencySum = 0;
  #latencyCount = 0;
  readonly #recent = new Float64Array(RECENT);
  #recentN = 0;
  readonly #perSecond = new Int32Array(WINDOW_S);
  readonly #secondOf = new Float64Array(WINDOW_S).fill(-1);

  constructor(now: number) {
    this.startedAt = now;
  }

  submittedTasks(kind: TaskKind, n: number): void {
    this.submitted.set(kind, (this.submitted.get(kind) ?? 0) + n);
  }

  /** One attempt ended (a task result, a lease expiry, a deadline). */
  ended(e: Ended, now: number): void {
    this.attemptsEnded++;
    if (e.errorCode) {
      this.attemptErrors.set(e.errorCode, (this.attemptErrors.get(e.errorCode) ?? 0) + 1);
      if (INFRA_CODES.has(e.errorCode)) this.infraErrors++;
    }
    if (e.state === 'queued' || e.state === 'leased') return;
    if (e.state === 'succeeded') this.succeeded.set(e.kind, (this.succeeded.get(e.kind) ?? 0) + 1);
    else if (e.state === 'cancelled') this.cancelled++;
    else {
      const key = `${e.kind}\u0000${e.errorCode ?? 'INTERNAL'}`;
      this.failed.set(key, (this.failed.get(key) ?? 0) + 1);
    }
    const latencyMs = Math.max(0, now - e.createdAt);
    const s = latencyMs / 1000;
    for (let i = 0; i < LATENCY_BUCKETS_S.length; i++) if (s <= LATENCY_BUCKETS_S[i]!) this.#buckets[i]!++;
    this.#latencySum += s;
    this.#latencyCount++;
    this.#recent[this.#recentN++ % RECENT] = latencyMs;
    const sec = Math.floor(now / 1000);
    const slot = sec % WINDOW_S;
    if (this.#secondOf[slot] !== sec) {
      this.#secondOf[slot] = sec;
      this.#perSecond[slot] = 0;
    }
    this.#perSecond[slot]!++;
  }

  httpAnswered(status: number): void {
    this.http.total++;
    if (status >= 500 && status !== 503) this.http.serverErrors++;
    const cls = `${Math.floor(status / 100)}xx`;
    this.http.byClass.set(cls, (this.http.byClass.get(cls) ?? 0) + 1);
  }

  modelFileServed(model: string): void {
    this.modelFileRequests.set(model, (this.modelFileRequests.get(model) ?? 0) + 1);
  }

  /** Tasks that ended in the last minute. */
  perMinute(now: number): number {
    const sec = Math.floor(now / 1000);
    let n = 0;
    for (let i = 0; i < WINDOW_S; i++) if (sec - this.#secondOf[i]! < WINDOW_S) n += this.#perSecond[i]!;
    return n;
  }

  latencyP50Ms(): number | null {
    const n = Math.min(this.#recentN, RECENT);
    if (n === 0) return null;
    const sorted = Float64Array.from(this.#recent.subarray(0, n)).sort();
    return sorted[Math.floor((n - 1) / 2)]!;
  }

  kpis(now: number, nodes: readonly NodeSession[]): Record<string, Kpi> {
    let succeeded = 0;
    for (const v of this.succeeded.values()) succeeded += v;
    let failed = 0;
    for (const v of this.failed.values()) failed += v;
    const finished = succeeded + failed;
    const success = finished ? (succeeded - Math.min(this.verdicts.fail, succeeded)) / finished : null;
    const errorRate = this.attemptsEnded ? this.infraErrors / this.attemptsEnded : null;
    const uptimeMin = (now - this.startedAt) / 60_000;
    const perMinute = this.perMinute(now);
    const p50 = this.latencyP50Ms();
    const availability = this.http.total ? 1 - this.http.serverErrors / this.http.total : null;
    const spawns = nodes.map((n) => n.metrics?.spawnP50Ms).filter((v): v is number => typeof v === 'number');
    const spawn = spawns.length ? Math.max(...spawns) : null;
    const kpi = (value: number | null, target: string, unit: string, ok: (v: number) => boolean): Kpi => ({
      value,
      target,
      unit,
      pass: value === null ? null : ok(value),
    });
    return {
      successRate: kpi(success, '> 0.95', 'ratio', (v) => v > 0.95),
      errorRate: kpi(errorRate, '< 0.01', 'ratio', (v) => v < 0.01),
      throughput: kpi(uptimeMin >= 1 || perMinute > 0 ? perMinute : null, '>= 1000', 'tasks/min', (v) => v >= 1000),
      latencyP50: kpi(p50, '< 100', 'ms', (v) => v < 100),
      availability: kpi(availability, '> 0.999', 'ratio', (v) => v > 0.999),
      agentSpawn: kpi(spawn, '< 50', 'ms', (v) => v < 50),
    };
  }

  /** Prometheus text exposition (version 0.0.4). */
  render(now: number, counts: Record<TaskState, number>, nodes: readonly NodeSession[], extra: { duplicates: number; webhooksDelivered: number; webhooksFailed: number; heartbeatIntervalMs: number; prefetch: number }): string {
    const out: string[] = [];
    const metric = (name: string, type: 'counter' | 'gauge' | 'histogram', help: string) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    };
    metric('coordinator_tasks_submitted_total', 'counter', 'Tasks accepted by POST /v1/tasks.');
    for (const [kind, n] of this.submitted) out.push(`coordinator_tasks_submitted_total{kind="${kind}"} ${n}`);
    metric('coordinator_tasks_completed_total', 'counter', 'Tasks that ended succeeded.');
    for (const [kind, n] of this.succeeded) out.push(`coordinator_tasks_completed_total{kind="${kind}"} ${n}`);
    metric('coordinator_tasks_failed_total', 'counter', 'Tasks that ended failed or dead, by the last error code.');
    for (const [key, n] of this.failed) {
      const [kind, code] = key.split('\u0000');
      out.push(`coordinator_tasks_failed_total{kind="${kind}",code="${code}"} ${n}`);
    }
    metric('coordinator_task_attempt_errors_total', 'counter', 'Attempts that ended in an error, by code.');
    for (const [code, n] of this.attemptErrors) out.push(`coordinator_task_attempt_errors_total{code="${code}"} ${n}`);
    metric('coordinator_tasks_cancelled_total', 'counter', 'Tasks cancelled.');
    out.push(`coordinator_tasks_cancelled_total ${this.cancelled}`);
    metric('coordinator_duplicate_results_total', 'counter', 'Late results from a lease that was no longer current, dropped.');
    out.push(`coordinator_duplicate_results_total ${extra.duplicates}`);
    metric('coordinator_queue_depth', 'gauge', 'Tasks in the journal by state.');
    for (const [state, n] of Object.entries(counts)) out.push(`coordinator_queue_depth{state="${state}"} ${n}`);
    metric('coordinator_task_latency_seconds', 'histogram', 'Time from submit to the final result.');
    LATENCY_BUCKETS_S.forEach((le, i) => out.push(`coordinator_task_latency_seconds_bucket{le="${le}"} ${this.#buckets[i]}`));
    out.push(`coordinator_task_latency_seconds_bucket{le="+Inf"} ${this.#latencyCount}`);
    out.push(`coordinator_task_latency_seconds_sum ${this.#latencySum}`);
    out.push(`coordinator_task_latency_seconds_count ${this.#latencyCount}`);
    metric('coordinator_verdicts_total', 'counter', 'Layer 3 verdicts on results.');
    out.push(`coordinator_verdicts_total{verdict="pass"} ${this.verdicts.pass}`, `coordinator_verdicts_total{verdict="fail"} ${this.verdicts.fail}`);
    metric('coordinator_http_responses_total', 'counter', 'HTTP answers by status class.');
    for (const [cls, n] of this.http.byClass) out.push(`coordinator_http_responses_total{class="${cls}"} ${n}`);
    metric('coordinator_model_file_requests_total', 'counter', 'Model file requests answered (GET /models/), by model.');
    for (const [model, n] of this.modelFileRequests) out.push(`coordinator_model_file_requests_total{model="${model}"} ${n}`);
    metric('coordinator_webhooks_total', 'counter', 'Webhook deliveries by outcome.');
    out.push(`coordinator_webhooks_total{outcome="delivered"} ${extra.webhooksDelivered}`, `coordinator_webhooks_total{outcome="failed"} ${extra.webhooksFailed}`);

    const connected = nodes.filter((n) => n.connected);
    metric('coordinator_nodes', 'gauge', 'Nodes by condition.');
    out.push(`coordinator_nodes{condition="connected"} ${connected.length}`);
    out.push(`coordinator_nodes{condition="healthy"} ${connected.filter((n) => n.healthy(now, extra.heartbeatIntervalMs)).length}`);
    out.push(`coordinator_nodes{condition="circuit_open"} ${connected.filter((n) => n.circuit.state(now) !== 'closed').length}`);

    const perNode: Array<[string, string, string, (n: NodeSession) => number | undefined]> = [
      ['coordinator_node_running', 'gauge', 'Leases a node holds (running or queued on the node).', (n) => n.leases.size],
      ['coordinator_node_workers', 'gauge', 'Workers a node reports.', (n) => n.metrics?.workers],
      ['coordinator_node_max_concurrent', 'gauge', 'Tasks a node runs at once (its advertised maxConcurrent).', (n) => n.capabilities.maxConcurrent],
      ['coordinator_node_queue_depth', 'gauge', 'Agent tasks a node may hold queued beyond its maxConcurrent.', (n) => n.queueDepth(extra.prefetch)],
      ['coordinator_node_tasks_done', 'gauge', 'Tasks a node reports done.', (n) => n.metrics?.tasksDone],
      ['coordinator_node_tasks_failed', 'gauge', 'Tasks a node reports failed.', (n) => n.metrics?.tasksFailed],
      ['coordinator_node_spawn_p50_ms', 'gauge', 'Agent spawn time, median, reported by the node.', (n) => n.metrics?.spawnP50Ms],
      ['coordinator_node_spawn_p99_ms', 'gauge', 'Agent spawn time, 99th percentile.', (n) => n.metrics?.spawnP99Ms],
      ['coordinator_node_memory_bytes', 'gauge', 'Memory the node reports.', (n) => n.metrics?.memoryBytes],
      ['coordinator_node_gpu_memory_bytes', 'gauge', 'GPU memory the node reports.', (n) => n.metrics?.gpuMemoryBytes],
      ['coordinator_node_tokens_per_second', 'gauge', 'Generation speed the node reports.', (n) => n.metrics?.tokensPerSec],
      ['coordinator_node_reputation', 'gauge', 'Reputation score 0–1 from quorums and verdicts; below the threshold the node gets no new work.', (n) => n.reputation.score],
      ['coordinator_node_excluded', 'gauge', '1 when the node is excluded from new work by its reputation.', (n) => (n.reputation.excluded ? 1 : 0)],
    ];
    for (const [name, type, help, get] of perNode) {
      metric(name, type as 'gauge', help);
      for (const n of connected) {
        const v = get(n);
        if (typeof v === 'number' && Number.isFinite(v)) out.push(`${name}{node="${n.id}",name="${escapeLabel(n.name)}"} ${v}`);
      }
    }
    metric('coordinator_nodes_tasks_done_sum', 'gauge', 'Sum over connected nodes of the tasks they report done.');
    out.push(`coordinator_nodes_tasks_done_sum ${connected.reduce((s, n) => s + (n.metrics?.tasksDone ?? 0), 0)}`);
    metric('coordinator_uptime_seconds', 'gauge', 'Seconds since the coordinator started.');
    out.push(`coordinator_uptime_seconds ${(now - this.startedAt) / 1000}`);
    return out.join('\n') + '\n';
  }
}

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}
