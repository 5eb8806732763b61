/**
 * One connected browser node as the coordinator sees it: what it can run, the
 * leases it holds, its health, its circuit breaker and its reputation.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { WebSocket } from 'ws';
import type { Capabilities, CoordinatorMessage, NodeId, NodeMetrics, TaskId, TaskKind } from '../shared';
import type { Clock } from './journal';
import { NodeReputation } from './reputation';
import type { AttemptTrace } from './tracing';

/**
 * Room on one node for a dispatch round: `total` agent or train tasks, of which at
 * most `heavy` train; `idle` of them would start on a free worker at once (the rest
 * wait in the node's queue); and `generate` tasks, held by the node's batcher beside them.
 */
export interface Slots {
  total: number;
  heavy: number;
  idle: number;
  /** generate tasks: the sequences the node decodes at once (continuous batching), less those it holds. */
  generate: number;
  /** Leases of any kind still under the node's lease cap (coordinator's maxLeasesPerNode, the allocator's maxLeases). */
  cap: number;
}

const NO_SLOTS: Readonly<Slots> = { total: 0, heavy: 0, idle: 0, generate: 0, cap: 0 };

/** The coordinator's bounds on what one node may hold, whatever it advertises. */
export interface NodeLimits {
  /** Agent tasks queued per worker beyond those running, at most (caps an advertised `queueDepth`). */
  maxQueuePerWorker: number;
  /** Leases of every kind one node may hold at once. */
  maxLeasesPerNode: number;
}

/** Most lease ids a node remembers having given back (a late result on one is a duplicate, not a foreign lease). */
const RELEASED_MEMORY = 8192;

export type CircuitState = 'closed' | 'open' | 'half-open';

/** Errors that say the node (not the agent) failed; they count against its circuit. */
export const INFRA_CODES: ReadonlySet<string> = new Set([
  'LEASE_EXPIRED',
  'NODE_LOST',
  'WORKER_CRASHED',
  'PROTOCOL_ERROR',
  'INTERNAL',
  'GPU_DEVICE_LOST',
  'GPU_OUT_OF_MEMORY',
  'NODE_RESOURCE_EXHAUSTED',
  'LEASE_STALLED',
]);

export interface CircuitOptions {
  /** Consecutive infrastructure failures that open the circuit. */
  threshold: number;
  /** How long it stays open before one trial task is let through. */
  cooldownMs: number;
}

/**
 * Closed → (threshold consecutive infrastructure failures) → open → (cool-down)
 * → half-open: one task; success closes it, another failure opens it again.
 */
export class Circuit {
  #state: CircuitState = 'closed';
  #failures = 0;
  #openedAt = 0;
  readonly #opts: CircuitOptions;
  opens = 0;

  constructor(opts: CircuitOptions) {
    this.#opts = opts;
  }

