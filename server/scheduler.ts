/**
 * The scheduler and router: takes ready tasks (highest priority, then oldest),
 * picks for each a capable, healthy node with a closed circuit and the most
 * room, leases them in one transaction and sends one `task.assign` per node.
 * It also owns the leases: renewal by heartbeat, expiry, node loss, results.
 *
 * No per-task timers: one bounded periodic tick expires leases and picks up
 * tasks whose backoff has passed; submits and results trigger a dispatch too.
 */
import {
  AppError,
  DEFAULT_AGENT_LIMITS,
  LIMITS,
  TASK_KINDS,
  base64ToBytes,
  newLeaseId,
  serializeError,
  type ErrorCode,
  type ErrorInfo,
  type HeartbeatMessage,
  type NodeId,
  type Assignment,
  type PartMessage,
  type ProgressMessage,
  type ResultMessage,
  type TaskId,
  type TaskKind,
  type TaskWaiting,
  type WaitReason,
} from '../shared';
import {
  errorInfo,
  type Clock,
  type Completion,
  type Ended,
  type Journal,
  type Lease,
  type QueuedRow,
  type ReadyRow,
  type ReplicaEnded,
  type ReplicaReadyRow,
  type StoredTask,
} from './journal';
import type { PgBus } from './bus';
import type { Metrics } from './metrics';
import { INFRA_CODES, wholePart, type LeaseInfo, type NodeSession, type ResultPart, type Slots } from './node';
import { FairShare } from './fair';
import type { Quota } from './registry';
import { Reputations } from './reputation';
import type { AttemptTrace, Tracing } from './tracing';
import type { TaskWatch } from './watch';
import type { Webhooks } from './webhook';

export interface SchedulerOptions {
  clock: Clock;
  leaseMs: number;
  heartbeatIntervalMs: number;
  /** How long a disconnected node's leases wait for it to reconnect before they fail NODE_LOST. */
  nodeGraceMs: number;
  /**
   * For nodes that do not advertise `queueDepth`: agent tasks they may hold per
   * worker (maxConcurrent × prefetch in all), so their pool never idles between batches.
   */
  prefetch: number;
  /** Period of the lease/backoff tick. */
  tickMs: number;
  /**
   * The stall rule: a connected node that holds leases and sends no result or progress on any
   * of them for this long beyond the longest task budget it holds (an agent's timeoutMs) loses
   * them all (LEASE_STALLED, an infrastructure failure of that node).
   */
  stallGraceMs: number;
  /** Reputation score below which a node gets no new work (server/quorum.ts reputationScore). Default 0.25. */
  reputationThreshold?: number;
  /** Share (0–1) of tasks of deterministic agent versions run on a second node as a spot check. Default 0. */
  spotCheck?: number;
  /** Spans per attempt (server/tracing.ts); null or absent: off. */
  tracing?: Tracing | null;
  /**
   * A train task's successful result, before it is journaled: stores the adapter files it carries (in the
   * registry) and answers the result to keep instead (the files replaced by the stored version). A throw
   * fails the attempt with the thrown error's code (a node that sends a broken adapter fails its lease).
   */
  storeTrained?: (taskId: TaskId, result: unknown, parts: ReadonlyMap<string, ResultPart> | null) => Promise<unknown>;
  /** Aging: a ready task's priority rises by one per this many ms (server/fair.ts); 0 or absent: off. */
  agingMs?: number;
  /** A tenant's quota: its weight in fair sharing and its maxLeased (server/registry.ts). */
  quotaOf?: (tenant: string) => Pick<Quota, 'weight' | 'maxLeased'> | undefined;
  /** Bytes of a model's weights as this coordinator serves them (null: unknown, no memory check). */
  modelBytes?: (model: string) => number | null;
  /** A shared journal: how often this coordinator beats (and sweeps the leases of dead ones). Default 1000 ms. */
  beatMs?: number;
  /** A shared journal: a coordinator silent this long is dead; any live one requeues its leases. Default 10 s. */
  coordinatorDeadMs?: number;
}

/** The leases by id, counted per tenant as they come and go (a tenant's maxLeased). */
class LeaseTable extends Map<string, LeaseInfo> {
  readonly perTenant = new Map<string, number>();

  override set(id: string, lease: LeaseInfo): this {
    const had = this.get(id);
    if (had) this.#count(had.tenant, -1);
    this.#count(lease.tenant, 1);
    return super.set(id, lease);
  }

  override delete(id: string): boolean {
    const had = this.get(id);
    if (had) this.#count(had.tenant, -1);
    return super.delete(id);
  }

  override clear(): void {
    this.perTenant.clear();
    super.clear();
  }

  #count(tenant: string | null, by: number): void {
    if (tenant === null) return;
    const n = (this.perTenant.get(tenant) ?? 0) + by;
    if (n > 0) this.perTenant.set(tenant, n);
    else this.perTenant.delete(tenant);
  }
}

/** A result released from its lease, waiting for the next journal flush. */
interface PendingResult {
  node: NodeSession;
  item: ResultMessage['results'][number];
  /** The attempt's span (tracing on), for the `task.result` span of the journal write. */
  trace: AttemptTrace | undefined;
}

const TRACE_OK = { ok: true } as const;

/** Budget of a generate or train lease for the stall rule (both send progress while they work). */
const MODEL_TASK_BUDGET_MS = 300_000;

/** How often queued tasks are checked for a passed deadline (also checked whenever one is about to be assigned). */
const DEADLINE_SWEEP_MS = 1_000;
/** Memory a node must have for a model, as a multiple of its weight files: inference (weights and KV cache) and training (also the adapter, its optimizer state and activations). Estimates: the node checks exactly and refuses with MODEL_TOO_LARGE. */
const GENERATE_MEMORY_FACTOR = 1.25;
const TRAIN_MEMORY_FACTOR = 2;
/** Queued tasks whose wait is written down per sweep, and how long a task waits before it is. */
const WAIT_SAMPLE = 512;
const WAIT_NOTE_AFTER_MS = 1_000;

/** With aging on, a tenant's longest-queued tasks read beside its highest priority ones (aging may lift them). */
const AGED_CANDIDATES = 64;
/** Longest between two reads of those candidates (or agingMs, when shorter). */
const AGED_READ_MS = 1_000;
/** Most tasks taken from the journal in one dispatch round. */
const MAX_DISPATCH = 4096;
/** Keep each `task.assign` message well below the socket limit. */
const MAX_ASSIGN_CHARS = LIMITS.maxSocketMessageBytes / 4;

