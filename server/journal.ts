/**
 * The journal: every task, agent version, module and notable event, in one
 * SQLite file in WAL mode. Submits commit with `synchronous=FULL` (the WAL is
 * fsynced, so a task is on disk before the 202 whether the process or the OS
 * dies); attempt records (leases, results) with `attemptSync`, NORMAL by
 * default: safe against a process crash, and an OS crash only makes the last
 * attempts run again. The hot path (insert batch, lease batch, complete batch)
 * runs prepared statements inside one transaction per batch.
 */
import { randomBytes } from 'node:crypto';
import type { SavedCircuit } from './node';
import { openDb, SqliteDb, type AsyncStmt, type SqlDb, type Stmt } from './sql';
import {
  AppError,
  ERRORS,
  LIMITS,
  WAIT_MESSAGES,
  isErrorCode,
  type ErrorInfo,
  type NodeId,
  type TaskId,
  type TaskKind,
  type TaskRecord,
  type TaskResult,
  type TaskSpec,
  type TaskState,
  type WaitReason,
} from '../shared';
import { decide, outcomeDigest, type ReplicaOutcome, type ReplicaState, type Replication, type ReputationCounts } from './quorum';

export interface Clock {
  now(): number;
}
export const systemClock: Clock = { now: () => Date.now() };

/** Columns of a QueuedRow. */
const QUEUED_COLUMNS = 'id, kind, model, tenant, run_after, updated_at, deadline, wait_reason, wait_since';
/** Most tasks one deadline sweep fails (the next sweep, a second later, takes the rest). */
const MAX_SWEEP = 10_000;

/** Most tenants whose ready tasks one `ready` call reads (with more, calls go round them). */
export const MAX_READY_TENANTS = 64;
/** Rows one set statement of a shared journal inserts, leases or records (its parameters are column arrays). */
const SET_ROWS = 2000;
/**
 * A lease row whose coordinator is dead (silent since the first parameter, and not this one, the second) or
 * unknown (leased before owners were kept).
 */
const ORPHANED = '(coordinator IS NULL OR coordinator NOT IN (SELECT id FROM coordinators WHERE seen_at >= ? OR id = ?))';

/** A task ready to be written: the spec already checked and resolved. */
export interface NewTask {
  id: TaskId;
  kind: TaskKind;
  priority: number;
  maxAttempts: number;
  deadline: number | null;
  idempotencyKey: string | null;
  /** Digest of the submitted spec, compared when the idempotency key repeats. */
  specHash: string | null;
  tenant: string | null;
  webhook: string | null;
  moduleHash: string | null;
  moduleSize: number | null;
  model: string | null;
  payload: TaskSpec['payload'];
  labels: Record<string, string> | null;
  /** Run as replicas on distinct nodes with a quorum (server/quorum.ts); absent or null: once. */
  replication?: Replication | null;
  /** W3C trace context (server/tracing.ts); absent or null: none. */
  traceparent?: string | null;
}

export interface InsertOutcome {
  id: TaskId;
  created: boolean;
}

/** What the scheduler needs to assign a task; `payload` stays raw JSON. */
export interface ReadyRow {
  seq: number;
  id: TaskId;
  kind: TaskKind;
  priority: number;
  attempts: number;
  max_attempts: number;
  deadline: number | null;
  module_hash: string | null;
  module_size: number | null;
  model: string | null;
  payload: string;
  /** When it became ready (submit, or the end of its backoff): the dispatch-latency histogram measures from here. */
  run_after: number;
  /** W3C trace context kept since submit (null for tasks journaled before traces). */
  traceparent: string | null;
  /** Whose task it is (fair sharing between tenants, their maxLeased quota). */
  tenant: string | null;
}

/** A queued task as the scheduler explains its wait: what it needs and the reason last written. */
export interface QueuedRow {
  id: TaskId;
  kind: TaskKind;
  model: string | null;
  tenant: string | null;
  run_after: number;
  updated_at: number;
  deadline: number | null;
  wait_reason: WaitReason | null;
  wait_since: number | null;
}

export interface Lease {
  taskId: TaskId;
  leaseId: string;
  nodeId: NodeId;
  /** Set when this leases one replica of a replicated task. */
  replica?: number;
}

/** A replica ready to run: its task's row, plus the replica and the nodes its siblings hold or ran on. */
export interface ReplicaReadyRow extends ReadyRow {
  replica: number;
  /** Comma-separated node ids of the other replicas leased or done (never the same node twice). */
  avoid: string | null;
}

/** What a replica attempt's end did: the task's end when it was decided, leases to cancel, reputation marks. */
export interface ReplicaEnded {
  /** The replica attempt, for metrics (state 'queued' when it will run again). */
  attempt: Ended;
  /** The task's end when this completion decided it. */
  task: Ended | null;
  /** Leases of sibling replicas no longer needed. */
  cancelLeases: string[];
  marks: ReputationMark[];
}

export interface ReputationMark {
  nodeId: string;
  mark: keyof ReputationCounts;
  delta: number;
}

/** One replica in a task record. */
export interface ReplicaView {
  replica: number;
  state: ReplicaState;
  nodeId: string | null;
  attempts: number;
  /** SHA-256 of the canonical JSON compared (server/quorum.ts comparable()); null until it ends. */
  digest: string | null;
  /** true: part of the quorum; false: outvoted; null: not decided (or never ended). */
  agreed: boolean | null;
  result: unknown;
  error: ErrorInfo | null;
}

export type Outcome = { ok: true; result: unknown } | { ok: false; error: ErrorInfo };

export interface Completion {
  taskId: TaskId;
  leaseId: string;
  outcome: Outcome;
  /**
   * The coordinator itself ends the attempt (the lease expired, its node was lost): it applies only while
   * this coordinator still owns the lease, not once another adopted it (its node reconnected there).
   */
  owned?: boolean;
}

/** A lease another coordinator granted, taken over because its node now speaks to this one. */
export interface AdoptedLease {
  taskId: TaskId;
  leaseId: string;
  kind: TaskKind;
  attempts: number;
  tenant: string | null;
  model: string | null;
  payload: string;
  /** Set when the lease runs one replica of a replicated task. */
  replica?: number;
}

/** A task whose attempt ended: its new state and what metrics and watchers need. */
export interface Ended {
  taskId: TaskId;
  state: TaskState;
  kind: TaskKind;
  attempts: number;
  createdAt: number;
  nodeId: NodeId | null;
  webhook: string | null;
  errorCode: string | null;
}

export interface AgentVersionRow {
  name: string;
  version: string;
  module_hash: string;
  size: number;
  config: string;
  created_at: number;
}

export interface QuotaRow {
  tenant: string;
  max_queued: number | null;
  agent_limits: string | null;
  weight: number | null;
  max_leased: number | null;
}

interface TaskRow {
  id: string;
  kind: TaskKind;
  state: TaskState;
  priority: number;
  attempts: number;
  max_attempts: number;
  run_after: number;
  deadline: number | null;
  lease_id: string | null;
  node_id: string | null;
  idempotency_key: string | null;
  spec_hash: string | null;
  tenant: string | null;
  webhook: string | null;
  module_hash: string | null;
  payload: string;
  labels: string | null;
  result: string | null;
  error: string | null;
  verdict: string | null;
  verdict_reason: string | null;
  created_at: number;
  updated_at: number;
  finished_at: number | null;
  replication: string | null;
  traceparent: string | null;
  model: string | null;
  wait_reason: WaitReason | null;
  wait_since: number | null;
}

/** The task record plus what the coordinator adds to it. */
export interface StoredTask extends TaskRecord {
  moduleHash: string | null;
  labels: Record<string, string> | null;
  webhook: string | null;
  finishedAt: number | null;
  verdict: { verdict: 'pass' | 'fail'; reason: string | null } | null;
  /** How the task is replicated (null: it runs once). */
  replication: Replication | null;
  /** Each replica (GET /v1/tasks/:id of a replicated task only). */
  replicas?: ReplicaView[];
}

/** Schema 6's tables: blob bytes (shared journals keep them, 4 MiB a row), adapter versions, settings, train checkpoints. */
const SCHEMA_6_TABLES = `
CREATE TABLE IF NOT EXISTS blob_chunks (
  sha256 TEXT NOT NULL,
  n INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  PRIMARY KEY (sha256, n)
);
CREATE TABLE IF NOT EXISTS adapter_versions (
  base TEXT NOT NULL,
  name TEXT NOT NULL,
  version INTEGER NOT NULL,
  meta TEXT NOT NULL,
  config BLOB NOT NULL,
  weights BLOB NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (base, name, version)
);
CREATE TABLE IF NOT EXISTS settings (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS train_checkpoints (
  task_id TEXT PRIMARY KEY,
  step INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  bytes BLOB NOT NULL,
  created_at INTEGER NOT NULL
);`;

/**
 * Schema 6's indexes: terminal tasks whose webhook is not delivered yet (or given up), what the delivery sweep
 * reads; replica leases by id (adopt). And the ready indexes hold queued rows only (a lease or a result then
 * touches no entry of theirs: the PostgreSQL server's main cost per task), leased rows by coordinator beside them.
 */
