/**
 * The browser node's connection: joins the coordinator over WebSocket, holds the
 * leases it is assigned, hands each to the runner for its kind (agents, generate)
 * and sends progress and results back (results in batches).
 *
 * Plain TypeScript with no DOM beyond WebSocket/fetch/sessionStorage (all
 * injectable), so Node tests drive it with the `ws` package and a real runtime.
 */
import {
  AppError,
  LIMITS,
  MAX_NODE_CONCURRENCY,
  MAX_QUEUE_DEPTH,
  PROTOCOL_VERSION,
  assertNever,
  parseNodeId,
  serializeError,
  type Assignment,
  type Capabilities,
  type CoordinatorMessage,
  type ErrorCode,
  type ErrorInfo,
  type NodeId,
  type NodeMessage,
  type NodeMetrics,
  type ProgressMessage,
  type ResultItem,
  type TaskId,
  type TaskKind,
} from '../../shared';
import type { AgentRuntime, AgentRuntimeStats } from '../../worker';
import type { InferenceRuntime, InferenceRuntimeStats } from '../../worker/inference';
import type { CheckpointStore } from './checkpoints';
import { AgentRunner } from './agent-runner';
import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff';
import type { ConnectionState, NodeEvent, NodeListener, RunningTask, TaskEntry, TrainingCurve } from './events';
import { GenerateRunner } from './generate-runner';
import { TrainRunner } from './train-runner';
import type { GpuProbe } from './gpu';
import type { FetchLike } from './modules';
import { ResultBatcher } from './result-batcher';
import type { Lease, RunnerHost, RunOutcome, TaskRunner } from './runner';
import { configureBlobs, setBlobBase } from './blobs';
import { coordinatorUrls } from './url';

/** The part of a WebSocket the client uses; the browser's and the `ws` package's both fit. */

/** Codes with which the coordinator refuses a node before closing its socket (1008). */
const REFUSALS: ReadonlySet<string> = new Set(['UNAUTHORIZED', 'FORBIDDEN', 'ORIGIN_NOT_ALLOWED']);
export interface SocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

type StorageLike = Pick<Storage, 'getItem' | 'setItem'>;

export interface NodeClientOptions {
  /** The coordinator: `http(s)://host:port` (or ws(s)://, or host:port). */
  url: string;
  /**
   * Other coordinators of the same pool (sharing its PostgreSQL journal): when the connection is lost the node
   * tries the next one (round the list), keeping its id and its leases; modules, datasets and blobs are then
   * fetched from the coordinator it is connected to.
   */
  alsoUrls?: string[];
  /** Runs agent tasks. */
  runtime: AgentRuntime;
  /** Runs generate tasks; without it the node takes agent tasks only. */
  inference?: InferenceRuntime;
  /** Shown in the coordinator's node list. */
  name?: string;
  /** Join token (a token with the `node` role) sent in hello when the coordinator runs with --auth; the page takes it from `?token=`. */
  token?: string;
  /**
   * Agent tasks the node asks the coordinator to lease it beyond those its workers
   * run (its advertised `queueDepth`), held in the node's own queue so every worker
   * stays busy while results and new assignments cross the socket.
   * Default: workers × (tasksPerWorker − 1). The node advertises `maxConcurrent` = workers.
   */
  queueDepth?: number;
  /**
   * Agent tasks held per worker, running plus queued (see queueDepth). Default 128:
   * the in-flight total nodes had when they advertised workers × 16 as maxConcurrent
   * and the coordinator prefetched 8 per slot (measured then, per-slot: 4 → 53k,
   * 8 → 77k, 16 → 96k tasks/min end to end).
   */
  tasksPerWorker?: number;
  /**
   * Remembers the last NodeId across reloads of the page (sessionStorage in the browser); null: none.
   * Only shown: resuming an id takes the secret its welcome carried, which the client keeps in memory
   * only, so a reloaded page joins as a new node.
   */
  storage?: StorageLike | null;
  createSocket?: (url: string) => SocketLike;
  fetch?: FetchLike;
  /** WebGPU found by `probeWebGpu`, or a function that finds it. */
  gpu?: GpuProbe | (() => Promise<GpuProbe>);
  backoff?: BackoffOptions;
  /** See ResultBatcher. */
  resultDelayMs?: number;
  /** Largest socket message sent (default LIMITS.maxSocketMessageBytes, the coordinator's cap). */
  maxMessageBytes?: number;
  /** How many finished tasks the page can list. */
  recentSize?: number;
  /** The node's own copy of its training checkpoints (the page: IndexedDB, web/node/checkpoints.ts); none: the coordinator's only. */
  checkpoints?: CheckpointStore | null;
  userAgent?: string;
}