export class Scheduler {
  readonly nodes = new Map<NodeId, NodeSession>();
  readonly leases: ReadonlyMap<string, LeaseInfo> & Pick<Map<string, LeaseInfo>, 'set' | 'delete'> = new LeaseTable();
  readonly #fair: FairShare;
  readonly #journal: Journal;
  readonly #metrics: Metrics;
  readonly #watch: TaskWatch;
  readonly #webhooks: Webhooks;
  readonly #opts: SchedulerOptions;
  #dispatchPending = false;
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;
  #lastSweep = 0;
  #pending: PendingResult[] = [];
  /** Results of replica leases, journaled apart (server/quorum.ts decides their tasks). */
  #pendingReplicas: PendingResult[] = [];
  readonly #tracing: Tracing | null;
  /** Node reputation from quorums and verdicts, journaled; the router weighs each node's room by it. */
  readonly reputation: Reputations;
  #flushPending = false;
  /** When each kind's aged candidates were last read (see #claimRound). */
  readonly #agedReadAt = new Map<TaskKind, number>();
  /** Called after leases are released; shutdown waits on it. */
  onIdle: (() => void) | null = null;
  /** Called with each attempt's end once it is journaled, after the metrics (server/history.ts listens). */
  readonly endedListeners = new Set<(e: Ended, now: number) => void>();

  constructor(journal: Journal, metrics: Metrics, watch: TaskWatch, webhooks: Webhooks, opts: SchedulerOptions) {
    this.#journal = journal;
    this.#metrics = metrics;
    this.#watch = watch;
    this.#webhooks = webhooks;
    this.#opts = opts;
    this.#tracing = opts.tracing ?? null;
    this.reputation = new Reputations(journal, opts.reputationThreshold ?? 0.25);
    this.#fair = new FairShare({ agingMs: opts.agingMs ?? 0, weight: (tenant) => (tenant === null ? 1 : (opts.quotaOf?.(tenant)?.weight ?? 1)) });
  }