  state(now: number): CircuitState {
    if (this.#state === 'open' && now - this.#openedAt >= this.#opts.cooldownMs) this.#state = 'half-open';
    return this.#state;
  }

  get failures(): number {
    return this.#failures;
  }

  /** Called after each change (the coordinator keeps the circuit in the journal). */
  onChange: (() => void) | null = null;

  success(): void {
    if (this.#state === 'closed' && this.#failures === 0) return;
    this.#state = 'closed';
    this.#failures = 0;
    this.onChange?.();
  }

  /** Answers true when this failure opened the circuit. */
  failure(now: number): boolean {
    this.#failures++;
    const state = this.state(now);
    let opened = false;
    if (state === 'half-open' || (state === 'closed' && this.#failures >= this.#opts.threshold)) {
      this.#state = 'open';
      this.#openedAt = now;
      this.opens++;
      opened = true;
    }
    this.onChange?.();
    return opened;
  }

  saved(): SavedCircuit {
    return { state: this.#state, failures: this.#failures, openedAt: this.#openedAt, opens: this.opens };
  }

  /** Takes up a circuit kept from before (a restart, or another coordinator the node was connected to). */
  restore(s: SavedCircuit): void {
    this.#state = s.state === 'open' || s.state === 'half-open' ? s.state : 'closed';
    this.#failures = Math.max(0, Math.floor(s.failures));
    this.#openedAt = s.openedAt;
    this.opens = Math.max(0, Math.floor(s.opens));
  }
}

/** Adds `id` to a set of recent lease ids, forgetting the oldest past RELEASED_MEMORY. */
function remember(set: Set<string>, id: string): void {
  set.add(id);
  if (set.size > RELEASED_MEMORY) set.delete(set.values().next().value!);
}

export interface SavedCircuit {
  state: CircuitState;
  failures: number;
  openedAt: number;
  opens: number;
}

export interface LeaseInfo {
  leaseId: string;
  taskId: TaskId;
  node: NodeSession;
  attempt: number;
  kind: TaskKind;
  expiresAt: number;
  /** Set when the lease runs one replica of a replicated task (server/quorum.ts). */
  replica?: number;
  /** How long the task may run on the node without a result (agent: its timeoutMs); the stall rule adds its grace. */
  budgetMs: number;
  /** The model a generate task names (its results' timings are labelled with it). */
  model?: string;
  /** Whose task it is (a tenant's maxLeased counts its leases). */
  tenant: string | null;
  /** The attempt's span, when tracing is on (server/tracing.ts). */
  trace?: AttemptTrace;
  /** Result files sent in parts (task.part) on this lease, by name, until its result names them. */
  parts?: Map<string, ResultPart>;
}

/** A result file arriving in `task.part` messages: the stated size, the bytes so far. */
export interface ResultPart {
  total: number;
  received: number;
  chunks: Uint8Array[];
}

/**
 * A part file as a message states it (`bytes`, `sha256`): its bytes when all of them came and hash so; else
 * `missing` (what came, said for an error) or `mismatch` (they came, and hash otherwise).
 */
export function wholePart(file: ResultPart | undefined, bytes: number, sha256: string): { bytes: Uint8Array } | { missing: string } | { mismatch: true } {
  if (!file || file.received !== file.total || file.total !== bytes) return { missing: file ? `${file.received} of ${file.total} bytes` : 'none' };
  const whole = file.chunks.length === 1 ? file.chunks[0]! : Buffer.concat(file.chunks);
  return createHash('sha256').update(whole).digest('hex') === sha256.toLowerCase() ? { bytes: whole } : { mismatch: true };
}

export class NodeSession {
  readonly id: NodeId;
  name: string;
  capabilities: Capabilities;
  /** The last heartbeat's figures, bounded (server/metrics.ts nodeReported: values out of bounds dropped). */
  metrics: Partial<NodeMetrics> | null = null;
  socket: WebSocket | null;
  readonly connectedAt: number;
  lastSeen: number;
  /** When the socket closed; null while connected. */
  disconnectedAt: number | null = null;
  draining = false;
  /** Leases held, by lease id. Change them through hold() and release(). */
  readonly leases: ReadonlyMap<string, LeaseInfo> = new Map<string, LeaseInfo>();
  /** Leases of train tasks (GPU work, never prefetched). */
  #heavy = 0;
  /** Leases of generate tasks (batched on the node, up to inference.maxSequences). */
  #generate = 0;
  /** Lease ids given back lately (results, expiry, cancel), oldest first; bounded by RELEASED_MEMORY. */
  readonly #released = new Set<string>();
  /**
   * Agent tasks the node has earned the right to hold queued beyond `maxConcurrent × (prefetch − 1)`:
   * one more per task it finished, back to 0 when it stalls or lets a lease expire (slow start:
   * a node that only takes work never grows its window).
   */
  #credit = 0;
  /** Last result or progress on one of its leases, or when it took its first lease after holding none. */
  lastWorkAt: number;
  /** The allocator's cap on leases held at once (`PUT /v1/nodes/:id/caps`); null: none beyond the coordinator's. */
  maxLeases: number | null = null;
  /** Who joined it: the Principal.id of the join token ('open' without --auth). */
  principal = 'open';
  readonly #secret: Buffer;
  readonly #limits: NodeLimits;
  readonly circuit: Circuit;
  protocolErrors = 0;
  /** Marks from quorums and verdicts (server/reputation.ts); the scheduler attaches the journaled one. */
  reputation: NodeReputation = new NodeReputation(null, 0);
  done = 0;
  failed = 0;

  constructor(id: NodeId, name: string, capabilities: Capabilities, socket: WebSocket, clock: Clock, circuit: CircuitOptions, limits: NodeLimits) {
    this.id = id;
    this.name = name;
    this.capabilities = capabilities;
    this.socket = socket;
    this.connectedAt = clock.now();
    this.lastSeen = this.connectedAt;
    this.lastWorkAt = this.connectedAt;
    this.circuit = new Circuit(circuit);
    this.#limits = limits;
    this.#secret = randomBytes(32);
  }

  /** The resume secret, sent once in `welcome`; never in view() or logs. */
  secret(): string {
    return this.#secret.toString('base64url');
  }

  /** Whether `presented` is this node's resume secret (constant time over the SHA-256 of both). */
  secretMatches(presented: string | undefined): boolean {
    if (typeof presented !== 'string' || presented.length === 0) return false;
    const a = createHash('sha256').update(presented, 'utf8').digest();
    const b = createHash('sha256').update(this.#secret.toString('base64url'), 'utf8').digest();
    return timingSafeEqual(a, b);
  }

  get connected(): boolean {
    return this.socket !== null;
  }

  healthy(now: number, heartbeatIntervalMs: number): boolean {
    return this.connected && now - this.lastSeen <= 3 * heartbeatIntervalMs;
  }

  hold(lease: LeaseInfo, now: number): void {
    if (this.leases.size === 0) this.lastWorkAt = now;
    (this.leases as Map<string, LeaseInfo>).set(lease.leaseId, lease);
    if (lease.kind === 'train') this.#heavy++;
    else if (lease.kind === 'generate') this.#generate++;
  }

  release(leaseId: string): LeaseInfo | undefined {
    const lease = this.leases.get(leaseId);
    if (lease) {
      (this.leases as Map<string, LeaseInfo>).delete(leaseId);
      if (lease.kind === 'train') this.#heavy--;
      else if (lease.kind === 'generate') this.#generate--;
      remember(this.#released, leaseId);
    }
    return lease;
  }

  /** Lease ids this coordinator tried to adopt from another (server/scheduler.ts); bounded by RELEASED_MEMORY. */
  readonly #adoptTried = new Set<string>();

  /** Whether adopting `leaseId` was tried before; notes that it is being tried now. */
  adoptTried(leaseId: string): boolean {
    if (this.#adoptTried.has(leaseId)) return true;
    remember(this.#adoptTried, leaseId);
    return false;
  }

  /** The lease was this node's once (a late or repeated report on it is a duplicate, not a forgery). */
  heldOnce(leaseId: string): boolean {
    return this.#released.has(leaseId);
  }

  /** A task it held ended by its own report (not an infrastructure failure): its window may grow by one. */
  earned(): void {
    if (this.#credit < this.#limits.maxLeasesPerNode) this.#credit++;
  }

  /** It stalled or let a lease expire: back to the starting window. */
  forfeit(): void {
    this.#credit = 0;
  }

  /** Leases of every kind it may hold at once: the coordinator's cap and the allocator's. */
  leaseCap(): number {
    return Math.min(this.#limits.maxLeasesPerNode, this.maxLeases ?? Infinity);
  }

  /** What it may run without a result before the stall rule takes its leases: the longest budget it holds plus `graceMs`. */
  stallAfter(graceMs: number): number {
    let budget = 0;
    for (const l of this.leases.values()) if (l.budgetMs > budget) budget = l.budgetMs;
    return budget + graceMs;
  }

  /**
   * Agent tasks the node may hold at once, as asked: its workers plus the queue it asked
   * for (`queueDepth`, at most maxQueuePerWorker per worker); a node that does not say gets
   * `maxConcurrent × (prefetch − 1)` queued, as before the field existed.
   */
  agentWindow(prefetch: number): number {
    const { maxConcurrent, queueDepth } = this.capabilities;
    const asked = queueDepth ?? maxConcurrent * Math.max(0, prefetch - 1);
    return maxConcurrent + Math.min(asked, maxConcurrent * this.#limits.maxQueuePerWorker);
  }

  /**
   * Agent tasks it may hold now: the window it asked for, but queued beyond its workers only
   * `maxConcurrent × (prefetch − 1)` plus what it earned by finishing tasks, and never more than its lease cap.
   */
  earnedWindow(prefetch: number): number {
    const max = this.capabilities.maxConcurrent;
    const earned = max + max * Math.max(0, prefetch - 1) + this.#credit;
    return Math.min(this.agentWindow(prefetch), earned, this.leaseCap());
  }

  /**
   * How many more tasks the node can take now: `total` of any kind (agent tasks
   * fill the agentWindow so the pool never waits for the next batch), `heavy` of
   * generate/train (at most maxConcurrent, never queued) and `idle`, the free
   * workers (maxConcurrent − leases held). All 0 when draining, unhealthy or the
   * circuit is open; one trial task when it is half-open.
   */
  freeSlots(now: number, heartbeatIntervalMs: number, prefetch: number): Slots {
    if (this.draining || !this.healthy(now, heartbeatIntervalMs)) return NO_SLOTS;
    const circuit = this.circuit.state(now);
    if (circuit === 'open') return NO_SLOTS;
    if (circuit === 'half-open') {
      // One trial task: an agent task where the node runs them, else one generate task.
      if (this.leases.size > 0 || this.leaseCap() < 1) return NO_SLOTS;
      return this.capabilities.kinds.includes('agent') ? { total: 1, heavy: 1, idle: 1, generate: 0, cap: 1 } : { total: 0, heavy: 0, idle: 0, generate: 1, cap: 1 };
    }
    const max = this.capabilities.maxConcurrent;
    const sequences = this.capabilities.inference?.maxSequences ?? 0;
    // generate leases are held by the node's batcher, not its workers: they have their own room.
    const held = this.leases.size - this.#generate;
    const cap = Math.max(0, this.leaseCap() - this.leases.size);
    const total = Math.min(cap, Math.max(0, this.earnedWindow(prefetch) - held));
    return {
      total,
      // One training run at a time: it takes the node's GPU (a second would only wait behind it, sending no progress).
      heavy: Math.min(total, Math.max(0, 1 - this.#heavy)),
      idle: Math.min(total, Math.max(0, max - held)),
      generate: Math.min(cap, Math.max(0, sequences - this.#generate)),
      cap,
    };
  }

  /** Whether the node runs tasks of this kind; an agent task naming a model (`model`) also needs runsModelAgents. */
  fits(kind: TaskKind, model: string | null = null): boolean {
    if (!this.capabilities.kinds.includes(kind)) return false;
    if (kind === 'agent' && model !== null && !this.runsModelAgents()) return false;
    if (kind === 'train' && !this.capabilities.webgpu) return false;
    if (kind === 'generate' && !this.capabilities.inference) return false;
    return true;
  }

  /** Whether the node runs agents that call its model (agent_model imports): JSPI and the inference runtime. */
  runsModelAgents(): boolean {
    return this.capabilities.jspi === true && this.capabilities.inference !== undefined;
  }

  /** Whether `bytes` fit the memory budget the node advertises (true when it advertises none: it decides). */
  canHold(bytes: number): boolean {
    const budget = this.capabilities.inference?.memoryBudgetBytes;
    return budget === undefined || bytes <= budget;
  }


  /** 3: the model is loaded with the adapter on its GPU; 2: loaded; 1: in the weight store; 0: neither. */
  holds(model: string | null, adapter: string | null = null): number {
    if (model === null) return 0;
    const loaded = this.capabilities.inference?.models.find((m) => m.name === model && m.loaded);
    if (loaded) return adapter !== null && loaded.adapters?.includes(adapter) ? 3 : 2;
    return this.capabilities.models.includes(model) ? 1 : 0;
  }

  send(msg: CoordinatorMessage): void {
    this.sendRaw(JSON.stringify(msg));
  }

  sendRaw(text: string): void {
    const s = this.socket;
    if (s && s.readyState === s.OPEN) s.send(text);
  }

  /** Agent tasks the node may hold queued beyond its workers (advertised, or the old default). */
  queueDepth(prefetch: number): number {
    return this.agentWindow(prefetch) - this.capabilities.maxConcurrent;
  }

  view(now: number, heartbeatIntervalMs: number, prefetch: number) {
    const max = this.capabilities.maxConcurrent;
    const held = this.leases.size;
    const busy = Math.min(held, max);
    return {
      id: this.id,
      name: this.name,
      connected: this.connected,
      healthy: this.healthy(now, heartbeatIntervalMs),
      draining: this.draining,
      connectedAt: this.connectedAt,
      lastSeen: this.lastSeen,
      capabilities: this.capabilities,
      /** Workers (maxConcurrent) and the agent tasks it may hold queued beyond them. */
      workers: max,
      queueDepth: this.queueDepth(prefetch),
      /** Agent tasks it may hold now: its window, as earned by finishing tasks (slow start), under its lease cap. */
      window: this.earnedWindow(prefetch),
      /** Leases of every kind it may hold: the coordinator's cap, and the allocator's (`maxLeases`, null when unset). */
      caps: { leaseCap: this.leaseCap(), maxLeases: this.maxLeases },
      /** Leases held: running (at most one per worker) plus queued on the node. */
      held,
      running: busy,
      queued: held - busy,
      /** Share of the workers busy, 0–1. */
      load: busy / max,
      metrics: this.metrics,
      circuit: { state: this.circuit.state(now), consecutiveFailures: this.circuit.failures, opens: this.circuit.opens },
      reputation: this.reputation,
      tasksDone: this.done,
      tasksFailed: this.failed,
    };
  }
}