/** A read-only snapshot for the page, the e2e tests and the benchmark. */
export interface NodeStats {
  state: ConnectionState;
  nodeId: NodeId | null;
  coordinator: string;
  connects: number;
  /** Leased tasks the node holds: running in a worker or waiting in the node's queue. */
  held: number;
  /** Running in a worker now. */
  running: number;
  /** Waiting for a worker. */
  queued: number;
  /** What the node advertises: tasks it runs at once (`maxConcurrent`, its workers) and holds beyond them (`queueDepth`). */
  capacity: { maxConcurrent: number; queueDepth: number };
  tasksDone: number;
  tasksFailed: number;
  /** Finished tasks by outcome code (`OK` or an error code). */
  byCode: Record<string, number>;
  resultBatches: number;
  resultsSent: number;
  moduleFetches: number;
  pool: AgentRuntimeStats;
  /** The inference runtime's figures, when the node runs generate tasks. */
  inference: InferenceRuntimeStats | null;
  /** Training checkpoints written to the node's store, and resumed from it or fetched (when the node trains). */
  checkpoints: { saved: number; fromStore: number; fetched: number } | null;
  lastError: ErrorInfo | null;
}

const NODE_ID_KEY = 'exec-node.nodeId';
/** See NodeClientOptions.tasksPerWorker. */
const DEFAULT_TASKS_PER_WORKER = 128;
const OPEN = 1;

export class NodeClient {
  readonly #runtime: AgentRuntime;
  readonly #inference: InferenceRuntime | null;
  readonly #agents: AgentRunner;
  readonly #generate: GenerateRunner | null;
  readonly #train: TrainRunner | null;
  readonly #runners: Partial<Record<TaskKind, TaskRunner>>;
  /** The coordinators it may join: `url` first, then `alsoUrls`. */
  readonly #all: Array<{ httpBase: string; wsUrl: string }>;
  #at = 0;
  readonly #name: string;
  readonly #token: string | undefined;
  /** Advertised: tasks the node runs at once (its workers) and holds queued beyond them. */
  readonly #maxConcurrent: number;
  readonly #queueDepth: number;
  readonly #storage: StorageLike | null;
  readonly #createSocket: (url: string) => SocketLike;
  readonly #gpuSource: GpuProbe | (() => Promise<GpuProbe>) | undefined;
  readonly #backoff: BackoffOptions;
  readonly #batcher: ResultBatcher;
  readonly #recent: TaskEntry[] = [];
  readonly #recentSize: number;
  readonly #userAgent: string | undefined;
  readonly #listeners = new Set<NodeListener>();
  readonly #leases = new Map<string, Lease>();
  readonly #byCode: Record<string, number> = {};
  readonly #encoder = new TextEncoder();
  readonly #maxMessageBytes: number;
  #capsTimer: ReturnType<typeof setTimeout> | null = null;

  #gpu: GpuProbe | null = null;
  #socket: SocketLike | null = null;
  #state: ConnectionState = 'idle';
  #nodeId: NodeId | null = null;
  /** The coordinator's resume secret for #nodeId, from welcome; in memory only (a reloaded page joins as a new node). */
  #secret: string | null = null;
  #attempt = 0;
  #connects = 0;
  #heartbeatTimer: ReturnType<typeof setInterval> | null = null;
  #reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  #draining = false;
  #closed = false;
  #tasksDone = 0;
  #tasksFailed = 0;
  #lastError: ErrorInfo | null = null;
  #recentNext = 0;