  /** Tasks of `tenant` leased now (its maxLeased bounds them): by every coordinator, when several share the journal. */
  leasedBy(tenant: string): number {
    if (this.#journal.shared) return this.#journal.leasedOf(tenant);
    return (this.leases as LeaseTable).perTenant.get(tenant) ?? 0;
  }

  /** Coordinators sharing the journal tell each other through it (server/bus.ts); null: this one is alone. */
  bus: Pick<PgBus, 'publish'> | null = null;
  #lastBeat = -Infinity;

  /** Tasks were queued here: dispatch, and wake the other coordinators. */
  submitted(): void {
    this.requestDispatch();
    this.bus?.publish({ t: 'wake' });
  }

  /** Another coordinator cancelled a task whose lease this one granted: tell the node. */
  cancelledElsewhere(taskId: string, leaseId: string, reason: string): void {
    const lease = this.leases.get(leaseId);
    if (!lease || lease.taskId !== taskId) return;
    this.#takeBack(leaseId, reason);
    this.#watch.forget(taskId, true);
    this.requestDispatch();
    this.#maybeIdle();
  }

  /**
   * A lease its node names that this coordinator did not grant: another coordinator did, and the node now speaks
   * to this one. Taken over when the journal says that node holds it still; tried once per lease.
   */
  #adopt(node: NodeSession, leaseId: string): LeaseInfo | undefined {
    if (!this.#journal.shared || typeof leaseId !== 'string' || leaseId.length > 64 || node.adoptTried(leaseId)) return undefined;
    const row = this.#journal.adopt(node.id, leaseId);
    if (!row) return undefined;
    const now = this.#opts.clock.now();
    const info: LeaseInfo = {
      leaseId,
      taskId: row.taskId,
      node,
      attempt: row.attempts,
      kind: row.kind,
      expiresAt: now + this.#opts.leaseMs,
      budgetMs: budgetOf({ kind: row.kind, payload: row.payload } as ReadyRow),
      tenant: row.tenant,
    };
    if (row.kind === 'generate' && row.model !== null) info.model = row.model;
    if (row.replica !== undefined) info.replica = row.replica;
    this.leases.set(leaseId, info);
    node.hold(info, now);
    return info;
  }

  get options(): Readonly<SchedulerOptions> {
    return this.#opts;
  }

  start(): void {
    this.#timer = setInterval(() => this.tick(), this.#opts.tickMs);
    this.#timer.unref();
    this.requestDispatch();
  }

  stop(): void {
    this.flushResults();
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Coalesces dispatch requests into one round on the next turn of the event loop. */
  requestDispatch(): void {
    if (this.#dispatchPending || this.#stopped) return;
    this.#dispatchPending = true;
    setImmediate(() => {
      this.#dispatchPending = false;
      if (this.#stopped || !this.#journal.db.open) return;
      try {
        this.dispatch();
      } catch (err) {
        if (!this.#storeDown(err)) throw err;
      }
    });
  }

  /** Rounds that found the journal's database unreachable (PostgreSQL down): the next tick tries again. */
  storeUnavailable = 0;

  /** Whether `err` is the journal's database being out of reach (then the round is skipped, and retried by the next tick). */
  #storeDown(err: unknown): boolean {
    if (!(err instanceof AppError) || err.code !== 'STORE_UNAVAILABLE') return false;
    this.storeUnavailable++;
    return true;
  }

  /** One periodic round: expire leases, take stalled ones back, forget long-gone nodes, dispatch. */
  tick(): void {
    if (this.#stopped || !this.#journal.db.open) return;
    try {
      this.#tick();
    } catch (err) {
      if (!this.#storeDown(err)) throw err;
    }
  }

  #tick(): void {
    if (this.#pending.length) this.flushResults();
    this.expireLeases();
    this.reclaimStalled();
    const now = this.#opts.clock.now();
    if (this.#journal.shared && (now - this.#lastBeat >= (this.#opts.beatMs ?? 1_000) || now < this.#lastBeat)) {
      this.#lastBeat = now;
      this.#journal.beat();
      for (const e of this.#journal.reclaimOrphans(this.#opts.coordinatorDeadMs ?? 10_000)) this.#ended(e, now);
    }
    if (now - this.#lastSweep >= DEADLINE_SWEEP_MS || now < this.#lastSweep) {
      this.#lastSweep = now;
      this.#noteWaits(now);
      for (const e of this.#journal.expireDeadlines((row) => this.#deadlineError(row, now))) this.#ended(e, now);
      this.#webhooks.sweep();
    }
    for (const node of this.nodes.values()) {
      if (!node.connected && node.leases.size === 0 && node.disconnectedAt !== null && now - node.disconnectedAt > 10 * 60_000) {
        this.nodes.delete(node.id);
      }
    }
    this.dispatch();
  }

  /** Assigns as many ready tasks as the nodes have room for; answers how many were leased. */
  dispatch(): number {
    const now = this.#opts.clock.now();
    const free = new Map<NodeSession, Slots>();
    for (const node of this.nodes.values()) {
      const slots = node.freeSlots(now, this.#opts.heartbeatIntervalMs, this.#opts.prefetch);
      if (slots.cap > 0 && (slots.total > 0 || slots.generate > 0)) {
        const weight = node.reputation.weight;
        if (weight < 1) weigh(node, slots, weight, this.#opts.prefetch);
        if (slots.total > 0 || slots.generate > 0) free.set(node, { ...slots });
      }
    }
    if (free.size === 0) return 0;
    // The reads and the leases in one claim (on a shared journal, one transaction that skips others' rows).
    const round = this.#journal.claim(() => this.#claimRound(now, free));
    if (round === null) return 0;
    const { plan, leased, expired, leasedReplicas, replicasExpired } = round;
    for (const r of replicasExpired) this.#replicaEnded(r, now);
    for (const e of expired) this.#ended(e, now);

    const expiresAt = now + this.#opts.leaseMs;
    for (const [node, list] of plan) {
      let parts: string[] = [];
      let chars = 0;
      for (const { row, leaseId } of list) {
        if (row.replica === undefined ? !leased.has(row.id) : !leasedReplicas.has(leaseId)) continue;
        const info: LeaseInfo = { leaseId, taskId: row.id, node, attempt: row.attempts + 1, kind: row.kind, expiresAt, budgetMs: budgetOf(row), tenant: row.tenant };
        if (row.replica !== undefined) info.replica = row.replica;
        if (this.#tracing) {
          info.trace = this.#tracing.attempt(row.traceparent, now - row.run_after, { taskId: row.id, nodeId: node.id, attempt: info.attempt, kind: row.kind, ...(row.replica !== undefined ? { replica: row.replica } : {}) });
        }
        if (row.kind === 'generate' && row.model !== null) info.model = row.model;
        this.leases.set(leaseId, info);
        node.hold(info, now);
        this.#metrics.dispatched((now - row.run_after) / 1000);
        // A train task that ran before may have left a checkpoint: the node goes on from it.
        const checkpoint = row.kind === 'train' ? this.#journal.checkpointOf(row.id) : null;
        const part = assignmentJson(row, leaseId, info.trace?.traceparent, checkpoint);
        parts.push(part);
        chars += part.length;
        if (chars > MAX_ASSIGN_CHARS) {
          node.sendRaw(`{"type":"task.assign","tasks":[${parts.join(',')}]}`);
          parts = [];
          chars = 0;
        }
        if (this.#watch.has(row.id)) {
          this.#watch.emit(row.id, { type: 'state', state: 'leased', attempts: row.attempts + 1, nodeId: node.id, at: now });
        }
      }
      if (parts.length) node.sendRaw(`{"type":"task.assign","tasks":[${parts.join(',')}]}`);
    }
    return leased.size + leasedReplicas.size;
  }

  /** Plans a dispatch round over the nodes with room and leases it (see dispatch). */
  #claimRound(now: number, free: Map<NodeSession, Slots>) {
    let candidates: Array<ReadyRow & Partial<Pick<ReplicaReadyRow, 'replica' | 'avoid'>>> = [];
    let replicaCapacity = 0;
    const agingMs = this.#opts.agingMs ?? 0;
    for (const kind of TASK_KINDS) {
      let capacity = 0;
      for (const [node, slots] of free) if (node.fits(kind)) capacity += roomFor(kind, slots);
      if (capacity === 0) continue;
      if (kind !== 'train') replicaCapacity += capacity;
      const limit = Math.min(capacity, MAX_DISPATCH);
      // Aging lifts a task one step per agingMs: its longest-queued candidates are read once a step (at most
      // once a second), not every round (each read walks the queue's head again).
      let oldest = 0;
      const readAt = this.#agedReadAt.get(kind) ?? -Infinity;
      if (agingMs > 0 && (now - readAt >= Math.min(agingMs, AGED_READ_MS) || now < readAt)) {
        oldest = Math.min(limit, AGED_CANDIDATES);
        this.#agedReadAt.set(kind, now);
      }
      const got = this.#journal.ready(kind, now, limit, oldest);
      if (got.length) candidates = candidates.length ? candidates.concat(got) : got;
    }
    if (replicaCapacity > 0) {
      const replicas = this.#journal.readyReplicas(now, Math.min(replicaCapacity, MAX_DISPATCH));
      if (replicas.length) candidates = candidates.length ? candidates.concat(replicas) : replicas;
    }
    if (candidates.length === 0) return null;
    // Priority with aging, then each tenant's fair share, then age (server/fair.ts).
    const { rows, tags } = this.#fair.order(candidates, now);
    /** Per tenant with a maxLeased, the leases it may still take this round. */
    let allowance: Map<string, number> | null = null;
    /** Per replicated task, the nodes its replicas hold or ran on (never the same node twice). */
    let placed: Map<TaskId, Set<string>> | null = null;
    let replicatedPastDeadline: Set<TaskId> | null = null;

    const plan = new Map<NodeSession, Array<{ row: (typeof rows)[number]; leaseId: string }>>();
    const leases: Lease[] = [];
    const pastDeadline: Array<{ id: TaskId; error: ErrorInfo }> = [];
    for (let r = 0; r < rows.length; r++) {
      const row = rows[r]!;
      if (row.deadline !== null && row.deadline < now) {
        if (row.replica === undefined) pastDeadline.push({ id: row.id, error: this.#deadlineError({ ...row, updated_at: row.run_after, wait_reason: null, wait_since: null }, now) });
        else (replicatedPastDeadline ??= new Set()).add(row.id);
        continue;
      }
      let avoid: Set<string> | null = null;
      if (row.replica !== undefined) {
        placed ??= new Map();
        avoid = placed.get(row.id) ?? new Set(row.avoid ? row.avoid.split(',') : []);
        placed.set(row.id, avoid);
      }
      let left: number | undefined;
      if (row.tenant !== null && this.#opts.quotaOf) {
        allowance ??= new Map();
        left = allowance.get(row.tenant);
        if (left === undefined) {
          const max = this.#opts.quotaOf(row.tenant)?.maxLeased ?? null;
          left = max === null ? Infinity : Math.max(0, max - this.leasedBy(row.tenant));
          allowance.set(row.tenant, left);
        }
        if (left <= 0) continue; // waits with reason quota
      }
      const node = pickNode(row.kind, row.model, adapterOf(row), free, avoid, this.#needOf(row));
      if (!node) continue;
      if (left !== undefined) allowance!.set(row.tenant!, left - 1);
      this.#fair.leased(row.tenant, tags[r]!);
      if (avoid) avoid.add(node.id);
      const slots = free.get(node)!;
      slots.cap--;
      if (row.kind === 'generate') {
        slots.generate--;
      } else {
        slots.total--;
        if (slots.idle > 0) slots.idle--;
        if (row.kind === 'train') slots.heavy--;
      }
      const leaseId = newLeaseId();
      leases.push(row.replica === undefined ? { taskId: row.id, leaseId, nodeId: node.id } : { taskId: row.id, leaseId, nodeId: node.id, replica: row.replica });
      let list = plan.get(node);
      if (!list) plan.set(node, (list = []));
      list.push({ row, leaseId });
    }

    const replicasExpired = replicatedPastDeadline ? this.#journal.expireReplicated([...replicatedPastDeadline]) : [];
    this.#fair.prune();
    if (leases.length === 0 && pastDeadline.length === 0) return replicasExpired.length ? { plan, leased: new Set<TaskId>(), expired: [], leasedReplicas: new Set<string>(), replicasExpired } : null;
    return { plan, replicasExpired, ...this.#journal.leaseBatch(leases, pastDeadline) };
  }

  /** Bytes a node must be able to hold for the task's model (null: no model, or its size unknown here). */
  #needOf(row: { kind: TaskKind; model: string | null }): number | null {
    if (row.model === null || !this.#opts.modelBytes) return null;
    const bytes = this.#opts.modelBytes(row.model);
    if (bytes === null) return null;
    return Math.ceil(bytes * (row.kind === 'train' ? TRAIN_MEMORY_FACTOR : GENERATE_MEMORY_FACTOR));
  }

  /**
   * Why a queued task waits, from the pool as it is now: backoff, its tenant's maxLeased, no connected node
   * that can run it (its kind, WebGPU, a model larger than every node's memory budget), circuits open on all
   * that could, or all of them busy. `since`: when the reason last written for it began (tick writes them),
   * else when it became ready (or its attempt failed, for backoff).
   */
  explain(task: QueuedRow, now: number): TaskWaiting {
    let reason: WaitReason;
    let message: string;
    const max = task.tenant !== null ? (this.#opts.quotaOf?.(task.tenant)?.maxLeased ?? null) : null;
    if (task.run_after > now) {
      reason = 'backoff';
      message = `Retrying after a failed attempt; not before ${new Date(task.run_after).toISOString()}.`;
    } else if (max !== null && this.leasedBy(task.tenant!) >= max) {
      reason = 'quota';
      message = `Tenant ${task.tenant} has ${this.leasedBy(task.tenant!)} tasks leased, its quota's maxLeased (${max}).`;
    } else {
      const need = this.#needOf(task);
      let ofKind = 0;
      let capable = 0;
      let resting = 0;
      let largest = -1;
      // An agent that calls a model needs a node that runs such agents (JSPI and the inference runtime): fits says.
      const modelAgent = task.kind === 'agent' && task.model !== null;
      for (const node of this.nodes.values()) {
        if (!node.connected || node.draining || !node.fits(task.kind, task.model)) continue;
        ofKind++;
        if (need !== null && !node.canHold(need)) {
          largest = Math.max(largest, node.capabilities.inference?.memoryBudgetBytes ?? 0);
          continue;
        }
        capable++;
        if (node.circuit.state(now) === 'open' || node.reputation.weight <= 0) resting++;
      }
      if (capable === 0) {
        reason = 'no_capable_node';
        message =
          ofKind === 0
            ? modelAgent
              ? `No connected node runs agents that call a model (they need JavaScript Promise Integration, WebAssembly.Suspending, and the inference runtime: a Chromium 137+ page with a model).`
              : `No connected node runs ${task.kind} tasks${task.kind === 'train' ? ' (training needs a node with WebGPU)' : task.kind === 'generate' ? ' (a node with the inference runtime)' : ''}.`
            : `Model ${task.model} needs about ${mib(need!)} for ${task.kind === 'train' ? 'training' : 'inference'}; the largest memory budget of the ${ofKind} connected node${ofKind === 1 ? '' : 's'} that could run it is ${mib(largest)}.`;
      } else if (resting === capable) {
        reason = 'circuit_open';
        message = `All ${capable} node${capable === 1 ? '' : 's'} that could run it are resting after failures (circuit open or reputation too low).`;
      } else {
        reason = 'capacity';
        message = `The ${capable - resting} node${capable - resting === 1 ? '' : 's'} that can run it are busy.`;
      }
    }
    const since =
      task.wait_reason === reason && task.wait_since !== null ? task.wait_since : reason === 'backoff' ? task.updated_at : task.wait_reason === null ? task.run_after : now;
    return { reason, since, message };
  }

  /** A stored record with its `waiting` explained afresh (queued tasks only). */
  withWaiting<T extends StoredTask>(task: T): T {
    if (task.state !== 'queued') return task;
    const model = (task.payload as { model?: string }).model ?? null;
    const row: QueuedRow = {
      id: task.id,
      kind: task.kind,
      model,
      tenant: task.tenant,
      run_after: task.runAfter,
      updated_at: task.updatedAt,
      deadline: task.deadline,
      wait_reason: task.waiting?.reason ?? null,
      wait_since: task.waiting?.since ?? null,
    };
    return { ...task, waiting: this.explain(row, this.#opts.clock.now()) };
  }

  /** The error a task that passed its deadline queued fails with: NO_CAPABLE_NODE when no node could ever take it. */
  #deadlineError(row: QueuedRow, now: number): ErrorInfo {
    const w = this.explain(row, now);
    if (w.reason === 'no_capable_node') {
      return errorInfo('NO_CAPABLE_NODE', `The task passed its deadline waiting for a node that can run it: ${w.message}`, { waited: w.reason, since: w.since });
    }
    return errorInfo('DEADLINE_EXCEEDED', `The task passed its deadline before it could start (${w.reason}: ${w.message})`, { waited: w.reason, since: w.since });
  }

  /**
   * Writes down why queued tasks wait (a bounded sample each sweep), so `since` says when a reason began.
   * A task is written once it has waited WAIT_NOTE_AFTER_MS (most never wait that long), then when its reason changes.
   */
  #noteWaits(now: number): void {
    const updates: Array<{ id: TaskId; reason: WaitReason; since: number }> = [];
    for (const row of this.#journal.queuedSample(WAIT_SAMPLE)) {
      if (row.wait_reason === null && now - row.run_after < WAIT_NOTE_AFTER_MS) continue;
      const w = this.explain(row, now);
      if (w.reason !== row.wait_reason) updates.push({ id: row.id, reason: w.reason, since: w.since });
    }
    this.#journal.setWaiting(updates);
  }

  heartbeat(node: NodeSession, msg: HeartbeatMessage): void {
    const now = this.#opts.clock.now();
    node.lastSeen = now;
    node.metrics = this.#metrics.nodeReported(msg.metrics);
    if (msg.capabilities) node.capabilities = msg.capabilities;
    const until = now + this.#opts.leaseMs;
    for (const id of msg.leases) {
      const lease = node.leases.get(id) ?? (node.heldOnce(id) ? undefined : this.#adopt(node, id));
      if (lease) lease.expiresAt = until;
    }
    this.requestDispatch();
  }

  /**
   * Progress on a lease. Only the node holding the lease may report on it: progress on a lease it
   * gave back lately is dropped; on any other lease it is refused (LEASE_NOT_HELD) and changes nothing.
   */
  progress(node: NodeSession, msg: ProgressMessage): void {
    const lease = this.#reportedOn(node, msg, 'progress is');
    if (!lease) return;
    node.lastWorkAt = node.lastSeen;
    lease.expiresAt = Math.max(lease.expiresAt, node.lastSeen + this.#opts.leaseMs);
    if (msg.progress.kind === 'checkpoint') this.#checkpoint(lease, msg.progress);
    if (lease.kind === 'generate' || lease.kind === 'train') {
      // Tokens (and a training run's losses) are kept for the attempt, so a stream that joins late replays them.
      this.#watch.progress(msg.taskId, { type: 'progress', at: node.lastSeen, progress: msg.progress });
    } else if (this.#watch.has(msg.taskId)) {
      this.#watch.emit(msg.taskId, { type: 'progress', at: node.lastSeen, progress: msg.progress });
    }
  }

  /**
   * The lease a node's message reports on (adopted when another coordinator granted it to this node): undefined when
   * the node gave it back lately (the message is dropped); on any other lease LEASE_NOT_HELD, and nothing changes.
   */
  #reportedOn(node: NodeSession, msg: { taskId: string; leaseId: string }, what: 'progress is' | 'parts are'): LeaseInfo | undefined {
    node.lastSeen = this.#opts.clock.now();
    const lease = node.leases.get(msg.leaseId) ?? (node.heldOnce(msg.leaseId) ? undefined : this.#adopt(node, msg.leaseId));
    if (lease && lease.taskId === msg.taskId) return lease;
    if (node.heldOnce(msg.leaseId)) return undefined;
    throw new AppError('LEASE_NOT_HELD', `This node does not hold lease ${msg.leaseId.slice(0, 64)} of task ${msg.taskId.slice(0, 64)}; ${what} accepted only from the node that holds the lease.`, {
      taskId: msg.taskId.slice(0, 64),
      leaseId: msg.leaseId.slice(0, 64),
    });
  }

  /**
   * A train lease's checkpoint: its bytes came first in `task.part` messages (checkpoint.safetensors), all of them and
   * hashing to what the progress states, else PROTOCOL_ERROR; kept in the journal (the latest step), so an attempt
   * after a lost node goes on from it on any node of any coordinator.
   */
  #checkpoint(lease: LeaseInfo, cp: { step: number; bytes: number; sha256: string }): void {
    const file = lease.parts?.get('checkpoint.safetensors');
    lease.parts?.delete('checkpoint.safetensors');
    const refuse = (why: string): never => {
      throw new AppError('PROTOCOL_ERROR', `The checkpoint of task ${lease.taskId} after step ${cp.step}: ${why}; it is not kept.`, { taskId: lease.taskId, step: cp.step });
    };
    if (lease.kind !== 'train') refuse('only train tasks checkpoint');
    const whole = wholePart(file, cp.bytes, cp.sha256);
    if ('missing' in whole) refuse(`${whole.missing} came in parts, where it states ${cp.bytes} bytes`);
    if ('mismatch' in whole) refuse('its parts do not hash to the SHA-256 it states');
    this.#journal.putCheckpoint(lease.taskId, cp.step, cp.sha256, (whole as { bytes: Uint8Array }).bytes);
  }

  /**
   * A `task.part`: a piece of a result file too large for one socket message, kept with the lease (in order, within
   * LIMITS.maxResultPartsBytes) until the result that names it (a train result's adapter). Out of order, past the
   * stated total, a total that changes, or data that is not base64: PROTOCOL_ERROR, and what came is dropped.
   */
  part(node: NodeSession, msg: PartMessage): void {
    const lease = this.#reportedOn(node, msg, 'parts are');
    if (!lease) return;
    const refuse = (why: string): never => {
      lease.parts?.delete(msg.name);
      throw new AppError('PROTOCOL_ERROR', `task.part ${msg.name} of task ${msg.taskId.slice(0, 64)}: ${why}; what came of it is dropped.`, { taskId: msg.taskId.slice(0, 64), name: msg.name });
    };
    if (lease.kind !== 'train') refuse('only train results send parts');
    const parts = (lease.parts ??= new Map());
    let file = parts.get(msg.name);
    if (!file) parts.set(msg.name, (file = { total: msg.total, received: 0, chunks: [] }));
    if (file.total !== msg.total) refuse(`the total changed from ${file.total} to ${msg.total}`);
    if (msg.offset !== file.received) refuse(`offset ${msg.offset} where ${file.received} bytes came so far (parts go in order)`);
    const bytes = base64ToBytes(msg.data);
    if (!bytes) refuse('data is not base64');
    if (file.received + bytes!.length > file.total) refuse(`more than the stated ${file.total} bytes`);
    file.chunks.push(bytes!);
    file.received += bytes!.length;
    node.lastWorkAt = node.lastSeen;
    lease.expiresAt = Math.max(lease.expiresAt, node.lastSeen + this.#opts.leaseMs);
  }

  /**
   * A `task.result` batch. Items are released from their leases at once and
   * journaled on the next turn of the event loop together with every other
   * result that arrived meanwhile: one transaction (one fsync) for all of them.
   *
   * Only the node that holds a lease may end it. A result on a lease this node gave back
   * lately (expired, cancelled, already reported) is a late duplicate: dropped and counted.
   * Any other item is answered: the items refused (LEASE_NOT_HELD), which change nothing.
   */
  results(node: NodeSession, results: ResultMessage['results']): Array<{ taskId: string; leaseId: string }> {
    if (!this.#journal.db.open) throw new AppError('SHUTTING_DOWN', 'The coordinator is closing; the results will be retried by the next one.');
    node.lastSeen = this.#opts.clock.now();
    const refused: Array<{ taskId: string; leaseId: string }> = [];
    let accepted = 0;
    for (const item of results) {
      const lease = node.leases.get(item.leaseId) ?? (node.heldOnce(item.leaseId) ? undefined : this.#adopt(node, item.leaseId));
      if (!lease || lease.taskId !== item.taskId) {
        if (node.heldOnce(item.leaseId)) this.#journal.duplicatesDropped++;
        else refused.push({ taskId: item.taskId, leaseId: item.leaseId });
        continue;
      }
      node.release(item.leaseId);
      this.leases.delete(item.leaseId);
      if (item.ok) this.#metrics.resultReported(lease.kind, lease.model ?? null, item.result);
      if (item.ok && lease.kind === 'train' && this.#opts.storeTrained && lease.replica === undefined) {
        // The adapter goes to the registry first; the result is journaled once it is stored (or refused).
        accepted++;
        const trace = lease.trace;
        const pend = (done: ResultMessage['results'][number]): void => {
          if (trace) this.#tracing!.resulted(trace, done.spans, done.ok ? TRACE_OK : { ok: false, code: String(done.error.code).slice(0, 64) });
          this.#pending.push({ node, item: done, trace });
          this.#scheduleFlush();
        };
        this.#opts.storeTrained(item.taskId as TaskId, item.result, lease.parts ?? null).then(
          (result) => pend({ ...item, result }),
          (err: unknown) => pend({ taskId: item.taskId, leaseId: item.leaseId, ok: false, error: serializeError(err), ...(item.spans !== undefined ? { spans: item.spans } : {}) }),
        );
        continue;
      }
      if (lease.trace) this.#tracing!.resulted(lease.trace, item.spans, item.ok ? TRACE_OK : { ok: false, code: String(item.error.code).slice(0, 64) });
      if (lease.replica === undefined) this.#pending.push({ node, item, trace: lease.trace });
      else this.#pendingReplicas.push({ node, item, trace: lease.trace });
      accepted++;
    }
    if (accepted > 0) node.lastWorkAt = node.lastSeen;
    if (accepted > 0) this.#scheduleFlush();
    return refused;
  }

  #scheduleFlush(): void {
    if (this.#flushPending) return;
    this.#flushPending = true;
    setImmediate(() => this.flushResults());
  }

  /**
   * Journals every result received since the last flush, in one transaction. On a shared journal (PostgreSQL) the
   * transaction runs on the store's asynchronous lane, one at a time: the coordinator goes on dispatching and
   * reading results while the server records them, and the results that came meanwhile go in the next one.
   */
  flushResults(): void {
    this.#flushPending = false;
    if (this.#pendingReplicas.length && this.#journal.db.open) this.#flushReplicas();
    const pending = this.#pending;
    if (pending.length === 0 || !this.#journal.db.open || this.#flushing) return;
    this.#pending = [];
    const completions: Completion[] = new Array(pending.length);
    for (let i = 0; i < pending.length; i++) {
      const item = pending[i]!.item;
      completions[i] = {
        taskId: item.taskId as TaskId,
        leaseId: item.leaseId,
        outcome: item.ok ? { ok: true, result: item.result } : { ok: false, error: { ...item.error, code: item.error.code as ErrorCode } },
      };
    }
    const t0 = this.#tracing ? Date.now() : 0;
    if (this.#journal.shared && !this.#stopped) {
      this.#flushing = this.#journal.completeAsync(completions).then(
        (ended) => {
          this.#flushing = null;
          this.#flushed(pending, ended, t0);
          if (this.#pending.length) this.#scheduleFlush();
        },
        (err: unknown) => {
          this.#flushing = null;
          this.#unflushed(pending, err);
          if (this.#pending.length && !this.#stopped) setTimeout(() => this.#scheduleFlush(), 100).unref();
        },
      );
      return;
    }
    let ended: Array<Ended | null>;
    try {
      ended = this.#journal.complete(completions);
    } catch (err) {
      this.#unflushed(pending, err);
      return;
    }
    this.#flushed(pending, ended, t0);
  }

  /** A results flush in flight on the asynchronous lane (at most one). */
  #flushing: Promise<void> | null = null;

  /** Waits for the results flush in flight, and journals the results still pending (shutdown: after stop()). */
  async settle(): Promise<void> {
    await this.#flushing;
    if (this.#pending.length && this.#journal.db.open) this.flushResults();
    await this.#flushing;
  }

  /** Nothing was written: the results wait for the next flush (the store out of reach), or the error is thrown. */
  #unflushed(pending: PendingResult[], err: unknown): void {
    this.#pending = pending.concat(this.#pending);
    if (!this.#storeDown(err)) throw err;
  }

  #flushed(pending: readonly PendingResult[], ended: ReadonlyArray<Ended | null>, t0: number): void {
    const now = this.#opts.clock.now();
    if (this.#tracing) recordResults(this.#tracing, pending, ended, t0);
    for (let i = 0; i < ended.length; i++) {
      const e = ended[i];
      if (!e) continue;
      const { node, item } = pending[i]!;
      this.#account(node, item, now);
      this.#ended(e, now);
    }
    this.requestDispatch();
    this.#maybeIdle();
  }

  /** A journaled result on the node's books: done or failed, and its circuit (only infrastructure failures count against it). */
  #account(node: NodeSession, item: ResultMessage['results'][number], now: number): void {
    if (item.ok) {
      node.done++;
    } else {
      node.failed++;
      if (INFRA_CODES.has(item.error.code)) {
        this.#infraFailure(node, item.error.code, now);
        return;
      }
    }
    node.circuit.success();
    node.earned();
  }

  /** Journals the replica results received since the last flush, and acts on the tasks they decided. */
  #flushReplicas(): void {
    const pending = this.#pendingReplicas;
    this.#pendingReplicas = [];
    const now = this.#opts.clock.now();
    const t0 = this.#tracing ? Date.now() : 0;
    const out = this.#journal.completeReplicas(pending.map(({ item }) => completionOf(item)));
    if (this.#tracing) recordResults(this.#tracing, pending, out.map((r) => r?.attempt ?? null), t0);
    for (let i = 0; i < out.length; i++) {
      const r = out[i];
      if (!r) continue;
      const { node, item } = pending[i]!;
      this.#account(node, item, now);
      this.#replicaEnded(r, now);
    }
    this.requestDispatch();
    this.#maybeIdle();
  }

  /** After a replica's end is journaled: sibling leases taken back, reputation mirrored, the task's end announced. */
  #replicaEnded(r: Omit<ReplicaEnded, 'attempt'> & { attempt?: Ended }, now: number): void {
    for (const leaseId of r.cancelLeases) this.#takeBack(leaseId, 'Enough replicas agreed (or the task ended); this replica is no longer needed.');
    if (r.marks.length) this.reputation.applied(r.marks);
    if (r.task) this.#ended(r.task, now);
    else if (r.attempt) this.#metrics.ended(r.attempt, now);
  }

  /** Takes a lease back from its node (the journal already moved on) and tells the node. */
  #takeBack(leaseId: string, reason: string): void {
    const lease = this.leases.get(leaseId);
    if (!lease) return;
    this.leases.delete(leaseId);
    lease.node.release(leaseId);
    if (lease.trace) this.#tracing!.endAttempt(lease.trace, { ok: false, code: 'CANCELLED' });
    lease.node.send({ type: 'task.cancel', taskId: lease.taskId, reason });
  }

  /** Fails every lease past its time: LEASE_EXPIRED, or NODE_LOST when its node is gone. */
  expireLeases(): number {
    const now = this.#opts.clock.now();
    const expired: LeaseInfo[] = [];
    for (const lease of this.leases.values()) if (lease.expiresAt <= now) expired.push(lease);
    if (expired.length) this.#failLeases(expired, now);
    return expired.length;
  }

  /**
   * The stall rule: a connected node that heartbeats but has sent no result or progress on its
   * leases for longer than the longest task budget it holds plus stallGraceMs loses them all
   * (LEASE_STALLED: the tasks go back to the queue, an infrastructure failure of that node).
   * Answers how many leases were taken back.
   */
  reclaimStalled(): number {
    const now = this.#opts.clock.now();
    const grace = this.#opts.stallGraceMs;
    const stalled: LeaseInfo[] = [];
    for (const node of this.nodes.values()) {
      if (!node.connected || node.leases.size === 0) continue;
      const quiet = now - node.lastWorkAt;
      if (quiet <= grace || quiet <= node.stallAfter(grace)) continue;
      this.#journal.event('node_stalled', null, node.id, { leases: node.leases.size, quietMs: quiet });
      stalled.push(...node.leases.values());
    }
    if (stalled.length) this.#failLeases(stalled, now, 'LEASE_STALLED');
    return stalled.length;
  }

  #failLeases(leases: readonly LeaseInfo[], now: number, why?: 'LEASE_STALLED'): void {
    const completions: Completion[] = leases.map((l) => {
      this.leases.delete(l.leaseId);
      l.node.release(l.leaseId);
      const code: ErrorCode = !l.node.connected ? 'NODE_LOST' : (why ?? 'LEASE_EXPIRED');
      if (l.node.connected) {
        l.node.forfeit();
        const reason = code === 'LEASE_STALLED' ? 'The node made no progress on its tasks; they were given back to the queue.' : 'The lease expired; the task was given back to the queue.';
        l.node.send({ type: 'task.cancel', taskId: l.taskId, reason });
      }
      this.#infraFailure(l.node, code, now);
      const message =
        code === 'LEASE_EXPIRED'
          ? `Node ${l.node.id} did not renew lease ${l.leaseId} within ${this.#opts.leaseMs} ms.`
          : code === 'LEASE_STALLED'
            ? `Node ${l.node.id} sent no result or progress on its leases for longer than its tasks' budget plus ${this.#opts.stallGraceMs} ms.`
            : `Node ${l.node.id} disconnected while running the task.`;
      if (l.trace) this.#tracing!.endAttempt(l.trace, { ok: false, code });
      return { taskId: l.taskId, leaseId: l.leaseId, owned: true, outcome: { ok: false, error: errorInfo(code, message, { nodeId: l.node.id, attempt: l.attempt }) } };
    });
    const replicaAt: number[] = [];
    for (let i = 0; i < leases.length; i++) if (leases[i]!.replica !== undefined) replicaAt.push(i);
    if (replicaAt.length) {
      for (const r of this.#journal.completeReplicas(replicaAt.map((i) => completions[i]!))) if (r) this.#replicaEnded(r, now);
    }
    const ended = this.#journal.complete(replicaAt.length ? completions.filter((_, i) => leases[i]!.replica === undefined) : completions);
    for (const e of ended) if (e) this.#ended(e, now);
    this.requestDispatch();
    this.#maybeIdle();
  }

  #infraFailure(node: NodeSession, code: string, now: number): void {
    if (node.circuit.failure(now)) {
      this.#journal.event('circuit_open', null, node.id, { code, opens: node.circuit.opens });
    }
  }

  /** The socket closed: leases wait nodeGraceMs for a reconnect, then fail NODE_LOST. */
  disconnected(node: NodeSession): void {
    const now = this.#opts.clock.now();
    node.socket = null;
    node.disconnectedAt = now;
    this.#metrics.nodeDisconnected(node.draining ? 'drained' : 'lost');
    // After stop() the journal may be closed; the leases stay in it and are requeued on the next start.
    if (this.#stopped) return;
    this.#journal.event('node_disconnected', null, node.id, { leases: node.leases.size });
    if (this.#opts.nodeGraceMs <= 0) {
      if (node.leases.size) this.#failLeases([...node.leases.values()], now);
      return;
    }
    const until = now + this.#opts.nodeGraceMs;
    for (const l of node.leases.values()) l.expiresAt = Math.min(l.expiresAt, until);
  }

  /** Cancels a task; a leased one is told to its node. Answers false if the task was not queued or leased. */
  cancel(taskId: TaskId, reason: string): boolean {
    const res = this.#journal.cancel(taskId, reason);
    if (!res) return false;
    const now = this.#opts.clock.now();
    if (res.leaseId) {
      const lease = this.leases.get(res.leaseId);
      if (lease) {
        this.leases.delete(res.leaseId);
        lease.node.release(res.leaseId);
        if (lease.trace) this.#tracing!.endAttempt(lease.trace, { ok: false, code: 'CANCELLED' });
        lease.node.send({ type: 'task.cancel', taskId, reason });
      } else {
        // Granted by another coordinator: it tells its node.
        this.bus?.publish({ t: 'cancel', taskId, leaseId: res.leaseId, reason });
      }
    }
    for (const leaseId of res.replicaLeases ?? []) {
      if (this.leases.has(leaseId)) this.#takeBack(leaseId, reason);
      else this.bus?.publish({ t: 'cancel', taskId, leaseId, reason });
    }
    const record = this.#journal.getTask(taskId);
    if (record) {
      this.#ended(
        { taskId, state: 'cancelled', kind: record.kind, attempts: record.attempts, createdAt: record.createdAt, nodeId: record.nodeId, webhook: record.webhook, errorCode: null },
        now,
      );
    }
    this.#maybeIdle();
    return true;
  }

  /** The allocator's cap on the leases a node holds at once (null: none beyond the coordinator's); held leases are kept. */
  setCaps(node: NodeSession, caps: { maxLeases: number | null }): void {
    node.maxLeases = caps.maxLeases;
    this.#journal.event('node_caps', null, node.id, { maxLeases: caps.maxLeases });
    this.requestDispatch();
  }

  drain(node: NodeSession, reason: string): void {
    node.draining = true;
    node.send({ type: 'drain', reason });
    this.#journal.event('node_drain', null, node.id, { reason });
  }

  #ended(e: Ended, now: number): void {
    this.#metrics.ended(e, now);
    for (const listener of this.endedListeners) listener(e, now);
    const terminal = e.state !== 'queued' && e.state !== 'leased';
    this.#watch.forget(e.taskId, terminal);
    const watched = this.#watch.has(e.taskId);
    if (watched) {
      this.#watch.emit(e.taskId, { type: 'state', state: e.state, attempts: e.attempts, nodeId: e.nodeId, at: now, error: e.errorCode });
    }
    if (!terminal) return;
    if (e.state === 'dead') this.#journal.event('dead_letter', e.taskId, e.nodeId, { code: e.errorCode, attempts: e.attempts });
    // A trained adapter is in the registry: its checkpoint is of no more use (a cancelled or failed run keeps its last).
    if (e.kind === 'train' && e.state === 'succeeded') this.#journal.dropCheckpoint(e.taskId);
    if (!watched && !e.webhook) return;
    const record = this.#journal.getTask(e.taskId);
    if (!record) return;
    if (watched) this.#watch.emit(e.taskId, { type: 'record', record });
    if (e.webhook) this.#webhooks.send(e.webhook, record);
  }

  #maybeIdle(): void {
    if (this.leases.size === 0 && this.#pending.length === 0 && this.#pendingReplicas.length === 0 && !this.#flushing && this.onIdle) this.onIdle();
  }
}

/**
 * The router: among nodes with room that can run the kind, prefer one that has
 * the model loaded with the task's adapter, then the model loaded, then merely stored (generate/train), then the most free workers (a task there
 * starts at once), then the most free queue space, then the best reputation.
 */
function pickNode(
  kind: TaskKind,
  model: string | null,
  adapter: string | null,
  free: Map<NodeSession, Slots>,
  avoid: ReadonlySet<string> | null,
  need: number | null,
): NodeSession | null {
  let best: NodeSession | null = null;
  let bestCached = -1;
  let bestIdle = -1;
  let bestRoom = -1;
  let bestRep = -1;
  for (const [node, s] of free) {
    const room = roomFor(kind, s);
    if (room <= 0 || !node.fits(kind, model)) continue;
    if (avoid !== null && avoid.has(node.id)) continue;
    if (need !== null && !node.canHold(need)) continue;
    const cached = node.holds(model, adapter);
    const idle = Math.min(s.idle, room);
    const rep = node.reputation.score;
    // The first criterion that differs decides (called once per task: no allocation here).
    if ((cached - bestCached || idle - bestIdle || room - bestRoom || rep - bestRep) > 0) {
      best = node;
      bestCached = cached;
      bestIdle = idle;
      bestRoom = room;
      bestRep = rep;
    }
  }
  return best;
}

/**
 * A node with a reputation below 1 gets that share of its room: of its agent window (less what it holds)
 * and of its generate sequences; none when it is excluded (weight 0).
 */
function weigh(node: NodeSession, s: Slots, weight: number, prefetch: number): void {
  if (weight <= 0) {
    s.total = s.heavy = s.idle = s.generate = 0;
    return;
  }
  const allowed = Math.max(0, Math.ceil(node.earnedWindow(prefetch) * weight) - node.leases.size);
  if (s.total > allowed) s.total = allowed;
  if (s.heavy > s.total) s.heavy = s.total;
  if (s.idle > s.total) s.idle = s.total;
  s.generate = Math.min(s.generate, Math.ceil(s.generate * weight));
}

function completionOf(item: ResultMessage['results'][number]): Completion {
  return {
    taskId: item.taskId as TaskId,
    leaseId: item.leaseId,
    outcome: item.ok ? { ok: true, result: item.result } : { ok: false, error: { ...item.error, code: item.error.code as ErrorCode } },
  };
}

/** Tasks of this kind a node's slots take now. */
function roomFor(kind: TaskKind, s: Slots): number {
  const room = kind === 'agent' ? s.total : kind === 'generate' ? s.generate : Math.min(s.total, s.heavy);
  return Math.min(room, s.cap);
}

/** The adapter a generate task (or an agent calling a model) names; the payload is parsed only when it mentions one. */
function adapterOf(row: ReadyRow): string | null {
  if ((row.kind !== 'generate' && (row.kind !== 'agent' || row.model === null)) || !row.payload.includes('"adapter"')) return null;
  try {
    const adapter = (JSON.parse(row.payload) as { adapter?: unknown }).adapter;
    return typeof adapter === 'string' ? adapter : null;
  } catch {
    return null;
  }
}

const TIMEOUT_KEY = '"timeoutMs":';

/**
 * How long the task may run on a node without a result, for the stall rule: an agent task's
 * `limits.timeoutMs` (the submit route writes the effective limits into the payload; the last
 * occurrence is read, so a key of that name inside the input can only lengthen its own task's
 * budget, never past 2 × MODEL_TASK_BUDGET_MS), a generate or train task MODEL_TASK_BUDGET_MS.
 */
function budgetOf(row: ReadyRow): number {
  if (row.kind !== 'agent') return MODEL_TASK_BUDGET_MS;
  const at = row.payload.lastIndexOf(TIMEOUT_KEY);
  if (at < 0) return DEFAULT_AGENT_LIMITS.timeoutMs;
  const n = Number.parseInt(row.payload.slice(at + TIMEOUT_KEY.length, at + TIMEOUT_KEY.length + 16), 10);
  return Number.isFinite(n) && n > 0 ? Math.min(n, MODEL_TASK_BUDGET_MS * 2) : DEFAULT_AGENT_LIMITS.timeoutMs;
}

/**
 * The Assignment as JSON, with the stored payload text spliced in rather than parsed and printed again.
 * `traceparent` (tracing on) is one the coordinator made: hex and dashes only.
 */
function assignmentJson(row: ReadyRow, leaseId: string, traceparent: string | undefined, checkpoint: Assignment['checkpoint'] | null = null): string {
  const module = row.module_hash ? `,"module":{"sha256":"${row.module_hash}","size":${row.module_size ?? 0}}` : '';
  const trace = traceparent === undefined ? '' : `,"traceparent":"${traceparent}"`;
  const cp = checkpoint ? `,"checkpoint":${JSON.stringify(checkpoint)}` : '';
  return `{"taskId":"${row.id}","leaseId":"${leaseId}","attempt":${row.attempts + 1},"kind":"${row.kind}","payload":${row.payload}${module},"deadline":${row.deadline ?? 'null'}${trace}${cp}}`;
}

/** `task.result` spans: one per traced result of a journal flush that began at `t0` (wall clock) and ended now. */
function recordResults(tracing: Tracing, pending: readonly PendingResult[], ended: ReadonlyArray<Ended | null>, t0: number): void {
  const t1 = Date.now();
  for (let i = 0; i < pending.length; i++) {
    const trace = pending[i]!.trace;
    if (trace) tracing.recorded(trace, t0, t1, ended[i]?.state ?? null);
  }
}

function mib(bytes: number): string {
  return bytes < 0 ? 'unknown' : `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
}
