/**
 * The journal: every task, agent version, module and notable event, in one
 * SQLite file in WAL mode. Submits commit with `synchronous=FULL` (the WAL is
 * fsynced, so a task is on disk before the 202 whether the process or the OS
 * dies); attempt records (leases, results) with `attemptSync`, NORMAL by
 * default: safe against a process crash, and an OS crash only makes the last
 * attempts run again. The hot path (insert batch, lease batch, complete batch)
 * runs prepared statements inside one transaction per batch.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import {
  AppError,
  ERRORS,
  LIMITS,
  isErrorCode,
  type ErrorInfo,
  type NodeId,
  type TaskId,
  type TaskKind,
  type TaskRecord,
  type TaskResult,
  type TaskSpec,
  type TaskState,
} from '../shared';

export interface Clock {
  now(): number;
}
export const systemClock: Clock = { now: () => Date.now() };

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
}

export interface Lease {
  taskId: TaskId;
  leaseId: string;
  nodeId: NodeId;
}

export type Outcome = { ok: true; result: unknown } | { ok: false; error: ErrorInfo };

export interface Completion {
  taskId: TaskId;
  leaseId: string;
  outcome: Outcome;
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
}

/** The task record plus what the coordinator adds to it. */
export interface StoredTask extends TaskRecord {
  moduleHash: string | null;
  labels: Record<string, string> | null;
  webhook: string | null;
  finishedAt: number | null;
  verdict: { verdict: 'pass' | 'fail'; reason: string | null } | null;
}

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
  finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks (state, kind, priority DESC, seq);