  constructor(opts: NodeClientOptions) {
    this.#runtime = opts.runtime;
    this.#inference = opts.inference ?? null;
    this.#all = [opts.url, ...(opts.alsoUrls ?? [])].map((u) => coordinatorUrls(u));
    this.#name = (opts.name ?? 'exec-node').slice(0, 128);
    this.#token = opts.token || undefined;
    // fetchBlob (web/node/blobs.ts) reads blobs from this coordinator with this node's token.
    configureBlobs({ baseUrl: this.#urls().httpBase, ...(this.#token ? { token: this.#token } : {}) });
    const host: RunnerHost = {
      finish: (lease, outcome) => this.#finish(lease, outcome),
      progress: (lease, progress) => this.#progress(lease, progress),
      part: (lease, part) => !lease.ended && this.#send({ type: 'task.part', taskId: lease.taskId, leaseId: lease.leaseId, ...part }),
      capabilitiesChanged: () => this.#capabilitiesChanged(),
    };
    this.#agents = new AgentRunner(opts.runtime, host, this.#urls().httpBase, opts.fetch, undefined, this.#inference);
    this.#generate = this.#inference ? new GenerateRunner(this.#inference, host) : null;
    const train = (this.#train = this.#inference?.trains && this.#inference.train
      ? new TrainRunner(this.#inference, host, { baseUrl: this.#urls().httpBase, maxMessageBytes: opts.maxMessageBytes ?? LIMITS.maxSocketMessageBytes, ...(this.#token ? { token: this.#token } : {}), checkpoints: opts.checkpoints ?? null })
      : null);
    this.#runners = { agent: this.#agents, ...(this.#generate ? { generate: this.#generate } : {}), ...(train ? { train } : {}) };
    this.#maxConcurrent = Math.min(MAX_NODE_CONCURRENCY, this.#agents.slots);
    const asked = opts.tasksPerWorker;
    const perWorker = asked !== undefined && Number.isFinite(asked) ? Math.max(1, Math.floor(asked)) : DEFAULT_TASKS_PER_WORKER;
    const depth = opts.queueDepth !== undefined && Number.isFinite(opts.queueDepth) ? opts.queueDepth : this.#maxConcurrent * (perWorker - 1);
    this.#queueDepth = Math.max(0, Math.min(MAX_QUEUE_DEPTH, Math.floor(depth)));
    this.#maxMessageBytes = opts.maxMessageBytes ?? LIMITS.maxSocketMessageBytes;
    this.#storage = opts.storage === undefined ? defaultStorage() : opts.storage;
    this.#createSocket = opts.createSocket ?? ((url) => new WebSocket(url) as unknown as SocketLike);
    this.#gpuSource = opts.gpu;
    this.#backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.#batcher = new ResultBatcher({ send: (items) => this.#sendResults(items), delayMs: opts.resultDelayMs });
    this.#recentSize = opts.recentSize ?? 50;
    this.#userAgent = opts.userAgent ?? globalThis.navigator?.userAgent;
    this.#nodeId = storedNodeId(this.#storage);
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** The coordinator it joins now. */
  #urls(): { httpBase: string; wsUrl: string } {
    return this.#all[this.#at]!;
  }

  /** Moves to the next coordinator of the list (the connection to this one failed). */
  #nextCoordinator(): void {
    if (this.#all.length < 2) return;
    this.#at = (this.#at + 1) % this.#all.length;
    const base = this.#urls().httpBase;
    this.#agents.setBase(base);
    this.#train?.setBase(base);
    setBlobBase(base);
  }

  get nodeId(): NodeId | null {
    return this.#nodeId;
  }

  get coordinator(): string {
    return this.#urls().httpBase;
  }

  get gpu(): GpuProbe | null {
    return this.#gpu;
  }

  /** Subscribes to events; returns the unsubscribe function. */
  on(listener: NodeListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Tasks held now (running or waiting for a worker), oldest first. */
  /** Loss curves of this node's training runs (in progress and the last few), newest first. */
  training(): readonly TrainingCurve[] {
    return this.#train?.curves() ?? [];
  }

  running(): RunningTask[] {
    const out: RunningTask[] = [];
    for (const l of this.#leases.values()) {
      out.push({ taskId: l.taskId, kind: l.kind, name: l.name, startedAt: l.startedAt, running: l.running });
    }
    return out;
  }

  /** The last finished tasks, newest first. */
  recent(): TaskEntry[] {
    const n = this.#recent.length;
    const out: TaskEntry[] = [];
    for (let i = 1; i <= n; i++) out.push(this.#recent[(this.#recentNext - i + n) % n]!);
    return out;
  }

  stats(): NodeStats {
    const counts = this.#batcher.counts;
    return {
      state: this.#state,
      nodeId: this.#nodeId,
      coordinator: this.#urls().httpBase,
      connects: this.#connects,
      held: this.#leases.size,
      running: this.#agents.running + (this.#generate?.running ?? 0),
      queued: this.#agents.waiting,
      capacity: { maxConcurrent: this.#maxConcurrent, queueDepth: this.#queueDepth },
      tasksDone: this.#tasksDone,
      tasksFailed: this.#tasksFailed,
      byCode: { ...this.#byCode },
      resultBatches: counts.batches,
      resultsSent: counts.results,
      moduleFetches: this.#agents.moduleFetches,
      pool: this.#runtime.stats(),
      inference: this.#inference?.stats() ?? null,
      checkpoints: this.#train?.checkpointCounts ?? null,
      lastError: this.#lastError,
    };
  }

  /** Probes WebGPU (once) and connects; reconnects on its own until `close()`. */
  async start(): Promise<void> {
    if (this.#state !== 'idle') return;
    this.#setState('connecting');
    const src = this.#gpuSource;
    this.#gpu = src === undefined ? null : typeof src === 'function' ? await src() : src;
    await this.#generate?.refresh();
    if (this.#closed) return;
    this.#connect();
  }

  /** Leaves the pool: closes the socket and stops reconnecting. Running agents are not stopped. */
  close(): void {
    this.#closed = true;
    this.#stopTimers();
    this.#generate?.close();
    this.#batcher.flush();
    this.#batcher.close();
    const s = this.#socket;
    this.#socket = null;
    if (s) {
      s.onclose = s.onmessage = s.onerror = s.onopen = null;
      s.close(1000, 'node closing');
    }
    this.#setState('closed');
  }

  // ------------------------------------------------------------ connection

  #connect(): void {
    let socket: SocketLike;
    try {
      socket = this.#createSocket(this.#urls().wsUrl);
    } catch (err) {
      this.#lastError = serializeError(err);
      this.#scheduleReconnect();
      return;
    }
    this.#socket = socket;
    socket.onopen = () => this.#send(this.#hello());
    socket.onmessage = (ev) => this.#onMessage(typeof ev.data === 'string' ? ev.data : String(ev.data));
    socket.onerror = () => {
      // The close event follows and carries the reconnect.
    };
    socket.onclose = (ev) => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      this.#stopHeartbeat();
      // A drain holds for one connection (the coordinator forgets it on hello too):
      // after a restart of the coordinator the node takes tasks again.
      this.#draining = false;
      // 1008: the coordinator refused this node (no or wrong join token, an origin it does not allow) and
      // said why in an `error` just before: keep that reason rather than a bare "socket closed".
      const refused = ev.code === 1008 && this.#lastError !== null && REFUSALS.has(this.#lastError.code);
      if (ev.code !== 1000 && ev.code !== 1005 && !refused) {
        this.#lastError = { code: 'NODE_LOST', name: 'AppError', message: `Socket closed (${ev.code}) ${ev.reason}`.trim() };
      }
      if (!this.#closed) this.#scheduleReconnect();
    };
  }

  #scheduleReconnect(): void {
    this.#nextCoordinator();
    this.#attempt++;
    const delayMs = backoffDelay(this.#attempt, this.#backoff);
    this.#state = 'reconnecting';
    this.#emit({ type: 'state', state: 'reconnecting', attempt: this.#attempt, delayMs });
    this.#reconnectTimer = setTimeout(() => {
      this.#reconnectTimer = null;
      if (!this.#closed) this.#connect();
    }, delayMs);
  }

  #hello(): NodeMessage {
    return {
      type: 'hello',
      protocol: PROTOCOL_VERSION,
      // An id is resumed only with its secret; without one the coordinator would give a new id anyway.
      ...(this.#nodeId && this.#secret ? { nodeId: this.#nodeId, secret: this.#secret } : {}),
      ...(this.#token ? { token: this.#token } : {}),
      name: this.#name,
      capabilities: this.#capabilities(),
    };
  }

  #capabilities(): Capabilities {
    const caps: Capabilities = {
      kinds: this.#draining ? [] : (Object.keys(this.#runners) as TaskKind[]),
      maxConcurrent: this.#maxConcurrent,
      queueDepth: this.#queueDepth,
      webgpu: this.#gpu?.info ?? null,
      models: this.#generate?.storedModels() ?? [],
      adapters: [],
      modules: this.#agents.moduleHashes,
    };
    if (this.#agents.modelAgents) caps.jspi = true;
    if (this.#generate) caps.inference = this.#generate.capabilities();
    if (this.#userAgent) caps.userAgent = this.#userAgent.slice(0, 512);
    return caps;
  }

  #send(msg: NodeMessage): boolean {
    const s = this.#socket;
    if (!s || s.readyState !== OPEN) return false;
    s.send(JSON.stringify(msg));
    return true;
  }

  #onMessage(raw: string): void {
    let msg: CoordinatorMessage;
    try {
      msg = JSON.parse(raw) as CoordinatorMessage;
    } catch {
      this.#reportError(new AppError('PROTOCOL_ERROR', 'The coordinator sent a message that is not JSON.'));
      return;
    }
    try {
      this.#handle(msg);
    } catch (err) {
      this.#reportError(err);
    }
  }

  #handle(msg: CoordinatorMessage): void {
    switch (msg.type) {
      case 'welcome':
        this.#secret = typeof msg.secret === 'string' ? msg.secret : null;
        this.#onWelcome(msg.nodeId, msg.heartbeatIntervalMs, msg.leaseMs);
        return;
      case 'task.assign':
        for (const a of msg.tasks) this.#accept(a);
        return;
      case 'task.cancel':
        this.#cancel(msg.taskId, msg.reason);
        return;
      case 'drain':
        this.#drain(msg.reason);
        return;
      case 'error':
        this.#lastError = msg.error;
        this.#emit({ type: 'error', error: msg.error });
        return;
      default:
        assertNever(msg, 'coordinator message');
    }
  }

  #onWelcome(nodeId: NodeId, heartbeatIntervalMs: number, leaseMs: number): void {
    this.#nodeId = nodeId;
    try {
      this.#storage?.setItem(NODE_ID_KEY, nodeId);
    } catch {
      // storage full or blocked: the node just gets a new id next time
    }
    this.#attempt = 0;
    this.#connects++;
    this.#stopHeartbeat();
    const every = Math.max(100, heartbeatIntervalMs || 2000);
    this.#heartbeatTimer = setInterval(() => this.#heartbeat(), every);
    this.#emit({ type: 'welcome', nodeId, heartbeatIntervalMs: every, leaseMs });
    this.#setState(this.#draining ? 'draining' : 'connected');
    // The leases it holds, at once: a coordinator that did not grant them (the one that did is gone) adopts
    // them before it could judge them lost.
    if (this.#leases.size > 0) this.#heartbeat();
    this.#batcher.flush();
  }

  #heartbeat(withCapabilities = false): void {
    const leases: string[] = [];
    for (const l of this.#leases.values()) leases.push(l.leaseId);
    this.#batcher.pendingLeases(leases);
    this.#send({
      type: 'heartbeat',
      leases,
      metrics: this.#metrics(),
      ...(withCapabilities ? { capabilities: this.#capabilities() } : {}),
    });
  }

  /** A runner's capabilities changed: tell the coordinator with the next heartbeat, soon. */
  #capabilitiesChanged(): void {
    if (this.#capsTimer !== null) return;
    this.#capsTimer = setTimeout(() => {
      this.#capsTimer = null;
      this.#heartbeat(true);
    }, 50);
  }

  #metrics(): NodeMetrics {
    const pool = this.#runtime.stats();
    const m: NodeMetrics = {
      running: this.#agents.running + (this.#generate?.running ?? 0),
      workers: pool.workers,
      tasksDone: this.#tasksDone,
      tasksFailed: this.#tasksFailed,
    };
    if (Number.isFinite(pool.spawnP50Ms)) m.spawnP50Ms = pool.spawnP50Ms;
    if (Number.isFinite(pool.spawnP99Ms)) m.spawnP99Ms = pool.spawnP99Ms;
    if (pool.agentMemoryBytes > 0) m.agentMemoryBytes = pool.agentMemoryBytes;
    const mem = (globalThis.performance as Performance & { memory?: { usedJSHeapSize: number } }).memory;
    if (mem) m.memoryBytes = mem.usedJSHeapSize;
    const inf = this.#inference?.stats();
    if (inf) {
      m.gpuMemoryBytes = inf.gpuMemoryBytes;
      m.tokensPerSec = inf.tokensPerSec;
    }
    return m;
  }

  #drain(reason: string): void {
    this.#draining = true;
    this.#setState('draining');
    this.#emit({ type: 'drain', reason });
    // Say so at once: no kinds means the router has nothing to send here.
    this.#heartbeat(true);
  }

  #stopHeartbeat(): void {
    if (this.#heartbeatTimer !== null) clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
  }

  #stopTimers(): void {
    this.#stopHeartbeat();
    if (this.#capsTimer !== null) clearTimeout(this.#capsTimer);
    this.#capsTimer = null;
    if (this.#reconnectTimer !== null) clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
  }

  // ------------------------------------------------------------ tasks

  #accept(a: Assignment): void {
    if (this.#leases.has(a.taskId)) return; // a repeated assignment of a task already running
    const name = taskName(a);
    const lease: Lease = { taskId: a.taskId, leaseId: a.leaseId, kind: a.kind, name, startedAt: Date.now(), cancelled: null, running: false, ended: false };
    if (a.traceparent !== undefined) lease.trace = { t0: performance.now(), spans: [] };
    this.#leases.set(a.taskId, lease);
    this.#emit({ type: 'task.start', task: lease });

    if (this.#draining) return this.#fail(lease, 'NODE_DRAINING', 'This node is draining; the task goes to another node.');
    const runner = this.#runners[a.kind];
    if (!runner) {
      const kinds = Object.keys(this.#runners).join(' and ');
      return this.#fail(lease, 'TASK_KIND_UNSUPPORTED', `This node runs ${kinds} tasks, not ${a.kind}.`);
    }
    if (a.deadline !== null && a.deadline <= lease.startedAt) {
      return this.#fail(lease, 'DEADLINE_EXCEEDED', 'The task reached the node after its deadline.');
    }
    try {
      runner.start(a, lease);
    } catch (err) {
      this.#finish(lease, { ok: false, error: serializeError(err) });
    }
  }

  #progress(lease: Lease, progress: ProgressMessage['progress']): void {
    if (lease.ended) return;
    this.#send({ type: 'task.progress', taskId: lease.taskId, leaseId: lease.leaseId, progress });
    if (progress.kind === 'loss') this.#emit({ type: 'train.step', taskId: lease.taskId, step: progress.step, loss: progress.loss });
  }

  #cancel(taskId: TaskId, reason: string): void {
    const lease = this.#leases.get(taskId);
    if (!lease) return;
    lease.cancelled = reason || 'cancelled by the coordinator';
    const runner = this.#runners[lease.kind];
    if (runner) runner.cancel(lease);
    else this.#fail(lease, 'CANCELLED', lease.cancelled);
  }

  #fail(lease: Lease, code: ErrorCode, message: string): void {
    this.#finish(lease, { ok: false, error: { code, name: 'AppError', message } });
  }

  #finish(lease: Lease, outcome: RunOutcome): void {
    if (lease.ended || this.#leases.get(lease.taskId) !== lease) return;
    lease.ended = true;
    this.#leases.delete(lease.taskId);
    const end = Date.now();
    let item: ResultItem;
    let code: TaskEntry['code'];
    if (outcome.ok) {
      item = { taskId: lease.taskId as TaskId, leaseId: lease.leaseId, ok: true, result: outcome.result };
      code = 'OK';
      this.#tasksDone++;
    } else {
      const error = lease.cancelled !== null && outcome.error.code !== 'CANCELLED'
        ? { code: 'CANCELLED' as const, name: 'AppError', message: lease.cancelled, details: { ...(outcome.error.details ?? {}), cause: outcome.error.code } }
        : outcome.error;
      item = { taskId: lease.taskId as TaskId, leaseId: lease.leaseId, ok: false, error };
      code = error.code;
      this.#tasksFailed++;
    }
    if (lease.trace && lease.trace.spans.length > 0) item.spans = lease.trace.spans;
    this.#byCode[code] = (this.#byCode[code] ?? 0) + 1;
    this.#batcher.push(item);
    const entry: TaskEntry = {
      taskId: lease.taskId,
      kind: lease.kind,
      name: lease.name,
      startedAt: lease.startedAt,
      durationMs: outcome.ok ? outcome.durationMs : end - lease.startedAt,
      code,
    };
    if (this.#recent.length < this.#recentSize) this.#recent.push(entry);
    else this.#recent[this.#recentNext] = entry;
    this.#recentNext = (this.#recentNext + 1) % this.#recentSize;
    this.#emit({ type: 'task.end', entry });
  }

  /**
   * Sends a batch of results; a batch over the socket's message cap is split, and a single
   * result over it is replaced by an AGENT_OUTPUT_LIMIT error (the coordinator would drop it).
   */
  #sendResults(results: ResultItem[]): boolean {
    const s = this.#socket;
    if (!s || s.readyState !== OPEN) return false;
    const text = JSON.stringify({ type: 'task.result', results });
    if (text.length * 3 <= this.#maxMessageBytes || this.#encoder.encode(text).length <= this.#maxMessageBytes) {
      s.send(text);
      return true;
    }
    if (results.length > 1) {
      const half = results.length >> 1;
      return this.#sendResults(results.slice(0, half)) && this.#sendResults(results.slice(half));
    }
    const r = results[0]!;
    return this.#sendResults([
      {
        taskId: r.taskId,
        leaseId: r.leaseId,
        ok: false,
        error: {
          code: 'AGENT_OUTPUT_LIMIT',
          name: 'AppError',
          message: `The result is larger than the ${this.#maxMessageBytes}-byte socket message cap; lower limits.maxStdoutBytes.`,
        },
      },
    ]);
  }

  // ------------------------------------------------------------ events

  #setState(state: ConnectionState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#emit({ type: 'state', state, attempt: this.#attempt });
  }

  #reportError(err: unknown): void {
    this.#lastError = serializeError(err);
    this.#emit({ type: 'error', error: this.#lastError });
  }

  #emit(e: NodeEvent): void {
    for (const l of this.#listeners) {
      try {
        l(e);
      } catch {
        // a listener's fault is not the node's
      }
    }
  }
}

function taskName(a: Assignment): string {
  const p = a.payload as { agent?: unknown; model?: unknown };
  const n = typeof p.agent === 'string' ? p.agent : typeof p.model === 'string' ? p.model : '';
  return n.slice(0, 128);
}

function storedNodeId(storage: StorageLike | null): NodeId | null {
  try {
    const v = storage?.getItem(NODE_ID_KEY);
    return v ? parseNodeId(v) : null;
  } catch {
    return null; // unreadable storage or a mangled id: join as a new node
  }
}

function defaultStorage(): StorageLike | null {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null;
  }
}