const SCHEMA_6_INDEXES = `CREATE INDEX IF NOT EXISTS tasks_webhooks ON tasks (finished_at) WHERE webhook IS NOT NULL AND webhook_done IS NULL;
  CREATE INDEX IF NOT EXISTS task_replicas_lease ON task_replicas (lease_id) WHERE lease_id IS NOT NULL;
  DROP INDEX IF EXISTS tasks_fair;
  DROP INDEX IF EXISTS tasks_age;
  CREATE INDEX tasks_fair ON tasks (kind, tenant, priority DESC, seq) WHERE state = 'queued';
  CREATE INDEX tasks_age ON tasks (kind, tenant, seq) WHERE state = 'queued';
  CREATE INDEX IF NOT EXISTS tasks_leased ON tasks (coordinator) WHERE state = 'leased'`;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS tasks (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  state TEXT NOT NULL,
  priority INTEGER NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  run_after INTEGER NOT NULL,
  deadline INTEGER,
  lease_id TEXT,
  node_id TEXT,
  idempotency_key TEXT UNIQUE,
  spec_hash TEXT,
  tenant TEXT,
  webhook TEXT,
  module_hash TEXT,
  module_size INTEGER,
  model TEXT,
  payload TEXT NOT NULL,
  labels TEXT,
  result TEXT,
  error TEXT,
  verdict TEXT,
  verdict_reason TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  finished_at INTEGER,
  replication TEXT,
  traceparent TEXT,
  wait_reason TEXT,
  wait_since INTEGER,
  coordinator TEXT,
  webhook_done INTEGER,
  webhook_claim INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_fair ON tasks (kind, tenant, priority DESC, seq) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS tasks_age ON tasks (kind, tenant, seq) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS tasks_deadline ON tasks (deadline) WHERE deadline IS NOT NULL AND state = 'queued';
CREATE INDEX IF NOT EXISTS tasks_tenant ON tasks (tenant, state) WHERE tenant IS NOT NULL;
CREATE TABLE IF NOT EXISTS modules (
  sha256 TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS datasets (
  sha256 TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  conversations INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dataset_owners (
  sha256 TEXT NOT NULL REFERENCES datasets (sha256),
  tenant TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (tenant, sha256)
);
CREATE TABLE IF NOT EXISTS blobs (
  sha256 TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS blob_owners (
  sha256 TEXT NOT NULL REFERENCES blobs (sha256),
  tenant TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (tenant, sha256)
);
CREATE TABLE IF NOT EXISTS agent_versions (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  module_hash TEXT NOT NULL REFERENCES modules (sha256),
  config TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (name, version)
);
CREATE TABLE IF NOT EXISTS agent_verdicts (
  name TEXT NOT NULL,
  version TEXT NOT NULL,
  pass INTEGER NOT NULL DEFAULT 0,
  fail INTEGER NOT NULL DEFAULT 0,
  PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS quotas (
  tenant TEXT PRIMARY KEY,
  max_queued INTEGER,
  agent_limits TEXT,
  weight REAL,
  max_leased INTEGER,
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS task_replicas (
  task_id TEXT NOT NULL,
  idx INTEGER NOT NULL,
  state TEXT NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  run_after INTEGER NOT NULL,
  lease_id TEXT,
  node_id TEXT,
  outcome TEXT,
  digest TEXT,
  agreed INTEGER,
  error TEXT,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  coordinator TEXT,
  PRIMARY KEY (task_id, idx)
);
CREATE INDEX IF NOT EXISTS task_replicas_ready ON task_replicas (state, run_after);
CREATE TABLE IF NOT EXISTS node_reputation (
  node_id TEXT PRIMARY KEY,
  agreed INTEGER NOT NULL DEFAULT 0,
  outvoted INTEGER NOT NULL DEFAULT 0,
  pass INTEGER NOT NULL DEFAULT 0,
  fail INTEGER NOT NULL DEFAULT 0,
  secret_sha256 TEXT,
  updated_at INTEGER NOT NULL,
  circuit_state TEXT,
  circuit_failures INTEGER NOT NULL DEFAULT 0,
  circuit_opened_at INTEGER,
  circuit_opens INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS coordinators (
  id TEXT PRIMARY KEY,
  started_at INTEGER NOT NULL,
  seen_at INTEGER NOT NULL
);
${SCHEMA_6_TABLES}
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  type TEXT NOT NULL,
  task_id TEXT,
  node_id TEXT,
  data TEXT
);
`;

/**
 * Records a failed attempt: retryable codes go back to `queued` with full-jitter backoff (integer arithmetic in
 * millionths, so both stores truncate alike) until the attempts run out (then `dead`); other codes end it `failed`.
 */
const FAIL_SQL = `
      UPDATE tasks SET
        state = CASE WHEN @retryable = 1 AND attempts < max_attempts THEN 'queued'
                     WHEN @retryable = 1 THEN 'dead' ELSE 'failed' END,
        run_after = CASE WHEN @retryable = 1 AND attempts < max_attempts
          THEN CAST(@now AS BIGINT) + CAST(@jitter AS BIGINT) * (CASE WHEN CAST(@cap AS BIGINT) < CAST(@base AS BIGINT) * (CAST(1 AS BIGINT) << CAST(attempts - 1 AS INTEGER))
            THEN CAST(@cap AS BIGINT) ELSE CAST(@base AS BIGINT) * (CAST(1 AS BIGINT) << CAST(attempts - 1 AS INTEGER)) END) / 1000000 ELSE run_after END,
        finished_at = CASE WHEN @retryable = 1 AND attempts < max_attempts THEN NULL ELSE CAST(@now AS BIGINT) END,
        error = @error, lease_id = NULL, updated_at = @now
      WHERE id = @id AND lease_id = @leaseId AND state = 'leased' AND (CAST(@owner AS TEXT) IS NULL OR coordinator = @owner)
      RETURNING state, kind, attempts, created_at, node_id, webhook`;

/**
 * Inserts queued tasks from column arrays (PostgreSQL, unnest: the same statement text for any count, so the
 * server parses and plans it once); a repeated idempotency key inserts nothing. Answers the ids inserted.
 */
const INSERT_SET_SQL = `INSERT INTO tasks (id, kind, state, priority, attempts, max_attempts, run_after, deadline, idempotency_key,
    spec_hash, tenant, webhook, module_hash, module_size, model, payload, labels, created_at, updated_at, replication, traceparent)
  SELECT v.id, v.kind, 'queued', v.priority, 0, v.max_attempts, CAST(? AS BIGINT), v.deadline, v.idempotency_key, v.spec_hash,
    v.tenant, v.webhook, v.module_hash, v.module_size, v.model, v.payload, v.labels, CAST(? AS BIGINT), CAST(? AS BIGINT), NULL, v.traceparent
  FROM unnest(CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS BIGINT[]), CAST(? AS BIGINT[]), CAST(? AS BIGINT[]), CAST(? AS TEXT[]),
    CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS BIGINT[]), CAST(? AS TEXT[]), CAST(? AS TEXT[]),
    CAST(? AS TEXT[]), CAST(? AS TEXT[]))
    AS v (id, kind, priority, max_attempts, deadline, idempotency_key, spec_hash, tenant, webhook, module_hash, module_size, model,
      payload, labels, traceparent)
  ON CONFLICT (idempotency_key) DO NOTHING RETURNING id`;

/** INSERT_SET_SQL for `tasks` (none replicated), a statement per SET_ROWS. */
function insertSetStmts(tasks: readonly NewTask[], now: number): AsyncStmt[] {
  const out: AsyncStmt[] = [];
  for (let i = 0; i < tasks.length; i += SET_ROWS) {
    const part = tasks.slice(i, i + SET_ROWS);
    const col = <V>(f: (t: NewTask) => V): V[] => part.map(f);
    out.push({
      sql: INSERT_SET_SQL,
      params: [
        now,
        now,
        now,
        col((t) => t.id),
        col((t) => t.kind),
        col((t) => t.priority),
        col((t) => t.maxAttempts),
        col((t) => t.deadline),
        col((t) => storedKey(t.tenant, t.idempotencyKey)),
        col((t) => t.specHash),
        col((t) => t.tenant),
        col((t) => t.webhook),
        col((t) => t.moduleHash),
        col((t) => t.moduleSize),
        col((t) => t.model),
        col((t) => JSON.stringify(t.payload)),
        col((t) => (t.labels ? JSON.stringify(t.labels) : null)),
        col((t) => t.traceparent ?? null),
      ],
    });
  }
  return out;
}

/** Records successful attempts from column arrays (PostgreSQL, unnest): task ids, lease ids, results. */
const SUCCEED_SET_SQL = `UPDATE tasks SET state = 'succeeded', result = v.result, error = NULL, lease_id = NULL, updated_at = ?, finished_at = ?
  FROM unnest(CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS TEXT[])) AS v (task_id, lease, result)
  WHERE tasks.id = v.task_id AND tasks.lease_id = v.lease AND tasks.state = 'leased'
  RETURNING tasks.id, v.lease, tasks.state, tasks.kind, tasks.attempts, tasks.created_at, tasks.node_id, tasks.webhook`;

export class Journal {
  readonly db: SqlDb;
  readonly #clock: Clock;
  /** Results that came from a lease that is no longer current, dropped. */
  duplicatesDropped = 0;
  /** Leased tasks put back in the queue when this journal opened. */
  readonly requeuedOnOpen: number;
  /**
   * Whether other coordinators may share this journal (PostgreSQL). Then each lease names the coordinator that
   * granted it, opening requeues nothing, and the leases of coordinators that stopped beating are swept
   * (reclaimOrphans) by any live one. A SQLite file has one coordinator: opening requeues every lease.
   */
  readonly shared: boolean;
  /** This coordinator's id in the journal: the owner of the leases it grants. */
  readonly coordinatorId: string;
  /** Leased tasks (and replicas) of dead coordinators this one put back in the queue. */
  orphansRequeued = 0;
  /** Whether a dispatch round's claim transaction is open (leaseBatch then runs inside it). */
  #claiming = false;

  readonly #insert: Stmt;
  readonly #byKey: Stmt<[string], { id: string; spec_hash: string | null }>;
  readonly #get: Stmt<[string], TaskRow>;
  readonly #readyOf: Stmt<[string, string, number, number], ReadyRow>;
  readonly #readyNull: Stmt<[string, number, number], ReadyRow>;
  readonly #oldestOf: Stmt<[string, string, number, number], ReadyRow>;
  readonly #oldestNull: Stmt<[string, number, number], ReadyRow>;
  readonly #nextTenant: Stmt<[string, string], { tenant: string }>;
  /** Per kind, the last tenant read in the previous round that had more than MAX_READY_TENANTS (reading goes round). */
  readonly #tenantCursor = new Map<TaskKind, string>();
  readonly #lease: Stmt;
  readonly #expire: Stmt;
  readonly #sweep: Stmt<[number], QueuedRow>;
  readonly #succeed: Stmt;
  readonly #fail: Stmt;
  readonly #cancel: Stmt;
  readonly #counts: Stmt<[], { state: TaskState; n: number }>;
  readonly #tenantPending: Stmt<[string], { n: number }>;
  readonly #event: Stmt;
  readonly #addReplica: Stmt<[string, number, number, number, number]>;
  readonly #readyReplicas: Stmt<[number, number], ReplicaReadyRow>;
  readonly #leaseReplica: Stmt;
  /** Replicated tasks not ended yet: while there are none, the scheduler skips the replica query. */
  #replicatedOpen = 0;

  /**
   * Sync mode of the commits that record attempts (leases, results, expiries).
   * 'full' fsyncs each of them; 'normal' leaves them to the next full commit or
   * checkpoint: a process crash loses nothing either way (WAL), an OS crash may
   * lose the last ones, which puts those tasks back in the queue to run again.
   * Submits, cancels, verdicts and registry writes are always 'full'.
   */
  readonly attemptSync: 'full' | 'normal';
  #sync: 'full' | 'normal' = 'full';

  /** `target`: a SQLite file (':memory:' for a throwaway one), a postgres:// URL, or an open connection. */
  constructor(target: string | SqlDb, clock: Clock = systemClock, opts: { attemptSync?: 'full' | 'normal' } = {}) {
    this.attemptSync = opts.attemptSync ?? 'normal';
    this.db = typeof target === 'string' ? openDb(target) : target;
    this.#clock = clock;
    try {
      if (this.db instanceof SqliteDb) {
        this.db.exec(SCHEMA);
        migrate(this.db);
      } else {
        migratePostgres(this.db);
      }
    } catch (err) {
      if (typeof target === 'string') this.db.close();
      throw err;
    }

    this.shared = !(this.db instanceof SqliteDb);
    // A shared journal's ready reads lock what they answer, for the claim transaction (see claim()).
    const lock = this.shared ? ' FOR UPDATE SKIP LOCKED' : '';
    this.#insert = this.db.prepare(`
      INSERT INTO tasks (id, kind, state, priority, attempts, max_attempts, run_after, deadline, idempotency_key,
        spec_hash, tenant, webhook, module_hash, module_size, model, payload, labels, created_at, updated_at, replication, traceparent)
      VALUES (@id, @kind, @state, @priority, 0, @maxAttempts, @now, @deadline, @idempotencyKey,
        @specHash, @tenant, @webhook, @moduleHash, @moduleSize, @model, @payload, @labels, @now, @now, @replication, @traceparent)
      ON CONFLICT (idempotency_key) DO NOTHING`);
    this.#byKey = this.db.prepare('SELECT id, spec_hash FROM tasks WHERE idempotency_key = ?');
    this.#get = this.db.prepare('SELECT * FROM tasks WHERE id = ?');
    const readyColumns = 'seq, id, kind, priority, attempts, max_attempts, deadline, module_hash, module_size, model, payload, run_after, traceparent, tenant';
    this.#readyOf = this.db.prepare(`SELECT ${readyColumns} FROM tasks INDEXED BY tasks_fair
      WHERE state = 'queued' AND kind = ? AND tenant = ? AND run_after <= ? ORDER BY priority DESC, seq LIMIT ?${lock}`);
    this.#readyNull = this.db.prepare(`SELECT ${readyColumns} FROM tasks INDEXED BY tasks_fair
      WHERE state = 'queued' AND kind = ? AND tenant IS NULL AND run_after <= ? ORDER BY priority DESC, seq LIMIT ?${lock}`);
    this.#oldestOf = this.db.prepare(`SELECT ${readyColumns} FROM tasks INDEXED BY tasks_age
      WHERE state = 'queued' AND kind = ? AND tenant = ? AND run_after <= ? ORDER BY seq LIMIT ?${lock}`);
    this.#oldestNull = this.db.prepare(`SELECT ${readyColumns} FROM tasks INDEXED BY tasks_age
      WHERE state = 'queued' AND kind = ? AND tenant IS NULL AND run_after <= ? ORDER BY seq LIMIT ?${lock}`);
    this.#nextTenant = this.db.prepare(`SELECT tenant FROM tasks INDEXED BY tasks_age
      WHERE state = 'queued' AND kind = ? AND tenant > ? ORDER BY tenant LIMIT 1`);
    this.#lease = this.db.prepare(`
      UPDATE tasks SET state = 'leased', lease_id = @leaseId, node_id = @nodeId, attempts = attempts + 1,
        coordinator = @owner, updated_at = @now WHERE id = @taskId AND state = 'queued'`);
    this.#expire = this.db.prepare(`
      UPDATE tasks SET state = 'failed', error = @error, updated_at = @now, finished_at = @now
      WHERE id = @id AND state = 'queued'
      RETURNING id, state, kind, attempts, created_at, node_id, webhook`);
    this.#sweep = this.db.prepare(`
      SELECT ${QUEUED_COLUMNS} FROM tasks INDEXED BY tasks_deadline
      WHERE state = 'queued' AND deadline IS NOT NULL AND deadline < ? LIMIT ${MAX_SWEEP}`);
    this.#succeed = this.db.prepare(`
      UPDATE tasks SET state = 'succeeded', result = @result, error = NULL, lease_id = NULL,
        updated_at = @now, finished_at = @now
      WHERE id = @id AND lease_id = @leaseId AND state = 'leased'
      RETURNING state, kind, attempts, created_at, node_id, webhook`);
    this.#fail = this.db.prepare(FAIL_SQL);
    this.#cancel = this.db.prepare(`
      UPDATE tasks SET state = 'cancelled', error = @error, lease_id = NULL, updated_at = @now, finished_at = @now
      WHERE id = @id AND state IN ('queued', 'leased')`);
    this.#counts = this.db.prepare('SELECT state, COUNT(*) AS n FROM tasks GROUP BY state');
    this.#tenantPending = this.db.prepare(
      `SELECT COUNT(*) AS n FROM tasks WHERE tenant = ? AND state IN ('queued', 'leased')`,
    );
    this.#event = this.db.prepare(
      'INSERT INTO events (at, type, task_id, node_id, data) VALUES (?, ?, ?, ?, ?)',
    );

    this.#addReplica = this.db.prepare(
      `INSERT INTO task_replicas (task_id, idx, state, attempts, run_after, created_at, updated_at) VALUES (?, ?, 'queued', 0, ?, ?, ?)`,
    );
    this.#readyReplicas = this.db.prepare(`
      SELECT t.seq, t.id, t.kind, t.priority, r.attempts, t.max_attempts, t.deadline, t.module_hash, t.module_size, t.model, t.payload,
        r.run_after, t.traceparent, t.tenant, r.idx AS replica,
        (SELECT group_concat(o.node_id) FROM task_replicas o
          WHERE o.task_id = r.task_id AND o.idx != r.idx AND o.node_id IS NOT NULL AND o.state IN ('leased', 'done')) AS avoid
      FROM task_replicas r INDEXED BY task_replicas_ready JOIN tasks t ON t.id = r.task_id
      WHERE r.state = 'queued' AND r.run_after <= ? AND t.state = 'leased' ORDER BY t.priority DESC, t.seq, r.idx LIMIT ?`);
    this.#leaseReplica = this.db.prepare(`
      UPDATE task_replicas SET state = 'leased', lease_id = @leaseId, node_id = @nodeId, attempts = attempts + 1,
        coordinator = @owner, updated_at = @now
      WHERE task_id = @taskId AND idx = @replica AND state = 'queued'`);

    this.coordinatorId = `c${randomBytes(8).toString('hex')}`;
    const opened = clock.now();
    // One process per SQLite file: whoever wrote coordinators rows before this one is gone.
    if (!this.shared) this.db.exec('DELETE FROM coordinators');
    this.db.prepare('INSERT INTO coordinators (id, started_at, seen_at) VALUES (?, ?, ?)').run(this.coordinatorId, opened, opened);
    this.requeuedOnOpen = this.shared ? 0 : this.#requeueLeased();
    this.#replicatedOpen =
      this.db.prepare<[], { n: number }>(`SELECT COUNT(*) AS n FROM tasks WHERE state = 'leased' AND replication IS NOT NULL`).get()?.n ?? 0;
  }

  /** Tasks a killed coordinator left leased: their lease is gone, so they are queued again (or dead if out of attempts). */
  #requeueLeased(): number {
    const now = this.#clock.now();
    const error = JSON.stringify(errorInfo('LEASE_EXPIRED', 'The coordinator restarted while the task was leased.'));
    const tasks = this.#requeueTasks(now, error).length;
    const replicas = this.#requeueReplicas(now, error);
    if (tasks + replicas > 0) this.event('requeued_on_open', null, null, { count: tasks, replicas });
    return tasks + replicas;
  }

  /**
   * Leased tasks that run once (of coordinators that beat last before `dead.cutoff`, when given) back to the
   * queue, or dead when out of attempts; answers them.
   */
  #requeueTasks(now: number, error: string, dead?: { cutoff: number; self: string }): Array<EndedRow & { id: TaskId }> {
    return this.#prep<unknown[], EndedRow & { id: TaskId }>(
      `UPDATE tasks SET
         state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'dead' END,
         finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE CAST(? AS BIGINT) END,
         lease_id = NULL, coordinator = NULL, error = ?, run_after = ?, updated_at = ?
       WHERE state = 'leased' AND replication IS NULL${dead ? ` AND ${ORPHANED}` : ''}
       RETURNING id, state, kind, attempts, created_at, node_id, webhook`,
    ).all(...(dead ? [now, error, now, now, dead.cutoff, dead.self] : [now, error, now, now]));
  }

  /**
   * Writes a batch in one transaction. A repeated idempotency key with the same
   * spec digest gives back the existing task; with another digest the whole
   * batch is refused with IDEMPOTENCY_CONFLICT.
   */
  insertTasks(tasks: readonly NewTask[]): InsertOutcome[] {
    const now = this.#clock.now();
    const run = this.db.transaction((items: readonly NewTask[]) => {
      const out: InsertOutcome[] = [];
      // PostgreSQL: the tasks that run once in set statements (a round trip per SET_ROWS rather than per task).
      const inserted = this.shared ? this.#insertSet(items.filter((t) => !t.replication), now) : null;
      for (let i = 0; i < items.length; i++) {
        const t = items[i]!;
        const info = inserted && !t.replication ? { changes: inserted.has(t.id) ? 1 : 0 } : this.#insert.run({
          id: t.id,
          kind: t.kind,
          priority: t.priority,
          maxAttempts: t.maxAttempts,
          now,
          deadline: t.deadline,
          idempotencyKey: storedKey(t.tenant, t.idempotencyKey),
          specHash: t.specHash,
          tenant: t.tenant,
          webhook: t.webhook,
          moduleHash: t.moduleHash,
          moduleSize: t.moduleSize,
          model: t.model,
          payload: JSON.stringify(t.payload),
          labels: t.labels ? JSON.stringify(t.labels) : null,
          // A replicated task is in progress from the start: its replicas are what is queued and leased.
          state: t.replication ? 'leased' : 'queued',
          replication: t.replication ? JSON.stringify(t.replication) : null,
          traceparent: t.traceparent ?? null,
        });
        if (info.changes === 1) {
          if (t.replication) {
            for (let r = 0; r < t.replication.replicas; r++) this.#addReplica.run(t.id, r, now, now, now);
            this.#replicatedOpen++;
          }
          out.push({ id: t.id, created: true });
          continue;
        }
        const existing = this.#byKey.get(storedKey(t.tenant, t.idempotencyKey) ?? '');
        if (!existing) throw new AppError('INTERNAL', 'A task insert was ignored without an idempotency conflict.');
        if (existing.spec_hash !== t.specHash) {
          throw new AppError(
            'IDEMPOTENCY_CONFLICT',
            `Idempotency key ${JSON.stringify(t.idempotencyKey)} was used for task ${existing.id} with a different spec; use a new key or resend the same spec.`,
            { index: i, idempotencyKey: t.idempotencyKey, existingId: existing.id },
          );
        }
        out.push({ id: existing.id as TaskId, created: false });
      }
      return out;
    });
    return run.immediate(tasks);
  }

  now(): number {
    return this.#clock.now();
  }

  getTask(id: TaskId): StoredTask | null {
    const row = this.#get.get(id);
    if (!row) return null;
    const record = rowToRecord(row);
    if (record.replication) record.replicas = this.replicaViews(id);
    return record;
  }

  /** The newest `limit` tasks (optionally of one state and tenant), newest first. */
  listTasks(opts: { state?: TaskState; tenant?: string; limit: number }): StoredTask[] {
    return this.pageTasks(opts).tasks;
  }

  /**
   * One page of tasks, newest first in insertion order (`seq`, which follows `created_at` and never ties), so
   * paging is stable while tasks are submitted: each task present when paging began is seen exactly once, and
   * tasks submitted meanwhile sort before the first page. `before` is the `next` a previous page answered
   * (null at the end).
   */
  pageTasks(opts: { state?: TaskState; tenant?: string; limit: number; before?: number }): { tasks: StoredTask[]; next: number | null } {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (opts.state) {
      where.push('state = ?');
      args.push(opts.state);
    }
    if (opts.tenant) {
      where.push('tenant = ?');
      args.push(opts.tenant);
    }
    if (opts.before !== undefined) {
      where.push('seq < ?');
      args.push(opts.before);
    }
    const sql = `SELECT * FROM tasks ${where.length ? `WHERE ${where.join(' AND ')}` : ''} ORDER BY seq DESC LIMIT ?`;
    args.push(opts.limit + 1);
    const rows = this.db.prepare<(string | number)[], TaskRow & { seq: number }>(sql).all(...args);
    const more = rows.length > opts.limit;
    if (more) rows.pop();
    return { tasks: rows.map(rowToRecord), next: more ? rows[rows.length - 1]!.seq : null };
  }

  /**
   * Queued tasks of one kind whose backoff has passed, read per tenant so that no tenant's backlog hides
   * another's (the scheduler orders them: server/fair.ts). For each tenant with queued tasks (tasks without a
   * tenant count as one), up to `limit` of highest priority then oldest; when that filled `limit`, also up
   * to `oldest` of its longest queued, which aging may lift above the rest. At most MAX_READY_TENANTS
   * tenants a call: with more, the next call goes on after the last one read (round the list).
   */
  ready(kind: TaskKind, now: number, limit: number, oldest = 0): ReadyRow[] {
    // Tasks without a tenant are read first (no probe for them: reading none costs what a probe would).
    const tenants: Array<string | null> = [null];
    const start = this.#tenantCursor.get(kind) ?? '';
    let after = start;
    let wrapped = false;
    // Bounded: each turn adds a tenant or wraps once.
    while (tenants.length < MAX_READY_TENANTS) {
      const next = this.#nextTenant.get(kind, after)?.tenant;
      if (next === undefined || (wrapped && next > start)) {
        if (wrapped || start === '') break;
        wrapped = true;
        after = '';
        continue;
      }
      tenants.push(next);
      after = next;
      if (wrapped && next === start) break;
    }
    if (tenants.length >= MAX_READY_TENANTS) this.#tenantCursor.set(kind, after);
    else this.#tenantCursor.delete(kind);
    let rows: ReadyRow[] = [];
    for (const tenant of tenants) {
      const got = tenant === null ? this.#readyNull.all(kind, now, limit) : this.#readyOf.all(kind, tenant, now, limit);
      rows = rows.length ? rows.concat(got) : got;
      if (got.length === limit && oldest > 0) {
        const old = tenant === null ? this.#oldestNull.all(kind, now, oldest) : this.#oldestOf.all(kind, tenant, now, oldest);
        const have = new Set(got.map((r) => r.id));
        for (const r of old) if (!have.has(r.id)) rows.push(r);
      }
    }
    return rows;
  }

  /**
   * One transaction: lease every assignment (a task no longer queued is
   * skipped and left out of the answer) and fail the tasks past their deadline.
   */
  leaseBatch(
    leases: readonly Lease[],
    pastDeadline: ReadonlyArray<{ id: TaskId; error: ErrorInfo }>,
  ): { leased: Set<TaskId>; expired: Ended[]; /** Lease ids of the replicas leased. */ leasedReplicas: Set<string> } {
    const leasedReplicas = new Set<string>();
    const now = this.#clock.now();
    const body = () => {
      const leased = new Set<TaskId>();
      // PostgreSQL: the plain leases in set statements (a round trip per SET_ROWS rather than per task).
      if (this.shared) this.#leaseSet(leases.filter((l) => l.replica === undefined), now, leased);
      for (const l of leases) {
        if (this.shared && l.replica === undefined) continue;
        if (l.replica !== undefined) {
          if (this.#leaseReplica.run({ taskId: l.taskId, replica: l.replica, leaseId: l.leaseId, nodeId: l.nodeId, owner: this.coordinatorId, now }).changes === 1) {
            leasedReplicas.add(l.leaseId);
          }
          continue;
        }
        if (this.#lease.run({ taskId: l.taskId, leaseId: l.leaseId, nodeId: l.nodeId, owner: this.coordinatorId, now }).changes === 1) {
          leased.add(l.taskId);
        }
      }
      const expired: Ended[] = [];
      for (const { id, error } of pastDeadline) {
        const row = this.#expire.get({ id, error: JSON.stringify(error), now }) as EndedRow | undefined;
        if (row) expired.push(toEnded(id, row, error.code));
      }
      return { leased, expired, leasedReplicas };
    };
    // Inside a claim the round's transaction holds it already (no savepoint of its own).
    if (this.#claiming) return body();
    this.#setSync(this.attemptSync);
    const out = this.db.transaction(body).immediate();
    this.#setSync('full');
    return out;
  }

  /** Inserts `tasks` (none replicated), a statement per SET_ROWS; answers the ids inserted (a repeated idempotency key is not). */
  #insertSet(tasks: readonly NewTask[], now: number): Set<string> {
    const out = new Set<string>();
    for (const st of insertSetStmts(tasks, now)) for (const r of this.#prep<unknown[], { id: string }>(st.sql).all(...st.params)) out.add(r.id);
    return out;
  }

  /**
   * insertTasks() without waiting, on a shared journal, for batches with no idempotency key and no replicated
   * task (nothing that may conflict): the set statements in one transaction on the store's asynchronous lane, so
   * the coordinator goes on while the server commits them. Other batches, and SQLite, go through insertTasks().
   */
  async insertTasksAsync(tasks: readonly NewTask[]): Promise<InsertOutcome[]> {
    if (!this.shared || !this.db.runAsync || tasks.some((t) => t.idempotencyKey !== null || t.replication)) return this.insertTasks(tasks);
    const results = await this.db.runAsync(insertSetStmts(tasks, this.#clock.now()), { sync: 'full' });
    const inserted = results.reduce((n, rows) => n + rows.length, 0);
    if (inserted !== tasks.length) throw new AppError('INTERNAL', 'A task insert was ignored without an idempotency conflict.');
    return tasks.map((t) => ({ id: t.id, created: true }));
  }

  /** Leases `leases` (none replicated) with one statement per SET_ROWS; adds those applied to `leased`. */
  #leaseSet(leases: readonly Lease[], now: number, leased: Set<TaskId>): void {
    if (leases.length === 0) return;
    const stmt = this.#prep<unknown[], { id: TaskId }>(
      `UPDATE tasks SET state = 'leased', lease_id = v.lease_id, node_id = v.node_id, attempts = tasks.attempts + 1,
         coordinator = ?, updated_at = ?
       FROM unnest(CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS TEXT[])) AS v (task_id, lease_id, node_id)
       WHERE tasks.id = v.task_id AND tasks.state = 'queued' RETURNING tasks.id`,
    );
    for (let i = 0; i < leases.length; i += SET_ROWS) {
      const part = leases.slice(i, i + SET_ROWS);
      const got = stmt.all(this.coordinatorId, now, part.map((l) => l.taskId), part.map((l) => l.leaseId), part.map((l) => l.nodeId));
      for (const r of got) leased.add(r.id);
    }
  }

  /**
   * One dispatch round's reads and leases. On a shared journal it is one transaction whose ready reads lock the
   * rows they answer (FOR UPDATE SKIP LOCKED): coordinators dispatching at once each get other tasks, none waits
   * on another's rows. (A task leased twice is impossible either way: a lease applies only to a queued task.)
   */
  claim<T>(round: () => T): T {
    if (!this.shared || this.#claiming) return round();
    this.#setSync(this.attemptSync);
    this.#claiming = true;
    try {
      return this.db.transaction(round).immediate();
    } finally {
      this.#claiming = false;
      this.#setSync('full');
    }
  }

  /**
   * Marks this coordinator alive. Answers false when it had been judged dead meanwhile (its leases were swept
   * back to the queue: the results of those attempts will be dropped); it is registered again.
   */
  beat(): boolean {
    const now = this.#clock.now();
    if (this.#prep<[number, string]>('UPDATE coordinators SET seen_at = ? WHERE id = ?').run(now, this.coordinatorId).changes === 1) return true;
    this.#prep<[string, number, number]>('INSERT INTO coordinators (id, started_at, seen_at) VALUES (?, ?, ?)').run(this.coordinatorId, now, now);
    this.event('coordinator_revived', null, null, { coordinator: this.coordinatorId });
    return false;
  }

  /** The coordinators that beat within `aliveMs`. */
  liveCoordinators(aliveMs: number): Array<{ id: string; startedAt: number; seenAt: number }> {
    return this.#prep<[number], { id: string; started_at: number; seen_at: number }>('SELECT id, started_at, seen_at FROM coordinators WHERE seen_at >= ? ORDER BY id')
      .all(this.#clock.now() - aliveMs)
      .map((r) => ({ id: r.id, startedAt: r.started_at, seenAt: r.seen_at }));
  }

  /**
   * Puts back in the queue (or dead-letters, out of attempts) the tasks and replicas leased by coordinators
   * that have not beaten for `deadMs` (or by none: leased before owners were kept), and forgets those
   * coordinators. Answers the tasks that moved, for the watchers and metrics.
   */
  reclaimOrphans(deadMs: number): Ended[] {
    const now = this.#clock.now();
    const cutoff = now - deadMs;
    const error = JSON.stringify(errorInfo('LEASE_EXPIRED', 'The coordinator that granted the lease stopped.'));
    const dead = { cutoff, self: this.coordinatorId };
    return this.db.transaction(() => {
      const rows = this.#requeueTasks(now, error, dead);
      const replicas = this.#requeueReplicas(now, error, dead);
      this.#prep<[number, string]>('DELETE FROM coordinators WHERE seen_at < ? AND id != ?').run(cutoff, this.coordinatorId);
      this.orphansRequeued += rows.length + replicas;
      if (rows.length + replicas > 0) this.event('orphans_requeued', null, null, { count: rows.length, replicas });
      return rows.map((r) => toEnded(r.id, r, 'LEASE_EXPIRED'));
    }).immediate();
  }

  /**
   * Takes over a lease another coordinator granted to `nodeId` (the node reconnected here): answers the task
   * when that node holds it still, else null. Only the node the lease was granted to can move it.
   */
  adopt(nodeId: string, leaseId: string): AdoptedLease | null {
    const row = this.#prep<{ owner: string; now: number; leaseId: string; nodeId: string }, { id: TaskId; kind: TaskKind; attempts: number; tenant: string | null; model: string | null; payload: string }>(
      `UPDATE tasks SET coordinator = @owner, updated_at = @now
       WHERE lease_id = @leaseId AND node_id = @nodeId AND state = 'leased' AND replication IS NULL
       RETURNING id, kind, attempts, tenant, model, payload`,
    ).get({ owner: this.coordinatorId, now: this.#clock.now(), leaseId, nodeId });
    if (row) {
      this.event('lease_adopted', row.id, nodeId, { leaseId, coordinator: this.coordinatorId });
      return { taskId: row.id, leaseId, kind: row.kind, attempts: row.attempts, tenant: row.tenant, model: row.model, payload: row.payload };
    }
    // One replica of a replicated task (server/quorum.ts): its lease moves the same way.
    const rep = this.#prep<{ owner: string; now: number; leaseId: string; nodeId: string }, { id: TaskId; idx: number; attempts: number }>(
      `UPDATE task_replicas SET coordinator = @owner, updated_at = @now
       WHERE lease_id = @leaseId AND node_id = @nodeId AND state = 'leased'
       RETURNING task_id AS id, idx, attempts`,
    ).get({ owner: this.coordinatorId, now: this.#clock.now(), leaseId, nodeId });
    if (!rep) return null;
    const task = this.#prep<[string], { kind: TaskKind; tenant: string | null; model: string | null; payload: string }>(
      'SELECT kind, tenant, model, payload FROM tasks WHERE id = ?',
    ).get(rep.id);
    if (!task) return null;
    this.event('lease_adopted', rep.id, nodeId, { leaseId, coordinator: this.coordinatorId, replica: rep.idx });
    return { taskId: rep.id, leaseId, kind: task.kind, attempts: rep.attempts, tenant: task.tenant, model: task.model, payload: task.payload, replica: rep.idx };
  }

  /** Leased tasks per tenant over every coordinator (a shared journal's maxLeased counts them all). */
  leasedOf(tenant: string): number {
    return this.#prep<[string], { n: number }>(`SELECT COUNT(*) AS n FROM tasks WHERE tenant = ? AND state = 'leased'`).get(tenant)?.n ?? 0;
  }

  /** Sets the connection's sync mode for the next commits. */
  #setSync(mode: 'full' | 'normal'): void {
    if (this.#sync === mode) return;
    this.db.setSync(mode);
    this.#sync = mode;
  }

  /**
   * Fails the queued tasks past their deadline (up to MAX_SWEEP a call), each with the error `errorFor` gives
   * it (the scheduler says why it never started: NO_CAPABLE_NODE or DEADLINE_EXCEEDED).
   */
  expireDeadlines(errorFor: (row: QueuedRow) => ErrorInfo): Ended[] {
    const now = this.#clock.now();
    const rows = this.#sweep.all(now);
    if (rows.length === 0) return [];
    return this.db.transaction(() => {
      const out: Ended[] = [];
      for (const row of rows) {
        const error = errorFor(row);
        const ended = this.#expire.get({ id: row.id, error: JSON.stringify(error), now }) as EndedRow | undefined;
        if (ended) out.push(toEnded(row.id, ended, error.code));
      }
      return out;
    })();
  }

  /** Up to `limit` queued tasks, for the scheduler to write down why they wait (in index order, not by age). */
  queuedSample(limit: number): QueuedRow[] {
    return this.#prep<[number], QueuedRow>(`SELECT ${QUEUED_COLUMNS} FROM tasks INDEXED BY tasks_fair WHERE state = 'queued' LIMIT ?`).all(limit);
  }

  /** Writes why queued tasks wait (a task no longer queued is left as it is). */
  setWaiting(updates: ReadonlyArray<{ id: TaskId; reason: WaitReason; since: number }>): void {
    if (updates.length === 0) return;
    if (this.shared) {
      // One set statement per SET_ROWS (a round trip each), not one per task.
      const set = this.#prep<unknown[]>(`UPDATE tasks SET wait_reason = v.reason, wait_since = v.since
        FROM unnest(CAST(? AS TEXT[]), CAST(? AS TEXT[]), CAST(? AS BIGINT[])) AS v (id, reason, since)
        WHERE tasks.id = v.id AND tasks.state = 'queued'`);
      this.db.transaction(() => {
        for (let i = 0; i < updates.length; i += SET_ROWS) {
          const part = updates.slice(i, i + SET_ROWS);
          set.run(part.map((u) => u.id), part.map((u) => u.reason), part.map((u) => u.since));
        }
      })();
      return;
    }
    const stmt = this.#prep<[string, number, string]>(`UPDATE tasks SET wait_reason = ?, wait_since = ? WHERE id = ? AND state = 'queued'`);
    this.db.transaction(() => {
      for (const u of updates) stmt.run(u.reason, u.since, u.id);
    })();
  }

  /**
   * Records attempt outcomes in one transaction. A result is written once: it
   * applies only while the lease is the current one and the task is leased;
   * anything else is a late duplicate, dropped and counted (`applied` false).
   * Failures: retryable codes go back to `queued` with full-jitter backoff until
   * the attempts run out (then `dead`); other codes end the task as `failed`.
   */
  complete(items: readonly Completion[], random: () => number = Math.random): Array<Ended | null> {
    const now = this.#clock.now();
    const run = this.db.transaction(() => {
      if (this.shared) {
        const plan = this.#completionPlan(items, now, random);
        return plan.read(plan.stmts.map((st) => this.#prep(st.sql).all(...st.params)));
      }
      const out: Array<Ended | null> = [];
      for (const item of items) {
        let row: EndedRow | undefined;
        let code: string | null = null;
        if (item.outcome.ok) {
          row = this.#succeed.get({
            id: item.taskId,
            leaseId: item.leaseId,
            result: JSON.stringify(item.outcome.result ?? null),
            now,
          }) as EndedRow | undefined;
        } else {
          code = codeOf(item.outcome.error);
          row = this.#fail.get(this.#failParams(item, now, random)) as EndedRow | undefined;
        }
        out.push(this.#ended(item, row, code));
      }
      return out;
    });
    this.#setSync(this.attemptSync);
    const out = run.immediate();
    this.#setSync('full');
    return out;
  }

  /**
   * complete() without waiting, on a shared journal: the same statements in one transaction on the store's
   * asynchronous lane (SqlDb.runAsync), so the coordinator goes on while the server records them. Answers as
   * complete() does; a store that cannot be reached rejects with STORE_UNAVAILABLE and nothing is recorded.
   */
  async completeAsync(items: readonly Completion[], random: () => number = Math.random): Promise<Array<Ended | null>> {
    if (!this.shared || !this.db.runAsync) return this.complete(items, random);
    const plan = this.#completionPlan(items, this.#clock.now(), random);
    return plan.read(await this.db.runAsync(plan.stmts, { sync: this.attemptSync }));
  }

  /**
   * A shared journal's statements for complete(): the successes in set statements (a round trip per SET_ROWS
   * rather than per result), then each failure; `read` turns their rows into complete()'s answer.
   */
  #completionPlan(items: readonly Completion[], now: number, random: () => number): { stmts: AsyncStmt[]; read(results: unknown[][]): Array<Ended | null> } {
    const stmts: AsyncStmt[] = [];
    const ok = items.filter((i) => i.outcome.ok);
    for (let i = 0; i < ok.length; i += SET_ROWS) {
      const part = ok.slice(i, i + SET_ROWS);
      stmts.push({
        sql: SUCCEED_SET_SQL,
        params: [
          now,
          now,
          part.map((c) => c.taskId),
          part.map((c) => c.leaseId),
          part.map((c) => JSON.stringify((c.outcome as { result: unknown }).result ?? null)),
        ],
      });
    }
    const sets = stmts.length;
    for (const item of items) if (!item.outcome.ok) stmts.push({ sql: FAIL_SQL, params: [this.#failParams(item, now, random)] });
    const read = (results: unknown[][]): Array<Ended | null> => {
      const succeeded = new Map<string, EndedRow>();
      for (let i = 0; i < sets; i++) for (const r of results[i] as Array<EndedRow & { id: TaskId; lease: string }>) succeeded.set(`${r.id}\n${r.lease}`, r);
      let next = sets;
      return items.map((item) => {
        if (item.outcome.ok) {
          // A result sent twice in one batch applies once: the second finds its row taken.
          const key = `${item.taskId}\n${item.leaseId}`;
          const row = succeeded.get(key);
          succeeded.delete(key);
          return this.#ended(item, row, null);
        }
        return this.#ended(item, (results[next++] as EndedRow[])[0], codeOf(item.outcome.error));
      });
    };
    return { stmts, read };
  }

  #failParams(item: Completion, now: number, random: () => number): Record<string, unknown> {
    const err = (item.outcome as { error: ErrorInfo }).error;
    return {
      id: item.taskId,
      leaseId: item.leaseId,
      retryable: isErrorCode(err.code) && ERRORS[err.code].retryable ? 1 : 0,
      // Millionths, so that the delay is integer arithmetic (truncated alike by both stores).
      jitter: Math.floor(random() * 1_000_000),
      cap: LIMITS.retryMaxMs,
      base: this.retryBaseMs,
      error: JSON.stringify(err),
      owner: item.owned ? this.coordinatorId : null,
      now,
    };
  }

  /** An attempt's end as complete() answers it: null when nothing applied (a late duplicate, counted). */
  #ended(item: Completion, row: EndedRow | undefined, code: string | null): Ended | null {
    if (!row) {
      this.duplicatesDropped++;
      return null;
    }
    return toEnded(item.taskId, row, code);
  }

  /** Backoff base; tests lower it. */
  retryBaseMs: number = LIMITS.retryBaseMs;

  /** Cancels a queued or leased task; answers the lease it held (null if it was queued) or undefined if it was not cancellable. */
  cancel(id: TaskId, reason: string): { leaseId: string | null; nodeId: string | null; /** A replicated task's replica leases. */ replicaLeases?: string[] } | undefined {
    const now = this.#clock.now();
    return this.db
      .transaction(() => {
        const row = this.#get.get(id);
        if (!row || (row.state !== 'queued' && row.state !== 'leased')) return undefined;
        // Shared: the row may have ended since it was read (another coordinator, or this one's results lane).
        if (this.#cancel.run({ id, now, error: JSON.stringify(errorInfo('CANCELLED', reason)) }).changes === 0) return undefined;
        const out = { leaseId: row.lease_id, nodeId: row.state === 'leased' ? row.node_id : null };
        if (!row.replication) return out;
        this.#replicatedOpen--;
        return { ...out, replicaLeases: this.#stopReplicas(id, now) };
      })
      .immediate();
  }

  /**
   * Records a Layer 3 verdict on a task and, for agent tasks, on the agent
   * version's record (a new verdict replaces the task's earlier one).
   */
  setVerdict(task: StoredTask, verdict: 'pass' | 'fail', reason: string | null): ReputationMark[] {
    const agent = task.kind === 'agent' ? (task.payload as { agent: string; version?: string }) : null;
    return this.db
      .transaction(() => {
        const now = this.#clock.now();
        this.db
          .prepare('UPDATE tasks SET verdict = ?, verdict_reason = ?, updated_at = ? WHERE id = ?')
          .run(verdict, reason, now, task.id);
        // The node(s) whose result it judges: a replicated task's agreeing replicas, else the node that ran it.
        const nodes = task.replication
          ? this.db
              .prepare<[string], { node_id: string }>('SELECT node_id FROM task_replicas WHERE task_id = ? AND agreed = 1 AND node_id IS NOT NULL')
              .all(task.id)
              .map((r) => r.node_id)
          : task.nodeId
            ? [task.nodeId]
            : [];
        const marks: ReputationMark[] = [];
        for (const nodeId of nodes) {
          if (task.verdict) marks.push({ nodeId, mark: task.verdict.verdict, delta: -1 });
          marks.push({ nodeId, mark: verdict, delta: 1 });
        }
        this.#mark(marks, now);
        if (!agent?.version) return marks;
        const bump = this.db.prepare(
          `INSERT INTO agent_verdicts (name, version, pass, fail) VALUES (@name, @version, @pass, @fail)
           ON CONFLICT (name, version) DO UPDATE SET pass = agent_verdicts.pass + excluded.pass, fail = agent_verdicts.fail + excluded.fail`,
        );
        const key = { name: agent.agent, version: agent.version };
        if (task.verdict) bump.run({ ...key, pass: task.verdict.verdict === 'pass' ? -1 : 0, fail: task.verdict.verdict === 'fail' ? -1 : 0 });
        bump.run({ ...key, pass: verdict === 'pass' ? 1 : 0, fail: verdict === 'fail' ? 1 : 0 });
        return marks;
      })
      .immediate();
  }

  /** Verdict counts per version of one agent. */
  agentVerdicts(name: string): Map<string, { pass: number; fail: number }> {
    const rows = this.db
      .prepare<[string], { version: string; pass: number; fail: number }>('SELECT version, pass, fail FROM agent_verdicts WHERE name = ?')
      .all(name);
    return new Map(rows.map((r) => [r.version, { pass: r.pass, fail: r.fail }]));
  }

  countsByState(): Record<TaskState, number> {
    const out: Record<TaskState, number> = { queued: 0, leased: 0, succeeded: 0, failed: 0, dead: 0, cancelled: 0 };
    for (const r of this.#counts.all()) out[r.state] = r.n;
    return out;
  }

  /** Queued tasks by priority (0–9; priorities with none are absent). */
  queuedByPriority(): Array<{ priority: number; n: number }> {
    return this.#prep<[], { priority: number; n: number }>(`SELECT priority, COUNT(*) AS n FROM tasks WHERE state = 'queued' GROUP BY priority`).all();
  }

  pendingForTenant(tenant: string): number {
    return this.#tenantPending.get(tenant)?.n ?? 0;
  }


  // ---------------------------------------------------------------- replicas and reputation

  /** Statements of the replica path, prepared once. */
  readonly #stmts = new Map<string, Stmt>();
  #prep<P extends unknown[] | object = unknown[], R = unknown>(sql: string): Stmt<P, R> {
    let st = this.#stmts.get(sql);
    if (!st) this.#stmts.set(sql, (st = this.db.prepare(sql)));
    return st as unknown as Stmt<P, R>;
  }

  /** Queued replicas whose backoff has passed, highest priority then oldest task first. */
  readyReplicas(now: number, limit: number): ReplicaReadyRow[] {
    return this.#replicatedOpen > 0 ? this.#readyReplicas.all(now, limit) : [];
  }

  /**
   * Records replica attempt outcomes in one transaction, and decides each task
   * they complete (server/quorum.ts decide()): the agreed output becomes the
   * task's result, outvoted and agreeing nodes are marked, a replica is added
   * while no quorum is reachable, and QUORUM_FAILED ends it after maxReplicas.
   * Retryable failures run the replica again with the usual backoff; a
   * non-retryable error is the replica's outcome (replicas can agree on it).
   * A result for a lease that is not current is dropped and counted (null).
   */
  completeReplicas(items: readonly Completion[], random: () => number = Math.random): Array<ReplicaEnded | null> {
    const now = this.#clock.now();
    const run = this.db.transaction(() => {
      if (!this.shared) return items.map((item) => this.#completeReplica(item, now, random));
      // Shared: each replica locks its task's row (see #completeReplica), taken in id order so that two
      // coordinators recording replicas of the same tasks never wait on each other in a cycle.
      const out = new Array<ReplicaEnded | null>(items.length);
      const order = items.map((_, i) => i).sort((x, y) => (items[x]!.taskId < items[y]!.taskId ? -1 : items[x]!.taskId > items[y]!.taskId ? 1 : x - y));
      for (const i of order) out[i] = this.#completeReplica(items[i]!, now, random);
      return out;
    });
    this.#setSync(this.attemptSync);
    const out = run.immediate();
    this.#setSync('full');
    return out;
  }

  #completeReplica(item: Completion, now: number, random: () => number): ReplicaEnded | null {
    // A failure this coordinator makes (lease expired, node lost) applies only while it owns the replica's lease.
    const row = this.#prep<[string, string, string | null, string | null], { idx: number; attempts: number; node_id: string | null; max_attempts: number; kind: TaskKind; created_at: number; task_state: TaskState }>(
        `SELECT r.idx, r.attempts, r.node_id, t.max_attempts, t.kind, t.created_at, t.state AS task_state FROM task_replicas r JOIN tasks t ON t.id = r.task_id
         WHERE r.task_id = ? AND r.lease_id = ? AND r.state = 'leased' AND (CAST(? AS TEXT) IS NULL OR r.coordinator = ?)${this.shared ? ' FOR UPDATE OF t' : ''}`,
      )
      .get(item.taskId, item.leaseId, item.owned ? this.coordinatorId : null, item.owned ? this.coordinatorId : null);
    // Shared: the task's row is locked until this transaction ends, so replicas recorded at once by two
    // coordinators are decided one after the other (each alone would see the other still leased, and wait forever).
    if (!row) {
      this.duplicatesDropped++;
      return null;
    }
    // A replica still running when the quorum was reached ends late: it is compared with the agreed output.
    const late = row.task_state !== 'leased';
    let state: ReplicaState = 'done';
    let outcome: ReplicaOutcome | null = null;
    let code: string | null = null;
    let runAfter = now;
    if (item.outcome.ok) {
      outcome = { ok: true, result: item.outcome.result ?? null };
    } else {
      const err = item.outcome.error;
      code = isErrorCode(err.code) ? err.code : 'INTERNAL';
      const retryable = isErrorCode(err.code) && ERRORS[err.code].retryable;
      if (!retryable) outcome = { ok: false, error: err };
      else if (late) state = 'cancelled';
      else if (row.attempts < row.max_attempts) {
        state = 'queued';
        runAfter = now + Math.floor(random() * Math.min(LIMITS.retryMaxMs, this.retryBaseMs * 2 ** (row.attempts - 1)));
      } else state = 'dead';
    }
    this.#prep(
        `UPDATE task_replicas SET state = @state, run_after = @runAfter, lease_id = NULL, outcome = @outcome, digest = @digest,
           error = @error, updated_at = @now WHERE task_id = @taskId AND idx = @idx`,
      )
      .run({
        taskId: item.taskId,
        idx: row.idx,
        state,
        runAfter,
        outcome: outcome ? JSON.stringify(outcome) : null,
        digest: outcome ? outcomeDigest(row.kind, outcome) : null,
        error: item.outcome.ok ? null : JSON.stringify(item.outcome.error),
        now,
      });
    const attempt: Ended = {
      taskId: item.taskId,
      state: state === 'queued' ? 'queued' : 'leased',
      kind: row.kind,
      attempts: row.attempts,
      createdAt: row.created_at,
      nodeId: row.node_id as NodeId | null,
      webhook: null,
      errorCode: code,
    };
    if (state === 'queued') return { attempt, task: null, cancelLeases: [], marks: [] };
    if (late) return { attempt, task: null, cancelLeases: [], marks: outcome ? this.#judgeLate(item.taskId, row.idx, row.node_id, outcomeDigest(row.kind, outcome), now) : [] };
    return { attempt, ...this.#settle(item.taskId, now) };
  }

  /** A replica that ended after its task was decided: agreed or outvoted against the quorum's output (none: no marks). */
  #judgeLate(taskId: TaskId, idx: number, nodeId: string | null, digest: string, now: number): ReputationMark[] {
    const agreedDigest = this.#prep<[string], { digest: string }>('SELECT digest FROM task_replicas WHERE task_id = ? AND agreed = 1 LIMIT 1')
      .get(taskId)?.digest;
    if (agreedDigest === undefined) return [];
    const agreed = agreedDigest === digest;
    this.#prep('UPDATE task_replicas SET agreed = ? WHERE task_id = ? AND idx = ?').run(agreed ? 1 : 0, taskId, idx);
    if (!nodeId) return [];
    const marks: ReputationMark[] = [{ nodeId, mark: agreed ? 'agreed' : 'outvoted', delta: 1 }];
    this.#mark(marks, now);
    if (!agreed) this.event('quorum_outvoted', taskId, null, { outvoted: [nodeId], late: true });
    return marks;
  }

  /** Decides a replicated task from its replicas (see completeReplicas). */
  #settle(taskId: TaskId, now: number): Omit<ReplicaEnded, 'attempt'> {
    const none = { task: null, cancelLeases: [], marks: [] };
    const task = this.#get.get(taskId);
    if (!task || task.state !== 'leased' || !task.replication) return none;
    const r = JSON.parse(task.replication) as Replication;
    const rows = this.#replicaRows(taskId);
    const d = decide(
      rows.map((x) => ({ idx: x.idx, state: x.state, nodeId: x.node_id, digest: x.digest })),
      r,
    );
    const attempts = rows.reduce((n, x) => n + x.attempts, 0);
    switch (d.kind) {
      case 'wait':
        return none;
      case 'add': {
        const idx = rows.reduce((m, x) => Math.max(m, x.idx), -1) + 1;
        this.#addReplica.run(taskId, idx, now, now, now);
        this.event('replica_added', taskId, null, { replica: idx, reason: 'no quorum yet' });
        return none;
      }
      case 'agreed': {
        const setAgreed = this.#prep('UPDATE task_replicas SET agreed = ? WHERE task_id = ? AND idx = ?');
        for (const idx of d.agreed) setAgreed.run(1, taskId, idx);
        for (const idx of d.outvoted) setAgreed.run(0, taskId, idx);
        // Replicas not started are not needed; running ones finish and are judged against this output (#judgeLate).
        this.#prep(`UPDATE task_replicas SET state = 'cancelled', updated_at = ? WHERE task_id = ? AND state = 'queued'`).run(now, taskId);
        const cancelLeases: string[] = [];
        const winner = rows.find((x) => x.idx === d.agreed[0])!;
        const outcome = JSON.parse(winner.outcome!) as ReplicaOutcome;
        const marks: ReputationMark[] = [];
        for (const x of rows) {
          if (!x.node_id) continue;
          if (d.agreed.includes(x.idx)) marks.push({ nodeId: x.node_id, mark: 'agreed', delta: 1 });
          else if (d.outvoted.includes(x.idx)) marks.push({ nodeId: x.node_id, mark: 'outvoted', delta: 1 });
        }
        this.#mark(marks, now);
        if (d.outvoted.length) this.event('quorum_outvoted', taskId, null, { outvoted: d.outvoted.map((i) => rows.find((x) => x.idx === i)!.node_id) });
        const ended = outcome.ok
          ? this.#endReplicated(taskId, 'succeeded', outcome.result, null, winner.node_id, attempts, now)
          : this.#endReplicated(taskId, 'failed', null, outcome.error, winner.node_id, attempts, now);
        return { task: ended, cancelLeases, marks };
      }
      case 'failed': {
        const error = errorInfo('QUORUM_FAILED', `No ${r.quorum} of ${rows.length} replicas agreed on an output; every replica's output is in the task record.`, {
          quorum: r.quorum,
          replicas: rows.filter((x) => x.state === 'done').map((x) => ({ replica: x.idx, nodeId: x.node_id, digest: x.digest })),
        });
        this.event('quorum_failed', taskId, null, { replicas: rows.length });
        return { task: this.#endReplicated(taskId, 'failed', null, error, null, attempts, now), cancelLeases: [], marks: [] };
      }
      case 'dead': {
        const last = [...rows].reverse().find((x) => x.error)?.error;
        const error = last ? (JSON.parse(last) as ErrorInfo) : errorInfo('INTERNAL', 'Every replica ran out of attempts.');
        return { task: this.#endReplicated(taskId, 'dead', null, error, null, attempts, now), cancelLeases: [], marks: [] };
      }
    }
  }

  #replicaRows(taskId: string): Array<{
    idx: number;
    state: ReplicaState;
    attempts: number;
    node_id: string | null;
    lease_id: string | null;
    outcome: string | null;
    digest: string | null;
    agreed: number | null;
    error: string | null;
  }> {
    return this.#prep<[string], { idx: number; state: ReplicaState; attempts: number; node_id: string | null; lease_id: string | null; outcome: string | null; digest: string | null; agreed: number | null; error: string | null }>(
        'SELECT idx, state, attempts, node_id, lease_id, outcome, digest, agreed, error FROM task_replicas WHERE task_id = ? ORDER BY idx',
      )
      .all(taskId);
  }

  /** Ends a replicated task (it is 'leased' while its replicas run). */
  #endReplicated(taskId: TaskId, state: TaskState, result: unknown, error: ErrorInfo | null, nodeId: string | null, attempts: number, now: number): Ended | null {
    const row = this.#prep(
        `UPDATE tasks SET state = @state, result = @result, error = @error, node_id = @nodeId, attempts = @attempts, lease_id = NULL,
           updated_at = @now, finished_at = @now WHERE id = @id AND state = 'leased'
         RETURNING state, kind, attempts, created_at, node_id, webhook`,
      )
      .get({ id: taskId, state, result: state === 'succeeded' ? JSON.stringify(result ?? null) : null, error: error ? JSON.stringify(error) : null, nodeId, attempts, now }) as
      | EndedRow
      | undefined;
    if (!row) return null;
    this.#replicatedOpen--;
    return toEnded(taskId, row, error?.code ?? null);
  }

  /** Cancels a task's queued and leased replicas; answers the leases to take back. */
  #stopReplicas(taskId: string, now: number): string[] {
    const leases = this.#prep<[string], { lease_id: string }>(`SELECT lease_id FROM task_replicas WHERE task_id = ? AND state = 'leased' AND lease_id IS NOT NULL`)
      .all(taskId)
      .map((r) => r.lease_id);
    this.#prep(`UPDATE task_replicas SET state = 'cancelled', lease_id = NULL, updated_at = ? WHERE task_id = ? AND state IN ('queued', 'leased')`)
      .run(now, taskId);
    return leases;
  }

  /**
   * Fails replicated tasks that passed their deadline while a replica still
   * waited to start (DEADLINE_EXCEEDED), in one transaction.
   */
  expireReplicated(taskIds: readonly TaskId[]): Array<Omit<ReplicaEnded, 'attempt'>> {
    const now = this.#clock.now();
    const error = errorInfo('DEADLINE_EXCEEDED', 'The task passed its deadline before all its replicas could start.');
    return this.db
      .transaction(() =>
        taskIds.map((id) => {
          const rows = this.#replicaRows(id);
          const cancelLeases = this.#stopReplicas(id, now);
          const task = this.#endReplicated(id, 'failed', null, error, null, rows.reduce((n, x) => n + x.attempts, 0), now);
          return { task, cancelLeases, marks: [] };
        }),
      )
      .immediate();
  }

  /**
   * Leased replicas (of coordinators that beat last before `dead.cutoff`, when given) queued again, or dead when
   * out of attempts; tasks left undecided are decided.
   */
  #requeueReplicas(now: number, error: string, dead?: { cutoff: number; self: string }): number {
    const info = this.#prep(
        `UPDATE task_replicas SET
           state = CASE WHEN (SELECT state FROM tasks t WHERE t.id = task_id) != 'leased' THEN 'cancelled'
                        WHEN attempts < (SELECT max_attempts FROM tasks t WHERE t.id = task_id) THEN 'queued' ELSE 'dead' END,
           lease_id = NULL, coordinator = NULL, error = ?, run_after = ?, updated_at = ?
         WHERE state = 'leased'${dead ? ` AND ${ORPHANED}` : ''}`,
      )
      .run(...(dead ? [error, now, now, dead.cutoff, dead.self] : [error, now, now]));
    if (info.changes > 0) {
      const stuck = this.#prep<[], { id: TaskId }>(
          `SELECT id FROM tasks WHERE state = 'leased' AND replication IS NOT NULL
             AND NOT EXISTS (SELECT 1 FROM task_replicas r WHERE r.task_id = tasks.id AND r.state IN ('queued', 'leased'))`,
        )
        .all();
      this.db.transaction(() => stuck.forEach((t) => this.#settle(t.id, now))).immediate();
    }
    return info.changes;
  }

  replicaViews(taskId: TaskId): ReplicaView[] {
    return this.#replicaRows(taskId).map((x) => {
      const outcome = x.outcome ? (JSON.parse(x.outcome) as ReplicaOutcome) : null;
      return {
        replica: x.idx,
        state: x.state,
        nodeId: x.node_id,
        attempts: x.attempts,
        digest: x.digest,
        agreed: x.agreed === null ? null : x.agreed === 1,
        result: outcome?.ok ? outcome.result : null,
        error: outcome && !outcome.ok ? outcome.error : x.error ? (JSON.parse(x.error) as ErrorInfo) : null,
      };
    });
  }

  /** A node's reputation marks, or null if it has none. */
  reputation(nodeId: string): ReputationCounts | null {
    return (
      this.#prep<[string], ReputationCounts>('SELECT agreed, outvoted, pass, fail FROM node_reputation WHERE node_id = ?')
        .get(nodeId) ?? null
    );
  }

  /** Records the digest of a node's resume secret, so the node keeps its id (and reputation) across a restart. */
  rememberNode(nodeId: string, secretSha256: string): void {
    this.#prep(
        `INSERT INTO node_reputation (node_id, secret_sha256, updated_at) VALUES (?, ?, ?)
         ON CONFLICT (node_id) DO UPDATE SET secret_sha256 = excluded.secret_sha256, updated_at = excluded.updated_at`,
      )
      .run(nodeId, secretSha256, this.#clock.now());
  }

  /** Keeps a node's circuit breaker (a restart, or another coordinator the node moves to, takes it up). */
  saveCircuit(nodeId: string, c: SavedCircuit): void {
    this.#prep(
      `INSERT INTO node_reputation (node_id, circuit_state, circuit_failures, circuit_opened_at, circuit_opens, updated_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (node_id) DO UPDATE SET circuit_state = excluded.circuit_state, circuit_failures = excluded.circuit_failures,
         circuit_opened_at = excluded.circuit_opened_at, circuit_opens = excluded.circuit_opens, updated_at = excluded.updated_at`,
    ).run(nodeId, c.state, c.failures, c.openedAt, c.opens, this.#clock.now());
  }

  /** A node's circuit as last kept, or null. */
  circuit(nodeId: string): SavedCircuit | null {
    const r = this.#prep<[string], { state: string | null; failures: number; opened_at: number | null; opens: number }>(
      'SELECT circuit_state AS state, circuit_failures AS failures, circuit_opened_at AS opened_at, circuit_opens AS opens FROM node_reputation WHERE node_id = ?',
    ).get(nodeId);
    if (!r || r.state === null) return null;
    return { state: r.state as SavedCircuit['state'], failures: r.failures, openedAt: r.opened_at ?? 0, opens: r.opens };
  }

  /** The digest of the resume secret last given to this node id, or null. */
  nodeSecretSha256(nodeId: string): string | null {
    return this.#prep<[string], { s: string | null }>('SELECT secret_sha256 AS s FROM node_reputation WHERE node_id = ?').get(nodeId)?.s ?? null;
  }

  #mark(marks: readonly ReputationMark[], now: number): void {
    if (marks.length === 0) return;
    const bump = this.#prep(
      `INSERT INTO node_reputation (node_id, agreed, outvoted, pass, fail, updated_at) VALUES (@nodeId, @agreed, @outvoted, @pass, @fail, @now)
       ON CONFLICT (node_id) DO UPDATE SET agreed = node_reputation.agreed + excluded.agreed, outvoted = node_reputation.outvoted + excluded.outvoted,
         pass = node_reputation.pass + excluded.pass, fail = node_reputation.fail + excluded.fail, updated_at = excluded.updated_at`,
    );
    for (const m of marks) {
      bump.run({ nodeId: m.nodeId, agreed: 0, outvoted: 0, pass: 0, fail: 0, [m.mark]: m.delta, now });
    }
  }

  // ---------------------------------------------------------------- modules and agents

  putModule(sha256: string, bytes: Uint8Array): void {
    this.db
      .prepare('INSERT INTO modules (sha256, size, bytes, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING')
      .run(sha256, bytes.byteLength, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), this.#clock.now());
  }

  getModule(sha256: string): Buffer | null {
    const row = this.db.prepare<[string], { bytes: Buffer }>('SELECT bytes FROM modules WHERE sha256 = ?').get(sha256);
    return row?.bytes ?? null;
  }

  /** Stores a version; answers false if it exists already (the caller compares content). */
  putAgentVersion(name: string, version: string, moduleHash: string, config: unknown): boolean {
    const info = this.db
      .prepare(
        `INSERT INTO agent_versions (name, version, module_hash, config, created_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (name, version) DO NOTHING`,
      )
      .run(name, version, moduleHash, JSON.stringify(config), this.#clock.now());
    return info.changes === 1;
  }

  /** Every agent version, oldest first. */
  /** Every agent version (or those of `name`), in publication order. */
  agentVersions(name?: string): AgentVersionRow[] {
    const columns = 'SELECT a.name, a.version, a.module_hash, m.size, a.config, a.created_at FROM agent_versions a JOIN modules m ON m.sha256 = a.module_hash';
    if (name !== undefined) return this.#prep<[string], AgentVersionRow>(`${columns} WHERE a.name = ? ORDER BY a.seq`).all(name);
    return this.#prep<[], AgentVersionRow>(`${columns} ORDER BY a.seq`).all();
  }

  // ---------------------------------------------------------------- datasets

  /**
   * Stores a dataset (content-addressed: the same bytes are kept once) and records `tenant` as one of
   * its uploaders ('' stands for no tenant). `created`: new to the caller — for a tenant, its first upload
   * of these bytes (another tenant's upload of the same bytes is not shown); without a tenant, new bytes.
   */
  putDataset(sha256: string, bytes: Uint8Array, conversations: number, tenant: string | null): { created: boolean; record: DatasetRow } {
    const now = this.#clock.now();
    const owner = tenant ?? '';
    return this.db.transaction(() => {
      const stored = this.db
        .prepare('INSERT INTO datasets (sha256, size, conversations, bytes, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING')
        .run(sha256, bytes.byteLength, conversations, Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), now);
      const owned = this.db.prepare('INSERT INTO dataset_owners (sha256, tenant, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING').run(sha256, owner, now);
      const created = tenant === null ? stored.changes === 1 : owned.changes === 1;
      return { created, record: this.dataset(sha256, tenant)! };
    })();
  }

  /** A dataset's record as `tenant` sees it (null: any tenant's), or null when it has none. */
  dataset(sha256: string, tenant: string | null): DatasetRow | null {
    const row =
      tenant === null
        ? this.db.prepare<[string], DatasetRow>('SELECT sha256, size, conversations, created_at FROM datasets WHERE sha256 = ?').get(sha256)
        : this.db
            .prepare<[string, string], DatasetRow>(
              `SELECT d.sha256, d.size, d.conversations, o.created_at FROM dataset_owners o JOIN datasets d ON d.sha256 = o.sha256
               WHERE o.sha256 = ? AND o.tenant = ?`,
            )
            .get(sha256, tenant);
    return row ?? null;
  }

  /** The datasets `tenant` uploaded (null: all), oldest first. */
  datasets(tenant: string | null): DatasetRow[] {
    if (tenant === null) return this.db.prepare<[], DatasetRow>('SELECT sha256, size, conversations, created_at FROM datasets ORDER BY created_at, sha256').all();
    return this.db
      .prepare<[string], DatasetRow>(
        `SELECT d.sha256, d.size, d.conversations, o.created_at FROM dataset_owners o JOIN datasets d ON d.sha256 = o.sha256
         WHERE o.tenant = ? ORDER BY o.created_at, o.sha256`,
      )
      .all(tenant);
  }

  /** A dataset's bytes, when `tenant` (null: any) may read them. */
  datasetBytes(sha256: string, tenant: string | null): Buffer | null {
    if (this.dataset(sha256, tenant) === null) return null;
    return this.db.prepare<[string], { bytes: Buffer }>('SELECT bytes FROM datasets WHERE sha256 = ?').get(sha256)?.bytes ?? null;
  }

  // ---------------------------------------------------------------- blobs

  /**
   * Records a blob whose bytes are stored (server/blobs.ts keeps them as files) and `tenant` as one of its
   * uploaders ('' for no tenant). `created` as for datasets: new to the caller's tenant (or new bytes without one).
   */
  putBlob(sha256: string, size: number, tenant: string | null): { created: boolean; record: BlobRow } {
    const now = this.#clock.now();
    return this.db.transaction(() => {
      const stored = this.db.prepare('INSERT INTO blobs (sha256, size, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING').run(sha256, size, now);
      const owned = this.db.prepare('INSERT INTO blob_owners (sha256, tenant, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING').run(sha256, tenant ?? '', now);
      const created = tenant === null ? stored.changes === 1 : owned.changes === 1;
      return { created, record: this.blob(sha256, tenant)! };
    })();
  }

  /** A blob's record as `tenant` sees it (null: any tenant's), or null when it has none. */
  blob(sha256: string, tenant: string | null): BlobRow | null {
    const row =
      tenant === null
        ? this.db.prepare<[string], BlobRow>('SELECT sha256, size, created_at FROM blobs WHERE sha256 = ?').get(sha256)
        : this.db
            .prepare<[string, string], BlobRow>(
              'SELECT b.sha256, b.size, o.created_at FROM blob_owners o JOIN blobs b ON b.sha256 = o.sha256 WHERE o.sha256 = ? AND o.tenant = ?',
            )
            .get(sha256, tenant);
    return row ?? null;
  }

  /** The blobs `tenant` uploaded (null: all), oldest first. */
  blobs(tenant: string | null): BlobRow[] {
    if (tenant === null) return this.db.prepare<[], BlobRow>('SELECT sha256, size, created_at FROM blobs ORDER BY created_at, sha256').all();
    return this.db
      .prepare<[string], BlobRow>(
        'SELECT b.sha256, b.size, o.created_at FROM blob_owners o JOIN blobs b ON b.sha256 = o.sha256 WHERE o.tenant = ? ORDER BY o.created_at, o.sha256',
      )
      .all(tenant);
  }

  // ---------------------------------------------------------------- bytes every coordinator of a shared journal reads

  /** Writes chunk `n` of a blob's bytes (a shared journal keeps them for every coordinator); a chunk already there stays. */
  putBlobChunk(sha256: string, n: number, bytes: Uint8Array): void {
    this.#prep('INSERT INTO blob_chunks (sha256, n, bytes) VALUES (?, ?, ?) ON CONFLICT DO NOTHING').run(sha256, n, bytes);
  }

  /** Chunk `n` of a blob's bytes, or null. */
  blobChunk(sha256: string, n: number): Buffer | null {
    return this.#prep<[string, number], { bytes: Buffer }>('SELECT bytes FROM blob_chunks WHERE sha256 = ? AND n = ?').get(sha256, n)?.bytes ?? null;
  }

  /**
   * Stores an adapter version's files and metadata as the next version of `base`/`name`, answering that version.
   * On a shared journal two coordinators may take the same number at once: the loser's insert conflicts and it
   * takes the next one.
   */
  putAdapterVersion(base: string, name: string, meta: (version: number) => object, config: Uint8Array, weights: Uint8Array): number {
    for (let tries = 0; ; tries++) {
      const version =
        (this.db.prepare<[string, string], { v: number | null }>('SELECT MAX(version) AS v FROM adapter_versions WHERE base = ? AND name = ?').get(base, name)?.v ?? 0) + 1;
      const done = this.db
        .prepare('INSERT INTO adapter_versions (base, name, version, meta, config, weights, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING')
        .run(base, name, version, JSON.stringify(meta(version)), config, weights, this.#clock.now());
      if (done.changes === 1) return version;
      if (tries >= 20) throw new AppError('INTERNAL', `Could not number a new version of adapter ${name} for ${base}: other coordinators kept taking the next one.`);
    }
  }

  /** Every adapter version the journal keeps (base, name, version), in that order. */
  adapterVersions(): Array<{ base: string; name: string; version: number }> {
    return this.db.prepare<[], { base: string; name: string; version: number }>('SELECT base, name, version FROM adapter_versions ORDER BY base, name, version').all();
  }

  /** One adapter version's metadata (JSON) and files, or null. */
  adapterVersion(base: string, name: string, version: number): { meta: string; config: Buffer; weights: Buffer } | null {
    return (
      this.db
        .prepare<[string, string, number], { meta: string; config: Buffer; weights: Buffer }>(
          'SELECT meta, config, weights FROM adapter_versions WHERE base = ? AND name = ? AND version = ?',
        )
        .get(base, name, version) ?? null
    );
  }

  /** The setting `key`; when there is none yet, `make()` is written first (the first writer wins, on a shared journal too). */
  setting(key: string, make: () => string): string {
    const read = this.db.prepare<[string], { value: string }>('SELECT value FROM settings WHERE key = ?');
    const have = read.get(key);
    if (have) return have.value;
    this.db.prepare('INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT DO NOTHING').run(key, make());
    return read.get(key)!.value;
  }

  /** Settings whose key starts with `prefix`, by key. */
  settingsWithPrefix(prefix: string): Array<{ key: string; value: string }> {
    return this.db.prepare<[number, string], { key: string; value: string }>('SELECT key, value FROM settings WHERE substr(key, 1, ?) = ? ORDER BY key').all(prefix.length, prefix);
  }

  // ---------------------------------------------------------------- train checkpoints

  /** Keeps a train task's checkpoint after `step` (the latest only: one of an earlier step does not replace it). */
  putCheckpoint(taskId: TaskId, step: number, sha256: string, bytes: Uint8Array): boolean {
    return (
      this.db
        .prepare(
          `INSERT INTO train_checkpoints (task_id, step, sha256, bytes, created_at) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (task_id) DO UPDATE SET step = excluded.step, sha256 = excluded.sha256, bytes = excluded.bytes, created_at = excluded.created_at
           WHERE excluded.step > train_checkpoints.step`,
        )
        .run(taskId, step, sha256, bytes, this.#clock.now()).changes === 1
    );
  }

  /** The latest checkpoint of a train task (without its bytes), or null. */
  checkpointOf(taskId: TaskId): { step: number; sha256: string; bytes: number } | null {
    return this.#prep<[string], { step: number; sha256: string; bytes: number }>('SELECT step, sha256, length(bytes) AS bytes FROM train_checkpoints WHERE task_id = ?').get(taskId) ?? null;
  }

  checkpointBytes(taskId: TaskId): { step: number; sha256: string; bytes: Buffer } | null {
    return this.db.prepare<[string], { step: number; sha256: string; bytes: Buffer }>('SELECT step, sha256, bytes FROM train_checkpoints WHERE task_id = ?').get(taskId) ?? null;
  }

  dropCheckpoint(taskId: TaskId): void {
    this.db.prepare('DELETE FROM train_checkpoints WHERE task_id = ?').run(taskId);
  }

  // ---------------------------------------------------------------- webhook deliveries

  /** A task's webhook was delivered, or given up after its attempts: no coordinator delivers it again. */
  webhookDone(id: TaskId): void {
    this.#prep('UPDATE tasks SET webhook_done = ? WHERE id = ? AND webhook_done IS NULL').run(this.#clock.now(), id);
  }

  /**
   * Claims, for `claimMs`, up to `limit` ended tasks whose webhook is still not delivered `graceMs` after they
   * ended: the coordinator that ended them stopped before it delivered (or restarted). Another coordinator's
   * claim is skipped while it lasts; on a shared journal rows being claimed elsewhere are skipped too.
   */
  claimWebhooks(graceMs: number, claimMs: number, limit: number): TaskId[] {
    const now = this.#clock.now();
    const pick = `SELECT id FROM tasks WHERE webhook IS NOT NULL AND webhook_done IS NULL AND finished_at <= ?
      AND (webhook_claim IS NULL OR webhook_claim < ?) ORDER BY finished_at LIMIT ?${this.shared ? ' FOR UPDATE SKIP LOCKED' : ''}`;
    return this.#prep<[number, number, number, number], { id: TaskId }>(`UPDATE tasks SET webhook_claim = ? WHERE id IN (${pick}) RETURNING id`)
      .all(now + claimMs, now - graceMs, now, limit)
      .map((r) => r.id);
  }

  // ---------------------------------------------------------------- quotas and events

  putQuota(tenant: string, quota: { maxQueued: number | null; agentLimits: unknown; weight: number | null; maxLeased: number | null }): void {
    this.db
      .prepare(
        `INSERT INTO quotas (tenant, max_queued, agent_limits, weight, max_leased, updated_at) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (tenant) DO UPDATE SET max_queued = excluded.max_queued, agent_limits = excluded.agent_limits,
           weight = excluded.weight, max_leased = excluded.max_leased, updated_at = excluded.updated_at`,
      )
      .run(tenant, quota.maxQueued, quota.agentLimits == null ? null : JSON.stringify(quota.agentLimits), quota.weight, quota.maxLeased, this.#clock.now());
  }

  quotas(): QuotaRow[] {
    return this.db.prepare<[], QuotaRow>('SELECT tenant, max_queued, agent_limits, weight, max_leased FROM quotas').all();
  }

  event(type: string, taskId: string | null, nodeId: string | null, data?: unknown): void {
    this.#event.run(this.#clock.now(), type, taskId, nodeId, data === undefined ? null : JSON.stringify(data));
  }

  events(limit = 100): Array<{ at: number; type: string; taskId: string | null; nodeId: string | null; data: unknown }> {
    return this.db
      .prepare<[number], { at: number; type: string; task_id: string | null; node_id: string | null; data: string | null }>(
        'SELECT at, type, task_id, node_id, data FROM events ORDER BY seq DESC LIMIT ?',
      )
      .all(limit)
      .map((r) => ({ at: r.at, type: r.type, taskId: r.task_id, nodeId: r.node_id, data: r.data ? JSON.parse(r.data) : null }));
  }

  close(): void {
    if (!this.db.open) return;
    if (this.shared) {
      // Leaving: the others sweep what this one still had leased at once, not after the dead time.
      try {
        this.#prep<[string]>('DELETE FROM coordinators WHERE id = ?').run(this.coordinatorId);
      } catch {
        // the store is out of reach: the others judge this one dead by its beats instead
      }
    }
    this.db.close();
  }
}

export interface BlobRow {
  sha256: string;
  size: number;
  created_at: number;
}

export interface DatasetRow {
  sha256: string;
  size: number;
  conversations: number;
  created_at: number;
}

interface EndedRow {
  state: TaskState;
  kind: TaskKind;
  attempts: number;
  created_at: number;
  node_id: string | null;
  webhook: string | null;
}

/** The code a failed attempt is counted under: its own when it is one of ours, else INTERNAL. */
function codeOf(err: ErrorInfo): string {
  return isErrorCode(err.code) ? err.code : 'INTERNAL';
}

function toEnded(taskId: TaskId, row: EndedRow, errorCode: string | null): Ended {
  return {
    taskId,
    state: row.state,
    kind: row.kind,
    attempts: row.attempts,
    createdAt: row.created_at,
    nodeId: row.node_id as NodeId | null,
    webhook: row.webhook,
    errorCode,
  };
}

export function errorInfo(code: keyof typeof ERRORS, message: string, details?: Record<string, unknown>): ErrorInfo {
  const info: ErrorInfo = { code, name: 'AppError', message };
  if (details) info.details = details;
  return info;
}

/** The schema's version: SQLite keeps it in user_version, PostgreSQL in journal_schema. */
export const SCHEMA_VERSION = 6;

/** The journal's tables in PostgreSQL's types (millisecond times are BIGINT; tenants compare bytewise, as in SQLite). */
export function postgresSchema(): string {
  return SCHEMA.replace(/INTEGER PRIMARY KEY AUTOINCREMENT/g, 'BIGSERIAL PRIMARY KEY')
    .replace(/\bINTEGER\b/g, 'BIGINT')
    .replace(/\bBLOB\b/g, 'BYTEA')
    .replace(/\bREAL\b/g, 'DOUBLE PRECISION')
    .replace(/\btenant TEXT\b/g, 'tenant TEXT COLLATE "C"');
}

/** Lock key of the PostgreSQL migrations: coordinators that start at once apply them one after another. */
const MIGRATION_LOCK = 4_207_004;

/**
 * Brings a PostgreSQL journal to SCHEMA_VERSION: in one transaction under an advisory lock, so coordinators
 * that start together neither race nor apply a step twice. A journal written by a newer coordinator is refused.
 */
function migratePostgres(db: SqlDb): void {
  db.transaction(() => {
    db.prepare('SELECT pg_advisory_xact_lock(?)').get(MIGRATION_LOCK);
    db.exec('CREATE TABLE IF NOT EXISTS journal_schema (version INTEGER NOT NULL, applied_at BIGINT NOT NULL)');
    const version = db.prepare<[], { v: number | null }>('SELECT MAX(version) AS v FROM journal_schema').get()?.v ?? 0;
    if (version > SCHEMA_VERSION) {
      throw new Error(`The journal at ${db.name} has schema version ${version}, newer than this coordinator's ${SCHEMA_VERSION}; run the newer coordinator.`);
    }
    // Version 4 is the first PostgreSQL schema: all of it at once. Later versions add their steps here.
    if (version < 4) {
      db.exec(postgresSchema());
      db.prepare('INSERT INTO journal_schema (version, applied_at) VALUES (?, ?)').run(4, Date.now());
    }
    if (version < 5) {
      // Version 5: several coordinators. Each lease names the coordinator that granted it; coordinators beat.
      db.exec(`ALTER TABLE tasks ADD COLUMN IF NOT EXISTS coordinator TEXT;
        ALTER TABLE task_replicas ADD COLUMN IF NOT EXISTS coordinator TEXT;
        ALTER TABLE node_reputation ADD COLUMN IF NOT EXISTS circuit_state TEXT;
        ALTER TABLE node_reputation ADD COLUMN IF NOT EXISTS circuit_failures BIGINT NOT NULL DEFAULT 0;
        ALTER TABLE node_reputation ADD COLUMN IF NOT EXISTS circuit_opened_at BIGINT;
        ALTER TABLE node_reputation ADD COLUMN IF NOT EXISTS circuit_opens BIGINT NOT NULL DEFAULT 0;
        CREATE TABLE IF NOT EXISTS coordinators (id TEXT PRIMARY KEY, started_at BIGINT NOT NULL, seen_at BIGINT NOT NULL)`);
      db.prepare('INSERT INTO journal_schema (version, applied_at) VALUES (?, ?)').run(5, Date.now());
    }
    if (version < 6) {
      // Version 6: webhook deliveries outlive their coordinator; blob bytes, adapters and settings shared by all.
      db.exec(`ALTER TABLE tasks ADD COLUMN IF NOT EXISTS webhook_done BIGINT;
        ALTER TABLE tasks ADD COLUMN IF NOT EXISTS webhook_claim BIGINT;
        ${SCHEMA_6_TABLES.replace(/\bINTEGER\b/g, 'BIGINT').replace(/\bBLOB\b/g, 'BYTEA')}
        ${SCHEMA_6_INDEXES}`);
      db.prepare(`UPDATE tasks SET webhook_done = finished_at WHERE webhook IS NOT NULL AND state NOT IN ('queued', 'leased')`).run();
      db.prepare('INSERT INTO journal_schema (version, applied_at) VALUES (?, ?)').run(6, Date.now());
    }
  })();
}

/** Brings a journal written by an older coordinator up to this schema (new tables are created by SCHEMA). */
function migrate(db: SqliteDb): void {
  const pragma = (p: string): unknown => db.raw.pragma(p, { simple: true });
  const columnsOf = (table: string): Set<string> => new Set(db.prepare<[], { name: string }>(`PRAGMA table_info(${table})`).all().map((c) => c.name));
  const columns = columnsOf('tasks');
  if (!columns.has('replication')) db.exec('ALTER TABLE tasks ADD COLUMN replication TEXT');
  if ((pragma('user_version') as number) < 1) {
    // Version 1: idempotency keys are per tenant (see storedKey). Keys were global before, so no two collide.
    db.transaction(() => {
      db.prepare(
        `UPDATE tasks SET idempotency_key = char(1) || tenant || char(1) || idempotency_key
         WHERE tenant IS NOT NULL AND idempotency_key IS NOT NULL AND substr(idempotency_key, 1, 1) <> char(1)`,
      ).run();
      pragma('user_version = 1');
    })();
  }
  if ((pragma('user_version') as number) < 2) {
    // Version 2: each task keeps its W3C trace context (server/tracing.ts); older tasks have none (trace: null).
    db.transaction(() => {
      if (!columns.has('traceparent')) db.exec('ALTER TABLE tasks ADD COLUMN traceparent TEXT');
      pragma('user_version = 2');
    })();
  }
  if ((pragma('user_version') as number) < 3) {
    // Version 3: blobs (POST /v1/blobs) and their owners per tenant; the tables are new (SCHEMA creates them), no rows to move.
    pragma('user_version = 3');
  }
  if ((pragma('user_version') as number) < 4) {
    // Version 4: the fair scheduler. Ready tasks are read per tenant (tasks_fair, tasks_age replace tasks_ready);
    // a queued task keeps why it waits (wait_reason, wait_since); quotas gain a weight and a maxLeased.
    db.transaction(() => {
      if (!columns.has('wait_reason')) db.exec('ALTER TABLE tasks ADD COLUMN wait_reason TEXT');
      if (!columns.has('wait_since')) db.exec('ALTER TABLE tasks ADD COLUMN wait_since INTEGER');
      const quotaColumns = columnsOf('quotas');
      if (!quotaColumns.has('weight')) db.exec('ALTER TABLE quotas ADD COLUMN weight REAL');
      if (!quotaColumns.has('max_leased')) db.exec('ALTER TABLE quotas ADD COLUMN max_leased INTEGER');
      db.exec('DROP INDEX IF EXISTS tasks_ready');
      pragma('user_version = 4');
    })();
  }
  if ((pragma('user_version') as number) < 5) {
    // Version 5: each lease names the coordinator that granted it (the coordinators table is new: SCHEMA creates it),
    db.transaction(() => {
      if (!columns.has('coordinator')) db.exec('ALTER TABLE tasks ADD COLUMN coordinator TEXT');
      const replicaColumns = columnsOf('task_replicas');
      if (!replicaColumns.has('coordinator')) db.exec('ALTER TABLE task_replicas ADD COLUMN coordinator TEXT');
      // …and node circuits are kept beside their reputation.
      const nodeColumns = columnsOf('node_reputation');
      if (!nodeColumns.has('circuit_state')) {
        db.exec(`ALTER TABLE node_reputation ADD COLUMN circuit_state TEXT;
          ALTER TABLE node_reputation ADD COLUMN circuit_failures INTEGER NOT NULL DEFAULT 0;
          ALTER TABLE node_reputation ADD COLUMN circuit_opened_at INTEGER;
          ALTER TABLE node_reputation ADD COLUMN circuit_opens INTEGER NOT NULL DEFAULT 0;`);
      }
      pragma('user_version = 5');
    })();
  }
  if ((pragma('user_version') as number) < 6) {
    // Version 6: webhook deliveries outlive their coordinator (a restart delivers what a crash left); the tables
    // for blob bytes, adapters and settings are new (SCHEMA creates them). Tasks that ended before were delivered.
    db.transaction(() => {
      if (!columns.has('webhook_done')) db.exec('ALTER TABLE tasks ADD COLUMN webhook_done INTEGER; ALTER TABLE tasks ADD COLUMN webhook_claim INTEGER;');
      db.exec(SCHEMA_6_INDEXES);
      db.prepare(`UPDATE tasks SET webhook_done = finished_at WHERE webhook IS NOT NULL AND state NOT IN ('queued', 'leased')`).run();
      pragma('user_version = 6');
    })();
  }
}

/**
 * Idempotency keys are per tenant: one tenant's key never meets another's (no conflict, no task id
 * shown across tenants). A tenant's key is stored as `\x01tenant\x01key`; callers' keys hold no
 * control characters (the submission schema), so no caller's key takes that form.
 */
function storedKey(tenant: string | null, key: string | null): string | null {
  return key === null || tenant === null ? key : `\x01${tenant}\x01${key}`;
}

function callerKey(stored: string | null): string | null {
  return stored !== null && stored.startsWith('\x01') ? stored.slice(stored.indexOf('\x01', 1) + 1) : stored;
}

/** The record's `trace` from a stored traceparent (`00-<trace id>-<span id>-<flags>`); null for tasks journaled before traces. */
function traceRef(traceparent: string | null): StoredTask['trace'] {
  return traceparent === null || traceparent.length < 55 ? null : { traceId: traceparent.slice(3, 35), spanId: traceparent.slice(36, 52) };
}

function rowToRecord(r: TaskRow): StoredTask {
  return {
    id: r.id as TaskId,
    kind: r.kind,
    state: r.state,
    priority: r.priority,
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    idempotencyKey: callerKey(r.idempotency_key),
    tenant: r.tenant,
    nodeId: r.node_id as NodeId | null,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    runAfter: r.run_after,
    deadline: r.deadline,
    payload: JSON.parse(r.payload) as TaskSpec['payload'],
    result: r.result ? (JSON.parse(r.result) as TaskResult) : null,
    error: r.error ? (JSON.parse(r.error) as ErrorInfo) : null,
    moduleHash: r.module_hash,
    labels: r.labels ? (JSON.parse(r.labels) as Record<string, string>) : null,
    webhook: r.webhook,
    finishedAt: r.finished_at,
    verdict: r.verdict ? { verdict: r.verdict as 'pass' | 'fail', reason: r.verdict_reason } : null,
    replication: r.replication ? (JSON.parse(r.replication) as Replication) : null,
    trace: traceRef(r.traceparent),
    // The reason last written (server/scheduler.ts explains a queued task's wait afresh where it answers).
    waiting: r.state === 'queued' && r.wait_reason ? { reason: r.wait_reason, since: r.wait_since ?? r.updated_at, message: WAIT_MESSAGES[r.wait_reason] ?? '' } : null,
  };
}