CREATE INDEX IF NOT EXISTS tasks_deadline ON tasks (deadline) WHERE deadline IS NOT NULL AND state = 'queued';
CREATE INDEX IF NOT EXISTS tasks_tenant ON tasks (tenant, state) WHERE tenant IS NOT NULL;
CREATE TABLE IF NOT EXISTS modules (
  sha256 TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  bytes BLOB NOT NULL,
  created_at INTEGER NOT NULL
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
  updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  at INTEGER NOT NULL,
  type TEXT NOT NULL,
  task_id TEXT,
  node_id TEXT,
  data TEXT
);
`;

export class Journal {
  readonly db: Database.Database;
  readonly #clock: Clock;
  /** Results that came from a lease that is no longer current, dropped. */
  duplicatesDropped = 0;
  /** Leased tasks put back in the queue when this journal opened. */
  readonly requeuedOnOpen: number;

  readonly #insert: Database.Statement;
  readonly #byKey: Database.Statement<[string], { id: string; spec_hash: string | null }>;
  readonly #get: Database.Statement<[string], TaskRow>;
  readonly #ready: Database.Statement<[string, number, number], ReadyRow>;
  readonly #lease: Database.Statement;
  readonly #expire: Database.Statement;
  readonly #sweep: Database.Statement;
  readonly #succeed: Database.Statement;
  readonly #fail: Database.Statement;
  readonly #cancel: Database.Statement;
  readonly #counts: Database.Statement<[], { state: TaskState; n: number }>;
  readonly #tenantPending: Database.Statement<[string], { n: number }>;
  readonly #event: Database.Statement;

  /**
   * Sync mode of the commits that record attempts (leases, results, expiries).
   * 'full' fsyncs each of them; 'normal' leaves them to the next full commit or
   * checkpoint: a process crash loses nothing either way (WAL), an OS crash may
   * lose the last ones, which puts those tasks back in the queue to run again.
   * Submits, cancels, verdicts and registry writes are always 'full'.
   */
  readonly attemptSync: 'full' | 'normal';
  #sync: 'full' | 'normal' = 'full';

  constructor(path: string, clock: Clock = systemClock, opts: { attemptSync?: 'full' | 'normal' } = {}) {
    this.attemptSync = opts.attemptSync ?? 'normal';
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    this.db = new Database(path);
    this.#clock = clock;
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.pragma('foreign_keys = ON');
    this.db.pragma('busy_timeout = 5000');
    this.db.exec(SCHEMA);

    this.#insert = this.db.prepare(`
      INSERT INTO tasks (id, kind, state, priority, attempts, max_attempts, run_after, deadline, idempotency_key,
        spec_hash, tenant, webhook, module_hash, module_size, model, payload, labels, created_at, updated_at)
      VALUES (@id, @kind, 'queued', @priority, 0, @maxAttempts, @now, @deadline, @idempotencyKey,
        @specHash, @tenant, @webhook, @moduleHash, @moduleSize, @model, @payload, @labels, @now, @now)
      ON CONFLICT (idempotency_key) DO NOTHING`);
    this.#byKey = this.db.prepare('SELECT id, spec_hash FROM tasks WHERE idempotency_key = ?');
    this.#get = this.db.prepare('SELECT * FROM tasks WHERE id = ?');
    this.#ready = this.db.prepare(`
      SELECT seq, id, kind, priority, attempts, max_attempts, deadline, module_hash, module_size, model, payload
      FROM tasks WHERE state = 'queued' AND kind = ? AND run_after <= ?
      ORDER BY priority DESC, seq LIMIT ?`);
    this.#lease = this.db.prepare(`
      UPDATE tasks SET state = 'leased', lease_id = @leaseId, node_id = @nodeId, attempts = attempts + 1,
        updated_at = @now WHERE id = @taskId AND state = 'queued'`);
    this.#expire = this.db.prepare(`
      UPDATE tasks SET state = 'failed', error = @error, updated_at = @now, finished_at = @now
      WHERE id = @id AND state = 'queued'
      RETURNING id, state, kind, attempts, created_at, node_id, webhook`);
    this.#sweep = this.db.prepare(`
      UPDATE tasks INDEXED BY tasks_deadline SET state = 'failed', error = @error, updated_at = @now, finished_at = @now
      WHERE state = 'queued' AND deadline IS NOT NULL AND deadline < @now
      RETURNING id, state, kind, attempts, created_at, node_id, webhook`);
    this.#succeed = this.db.prepare(`
      UPDATE tasks SET state = 'succeeded', result = @result, error = NULL, lease_id = NULL,
        updated_at = @now, finished_at = @now
      WHERE id = @id AND lease_id = @leaseId AND state = 'leased'
      RETURNING state, kind, attempts, created_at, node_id, webhook`);
    this.#fail = this.db.prepare(`
      UPDATE tasks SET
        state = CASE WHEN @retryable = 1 AND attempts < max_attempts THEN 'queued'
                     WHEN @retryable = 1 THEN 'dead' ELSE 'failed' END,
        run_after = CASE WHEN @retryable = 1 AND attempts < max_attempts
          THEN @now + CAST(@jitter * MIN(@cap, @base * (1 << (attempts - 1))) AS INTEGER) ELSE run_after END,
        finished_at = CASE WHEN @retryable = 1 AND attempts < max_attempts THEN NULL ELSE @now END,
        error = @error, lease_id = NULL, updated_at = @now
      WHERE id = @id AND lease_id = @leaseId AND state = 'leased'
      RETURNING state, kind, attempts, created_at, node_id, webhook`);
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

    this.requeuedOnOpen = this.#requeueLeased();
  }

  /** Tasks a killed coordinator left leased: their lease is gone, so they are queued again (or dead if out of attempts). */
  #requeueLeased(): number {
    const now = this.#clock.now();
    const error = JSON.stringify(errorInfo('LEASE_EXPIRED', 'The coordinator restarted while the task was leased.'));
    const info = this.db
      .prepare(
        `UPDATE tasks SET
           state = CASE WHEN attempts < max_attempts THEN 'queued' ELSE 'dead' END,
           finished_at = CASE WHEN attempts < max_attempts THEN NULL ELSE ? END,
           lease_id = NULL, error = ?, run_after = ?, updated_at = ?
         WHERE state = 'leased'`,
      )
      .run(now, error, now, now);
    if (info.changes > 0) this.event('requeued_on_open', null, null, { count: info.changes });
    return info.changes;
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
      for (let i = 0; i < items.length; i++) {
        const t = items[i]!;
        const info = this.#insert.run({
          id: t.id,
          kind: t.kind,
          priority: t.priority,
          maxAttempts: t.maxAttempts,
          now,
          deadline: t.deadline,
          idempotencyKey: t.idempotencyKey,
          specHash: t.specHash,
          tenant: t.tenant,
          webhook: t.webhook,
          moduleHash: t.moduleHash,
          moduleSize: t.moduleSize,
          model: t.model,
          payload: JSON.stringify(t.payload),
          labels: t.labels ? JSON.stringify(t.labels) : null,
        });
        if (info.changes === 1) {
          out.push({ id: t.id, created: true });
          continue;
        }
        const existing = this.#byKey.get(t.idempotencyKey ?? '');
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
    return row ? rowToRecord(row) : null;
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

  /** Queued tasks of one kind whose backoff has passed, highest priority then oldest first. */
  ready(kind: TaskKind, now: number, limit: number): ReadyRow[] {
    return this.#ready.all(kind, now, limit);
  }

  /**
   * One transaction: lease every assignment (a task no longer queued is
   * skipped and left out of the answer) and fail the tasks past their deadline.
   */
  leaseBatch(leases: readonly Lease[], pastDeadline: readonly TaskId[]): { leased: Set<TaskId>; expired: Ended[] } {
    const now = this.#clock.now();
    const error = JSON.stringify(errorInfo('DEADLINE_EXCEEDED', 'The task passed its deadline before it could start.'));
    const run = this.db.transaction(() => {
      const leased = new Set<TaskId>();
      for (const l of leases) {
        if (this.#lease.run({ taskId: l.taskId, leaseId: l.leaseId, nodeId: l.nodeId, now }).changes === 1) {
          leased.add(l.taskId);
        }
      }
      const expired: Ended[] = [];
      for (const id of pastDeadline) {
        const row = this.#expire.get({ id, error, now }) as EndedRow | undefined;
        if (row) expired.push(toEnded(id, row, 'DEADLINE_EXCEEDED'));
      }
      return { leased, expired };
    });
    this.#setSync(this.attemptSync);
    const out = run.immediate();
    this.#setSync('full');
    return out;
  }

  /** Sets the connection's sync mode for the next commits. */
  #setSync(mode: 'full' | 'normal'): void {
    if (this.#sync === mode) return;
    this.db.pragma(`synchronous = ${mode === 'full' ? 'FULL' : 'NORMAL'}`);
    this.#sync = mode;
  }

  /** Fails every queued task past its deadline (DEADLINE_EXCEEDED), whether or not a node could take it. */
  expireDeadlines(): Ended[] {
    const now = this.#clock.now();
    const error = JSON.stringify(errorInfo('DEADLINE_EXCEEDED', 'The task passed its deadline before it could start.'));
    const rows = this.#sweep.all({ error, now }) as Array<EndedRow & { id: string }>;
    return rows.map((r) => toEnded(r.id as TaskId, r, 'DEADLINE_EXCEEDED'));
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
          const err = item.outcome.error;
          code = isErrorCode(err.code) ? err.code : 'INTERNAL';
          row = this.#fail.get({
            id: item.taskId,
            leaseId: item.leaseId,
            retryable: isErrorCode(err.code) && ERRORS[err.code].retryable ? 1 : 0,
            jitter: random(),
            cap: LIMITS.retryMaxMs,
            base: this.retryBaseMs,
            error: JSON.stringify(err),
            now,
          }) as EndedRow | undefined;
        }
        if (!row) {
          this.duplicatesDropped++;
          out.push(null);
        } else {
          out.push(toEnded(item.taskId, row, code));
        }
      }
      return out;
    });
    this.#setSync(this.attemptSync);
    const out = run.immediate();
    this.#setSync('full');
    return out;
  }

  /** Backoff base; tests lower it. */
  retryBaseMs: number = LIMITS.retryBaseMs;

  /** Cancels a queued or leased task; answers the lease it held (null if it was queued) or undefined if it was not cancellable. */
  cancel(id: TaskId, reason: string): { leaseId: string | null; nodeId: string | null } | undefined {
    const now = this.#clock.now();
    return this.db
      .transaction(() => {
        const row = this.#get.get(id);
        if (!row || (row.state !== 'queued' && row.state !== 'leased')) return undefined;
        this.#cancel.run({ id, now, error: JSON.stringify(errorInfo('CANCELLED', reason)) });
        return { leaseId: row.lease_id, nodeId: row.state === 'leased' ? row.node_id : null };
      })
      .immediate();
  }

  /**
   * Records a Layer 3 verdict on a task and, for agent tasks, on the agent
   * version's record (a new verdict replaces the task's earlier one).
   */
  setVerdict(task: StoredTask, verdict: 'pass' | 'fail', reason: string | null): void {
    const agent = task.kind === 'agent' ? (task.payload as { agent: string; version?: string }) : null;
    this.db
      .transaction(() => {
        this.db
          .prepare('UPDATE tasks SET verdict = ?, verdict_reason = ?, updated_at = ? WHERE id = ?')
          .run(verdict, reason, this.#clock.now(), task.id);
        if (!agent?.version) return;
        const bump = this.db.prepare(
          `INSERT INTO agent_verdicts (name, version, pass, fail) VALUES (@name, @version, @pass, @fail)
           ON CONFLICT (name, version) DO UPDATE SET pass = pass + @pass, fail = fail + @fail`,
        );
        const key = { name: agent.agent, version: agent.version };
        if (task.verdict) bump.run({ ...key, pass: task.verdict.verdict === 'pass' ? -1 : 0, fail: task.verdict.verdict === 'fail' ? -1 : 0 });
        bump.run({ ...key, pass: verdict === 'pass' ? 1 : 0, fail: verdict === 'fail' ? 1 : 0 });
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

  pendingForTenant(tenant: string): number {
    return this.#tenantPending.get(tenant)?.n ?? 0;
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
  agentVersions(): AgentVersionRow[] {
    return this.db
      .prepare<[], AgentVersionRow>(
        `SELECT a.name, a.version, a.module_hash, m.size, a.config, a.created_at
         FROM agent_versions a JOIN modules m ON m.sha256 = a.module_hash ORDER BY a.seq`,
      )
      .all();
  }

  // ---------------------------------------------------------------- quotas and events

  putQuota(tenant: string, maxQueued: number | null, agentLimits: unknown): void {
    this.db
      .prepare(
        `INSERT INTO quotas (tenant, max_queued, agent_limits, updated_at) VALUES (?, ?, ?, ?)
         ON CONFLICT (tenant) DO UPDATE SET max_queued = excluded.max_queued, agent_limits = excluded.agent_limits,
           updated_at = excluded.updated_at`,
      )
      .run(tenant, maxQueued, agentLimits == null ? null : JSON.stringify(agentLimits), this.#clock.now());
  }

  quotas(): QuotaRow[] {
    return this.db.prepare<[], QuotaRow>('SELECT tenant, max_queued, agent_limits FROM quotas').all();
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
    if (this.db.open) this.db.close();
  }
}

interface EndedRow {
  state: TaskState;
  kind: TaskKind;
  attempts: number;
  created_at: number;
  node_id: string | null;
  webhook: string | null;
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

function rowToRecord(r: TaskRow): StoredTask {
  return {
    id: r.id as TaskId,
    kind: r.kind,
    state: r.state,
    priority: r.priority,
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    idempotencyKey: r.idempotency_key,
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
  };
}
