/**
 * One seam for the journal's two stores: `SqlDb`, a synchronous SQL connection with prepared statements and
 * transactions, the subset of better-sqlite3's API the journal uses. `SqliteDb` is better-sqlite3 itself (the
 * embedded default: a file, WAL). `PostgresDb` talks to a PostgreSQL server through `pg`, run in a worker
 * thread that the caller waits on with `Atomics.wait` (server/pg-worker.ts): each statement is one round trip
 * to the server, the journal's logic stays the same code for both stores, and, as with SQLite, the event loop
 * waits while a statement runs (a loopback round trip is about a tenth of a millisecond). Beside it, `runAsync`
 * sends a whole transaction to a second connection of the same worker and answers a promise: the journal's hot
 * writes that need no answer to go on (results, conflict-free submits) use it, so the coordinator works while
 * the server commits them.
 *
 * The journal writes its SQL once, in the dialect both stores accept (RETURNING, ON CONFLICT, CAST … AS BIGINT,
 * CASE rather than two-argument MIN); `toPostgres` turns `?` and `@name` parameters into `$n`, drops SQLite's
 * `INDEXED BY` hints and turns `group_concat(x)` into `string_agg(x, ',')`.
 */
import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { MessageChannel, Worker, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import { AppError } from '../shared';

export type Params<P> = P extends unknown[] ? P : [P];

export interface Stmt<P extends unknown[] | object = unknown[], R = unknown> {
  run(...params: Params<P>): { changes: number };
  get(...params: Params<P>): R | undefined;
  all(...params: Params<P>): R[];
}

export type Tx<A extends unknown[], R> = ((...args: A) => R) & { immediate(...args: A): R };

export interface SqlDb {
  /** The file (SQLite) or the URL without its password (PostgreSQL). */
  readonly name: string;
  readonly open: boolean;
  prepare<P extends unknown[] | object = unknown[], R = unknown>(sql: string): Stmt<P, R>;
  /** Runs statements that take no parameters (schema). */
  exec(sql: string): void;
  /** `fn` in one transaction (nested calls are savepoints); a throw rolls it back. */
  transaction<A extends unknown[], R>(fn: (...args: A) => R): Tx<A, R>;
  /** How durably the next commits are written: 'full' waits for the disk, 'normal' may lose the last ones to an OS (or server) crash. */
  setSync(mode: 'full' | 'normal'): void;
  /**
   * A server store only (PostgreSQL): runs `stmts` (the journal's SQL and parameters, as `prepare` takes them) in
   * one transaction on a connection of their own, without blocking; answers each statement's rows. It sees only
   * what committed before it began, and the synchronous statements meanwhile do not see it until it commits.
   */
  runAsync?(stmts: ReadonlyArray<AsyncStmt>, opts?: { sync?: 'full' | 'normal' }): Promise<unknown[][]>;
  close(): void;
}

/** One statement of `SqlDb.runAsync`: SQL as `prepare` takes it, and the parameters `run`/`all` would get. */
export interface AsyncStmt {
  sql: string;
  params: unknown[];
}

/** Whether `target` (a --db value) names a PostgreSQL server rather than a SQLite file. */
export function isPostgresUrl(target: string): boolean {
  return /^postgres(ql)?:\/\//i.test(target);
}

export class SqliteDb implements SqlDb {
  readonly raw: Database.Database;

  constructor(path: string) {
    if (path !== ':memory:' && path !== '') mkdirSync(dirname(path), { recursive: true });
    this.raw = new Database(path);
    this.raw.pragma('journal_mode = WAL');
    this.raw.pragma('synchronous = FULL');
    this.raw.pragma('foreign_keys = ON');
    this.raw.pragma('busy_timeout = 5000');
  }

  get name(): string {
    return this.raw.name;
  }

  get open(): boolean {
    return this.raw.open;
  }

  prepare<P extends unknown[] | object = unknown[], R = unknown>(sql: string): Stmt<P, R> {
    return this.raw.prepare(sql) as unknown as Stmt<P, R>;
  }

  exec(sql: string): void {
    this.raw.exec(sql);
  }

  transaction<A extends unknown[], R>(fn: (...args: A) => R): Tx<A, R> {
    return this.raw.transaction(fn) as unknown as Tx<A, R>;
  }

  setSync(mode: 'full' | 'normal'): void {
    this.raw.pragma(`synchronous = ${mode === 'full' ? 'FULL' : 'NORMAL'}`);
  }

  close(): void {
    this.raw.close();
  }
}

/** A statement in PostgreSQL's form: `$n` parameters, and the names of `@name` parameters in `$n` order. */
export interface PgSql {
  text: string;
  names: string[] | null;
}

/** The journal's SQL in PostgreSQL's dialect (see the file's comment). */
export function toPostgres(sql: string): PgSql {
  const base = sql.replace(/\s+INDEXED BY \w+/gi, '').replace(/group_concat\(([^()]*)\)/gi, "string_agg($1, ',')");
  let out = '';
  let positional = 0;
  const names: string[] = [];
  for (let i = 0; i < base.length; i++) {
    const ch = base[i];
    if (ch === "'") {
      const end = base.indexOf("'", i + 1);
      if (end < 0) throw new Error(`toPostgres: an unterminated string in ${sql}`);
      out += base.slice(i, end + 1);
      i = end;
    } else if (ch === '?') {
      out += `$${++positional}`;
    } else if (ch === '@' && /[A-Za-z_]/.test(base[i + 1] ?? '')) {
      const m = /^@([A-Za-z_][A-Za-z0-9_]*)/.exec(base.slice(i));
      const name = m![1]!;
      let at = names.indexOf(name);
      if (at < 0) at = names.push(name) - 1;
      out += `$${at + 1}`;
      i += name.length;
    } else {
      out += ch;
    }
  }
  if (positional && names.length) throw new Error(`toPostgres: both ? and @name parameters in ${sql}`);
  return { text: out, names: names.length ? names : null };
}

/** One statement sent to the worker. */
export interface PgQuery {
  text: string;
  values: unknown[];
  /** A server-side prepared statement's name (the same text always has the same name). */
  name?: string;
}
export type PgAnswer =
  | { id: number; ok: true; results: Array<{ rows: unknown[]; changes: number }> }
  | { id: number; ok: false; message: string; code: string | null; connection: boolean };

/** Longest a statement may take before the caller gives up on the server (STORE_UNAVAILABLE). */
const PG_WAIT_MS = 15_000;

/**
 * A PostgreSQL connection used synchronously (see the file's comment). A server that cannot be reached, or a
 * connection lost mid-statement, throws STORE_UNAVAILABLE (503, retryable); the next statement connects again.
 */
export class PostgresDb implements SqlDb {
  readonly name: string;
  readonly #worker: Worker;
  readonly #port: MessagePort;
  /** The asynchronous lane (runAsync): its answers, by id. */
  readonly #asyncPort: MessagePort;
  readonly #asyncWaiting = new Map<number, { resolve: (rows: unknown[][]) => void; reject: (err: unknown) => void }>();
  /** The journal's SQL in PostgreSQL's form, for runAsync (prepare converts its own once). */
  readonly #converted = new Map<string, PgSql>();
  readonly #signal = new Int32Array(new SharedArrayBuffer(4));
  readonly #names = new Map<string, string>();
  #nextId = 0;
  #open = true;
  #depth = 0;
  /** Statements (BEGIN, SET) sent in front of the next one rather than in a round trip of their own. */
  #prefix: string[] = [];
  /** Whether the open transaction has sent anything yet (a transaction that ran nothing commits nothing). */
  #begun = false;
  /** Where the open transaction's BEGIN sits in #prefix while it is not sent. */
  #beginAt = 0;
  /** Whether the server connection broke inside the open transaction: its end is a rollback. */
  #broken = false;

  constructor(url: string) {
    const parsed = new URL(url);
    parsed.password = '';
    this.name = parsed.toString();
    const { port1, port2 } = new MessageChannel();
    const lane = new MessageChannel();
    this.#port = port1;
    this.#asyncPort = lane.port1;
    this.#worker = new Worker(new URL('./ts-worker.mjs', import.meta.url), {
      workerData: { entry: new URL('./pg-worker.ts', import.meta.url).href, role: 'pg', url, port: port2, asyncPort: lane.port2, signal: this.#signal.buffer },
      transferList: [port2, lane.port2],
    });
    this.#worker.unref();
    this.#worker.on('error', () => undefined);
    port1.unref();
    lane.port1.on('message', (m: PgAnswer) => this.#asyncAnswer(m));
    lane.port1.unref();
  }

  runAsync(stmts: ReadonlyArray<AsyncStmt>, opts: { sync?: 'full' | 'normal' } = {}): Promise<unknown[][]> {
    if (!this.#open) return Promise.reject(new TypeError('The database connection is not open'));
    const id = this.#nextId++;
    const queries = stmts.map((st) => {
      let pg = this.#converted.get(st.sql);
      if (!pg) this.#converted.set(st.sql, (pg = toPostgres(st.sql)));
      return this.#bind(pg, st.params);
    });
    return new Promise((resolve, reject) => {
      this.#asyncWaiting.set(id, { resolve, reject });
      // While an answer is awaited the port keeps the process alive.
      if (this.#asyncWaiting.size === 1) this.#asyncPort.ref();
      this.#asyncPort.postMessage({ id, queries, sync: opts.sync ?? 'full' });
    });
  }

  #asyncAnswer(m: PgAnswer): void {
    const waiting = this.#asyncWaiting.get(m.id);
    if (!waiting) return;
    this.#asyncWaiting.delete(m.id);
    if (this.#asyncWaiting.size === 0) this.#asyncPort.unref();
    if (m.ok) {
      waiting.resolve(m.results.map((r) => buffers(r.rows)));
    } else if (m.connection) {
      waiting.reject(new AppError('STORE_UNAVAILABLE', `The PostgreSQL journal cannot be reached: ${m.message}`, { store: this.name }));
    } else {
      const err = new Error(m.message) as Error & { code?: string | null };
      err.code = m.code;
      waiting.reject(err);
    }
  }

  get open(): boolean {
    return this.#open;
  }

  /** Sends `queries` and waits for their answer. */
  #send(queries: PgQuery[] | 'close'): Array<{ rows: unknown[]; changes: number }> {
    if (!this.#open) throw new TypeError('The database connection is not open');
    const id = this.#nextId++;
    let seen = Atomics.load(this.#signal, 0);
    this.#port.postMessage(queries === 'close' ? { id, close: true } : { id, queries });
    const until = Date.now() + PG_WAIT_MS;
    for (;;) {
      const m = receiveMessageOnPort(this.#port)?.message as PgAnswer | undefined;
      if (m) {
        if (m.id !== id) continue;
        if (m.ok) return m.results;
        if (m.connection) {
          this.#broken = this.#depth > 0;
          throw new AppError('STORE_UNAVAILABLE', `The PostgreSQL journal cannot be reached: ${m.message}`, { store: this.name });
        }
        const err = new Error(m.message) as Error & { code?: string | null };
        err.code = m.code;
        throw err;
      }
      const left = until - Date.now();
      if (left <= 0) {
        this.#broken = this.#depth > 0;
        throw new AppError('STORE_UNAVAILABLE', `The PostgreSQL journal did not answer within ${PG_WAIT_MS} ms.`, { store: this.name });
      }
      Atomics.wait(this.#signal, 0, seen, left);
      seen = Atomics.load(this.#signal, 0);
    }
  }

  /** A statement with its parameters in `$n` order, and its server-side prepared statement's name. */
  #bind(sql: PgSql, params: unknown[]): PgQuery {
    let values: unknown[];
    if (sql.names) {
      const obj = (params[0] ?? {}) as Record<string, unknown>;
      values = sql.names.map((n) => norm(obj[n]));
    } else {
      values = params.map(norm);
    }
    let name = this.#names.get(sql.text);
    if (name === undefined) this.#names.set(sql.text, (name = `j${this.#names.size}`));
    return { text: sql.text, values, name };
  }

  #query(sql: PgSql, params: unknown[]): { rows: unknown[]; changes: number } {
    if (this.#broken) throw new AppError('STORE_UNAVAILABLE', 'The PostgreSQL connection was lost inside this transaction.', { store: this.name });
    const last = this.#withPrefix(this.#bind(sql, params));
    buffers(last.rows);
    return last;
  }

  prepare<P extends unknown[] | object = unknown[], R = unknown>(sql: string): Stmt<P, R> {
    const pg = toPostgres(sql);
    return {
      run: (...params: unknown[]) => ({ changes: this.#query(pg, params).changes }),
      get: (...params: unknown[]) => this.#query(pg, params).rows[0] as R | undefined,
      all: (...params: unknown[]) => this.#query(pg, params).rows as R[],
    } as Stmt<P, R>;
  }

  /** Sends the waiting prefix statements and `query` in one round trip; answers `query`'s result. */
  #withPrefix(query: PgQuery): { rows: unknown[]; changes: number } {
    const queries: PgQuery[] = this.#prefix.map((text) => ({ text, values: [] }));
    this.#prefix = [];
    if (this.#depth > 0) this.#begun = true;
    queries.push(query);
    const results = this.#send(queries);
    return results[results.length - 1]!;
  }

  exec(sql: string): void {
    this.#withPrefix({ text: sql, values: [] });
  }

  transaction<A extends unknown[], R>(fn: (...args: A) => R): Tx<A, R> {
    const run = (...args: A): R => {
      const depth = this.#depth;
      if (depth === 0) {
        this.#beginAt = this.#prefix.push('BEGIN') - 1;
        this.#begun = false;
        this.#broken = false;
      } else {
        this.#prefix.push(`SAVEPOINT s${depth}`);
      }
      this.#depth++;
      let result: R;
      try {
        result = fn(...args);
      } catch (err) {
        this.#depth--;
        this.#end(depth, false);
        throw err;
      }
      this.#depth--;
      this.#end(depth, true);
      return result;
    };
    return Object.assign(run, { immediate: run });
  }

  /** Ends the transaction (depth 0) or savepoint opened at `depth`. */
  #end(depth: number, commit: boolean): void {
    if (depth > 0) {
      if (this.#prefix.at(-1) === `SAVEPOINT s${depth}`) {
        this.#prefix.pop();
        return;
      }
      if (this.#broken) return;
      this.exec(commit ? `RELEASE SAVEPOINT s${depth}` : `ROLLBACK TO SAVEPOINT s${depth}`);
      return;
    }
    if (!this.#begun) {
      this.#prefix.length = this.#beginAt;
      return;
    }
    if (this.#broken) {
      this.#broken = false;
      return;
    }
    if (commit) this.exec('COMMIT');
    else {
      try {
        this.exec('ROLLBACK');
      } catch {
        // the connection is gone: the server rolls the transaction back itself
      }
    }
  }

  setSync(mode: 'full' | 'normal'): void {
    this.#prefix.push(`SET synchronous_commit = ${mode === 'full' ? 'on' : 'off'}`);
  }

  close(): void {
    if (!this.#open) return;
    try {
      // The worker finishes the asynchronous lane's transactions before it answers.
      this.#send('close');
    } catch {
      // closing anyway
    }
    this.#open = false;
    for (let m = receiveMessageOnPort(this.#asyncPort); m; m = receiveMessageOnPort(this.#asyncPort)) this.#asyncAnswer(m.message as PgAnswer);
    for (const w of this.#asyncWaiting.values()) w.reject(new AppError('STORE_UNAVAILABLE', 'The PostgreSQL journal was closed before the transaction was answered.', { store: this.name }));
    this.#asyncWaiting.clear();
    this.#port.close();
    this.#asyncPort.close();
    void this.#worker.terminate();
  }
}

function norm(v: unknown): unknown {
  return v === undefined ? null : v;
}

/** BYTEA crosses the thread as a Uint8Array (structured clone); callers get a Buffer, as from better-sqlite3. */
function buffers(rows: unknown[]): unknown[] {
  for (const row of rows as Array<Record<string, unknown>>) {
    for (const k in row) {
      const v = row[k];
      if (v instanceof Uint8Array && !Buffer.isBuffer(v)) row[k] = Buffer.from(v.buffer, v.byteOffset, v.byteLength);
    }
  }
  return rows;
}

/**
 * The folder a journal `target` lives in, where the coordinator keeps its other files by default (webhook secret,
 * adapters, blobs, auth.json): the SQLite file's folder; null for ':memory:' and for a PostgreSQL URL.
 */
export function journalFolder(target: string): string | null {
  return target === ':memory:' || target === '' || isPostgresUrl(target) ? null : dirname(target);
}

/** Opens the store `target` names: a postgres:// URL or a SQLite file (':memory:' for a throwaway one). */
export function openDb(target: string): SqlDb {
  return isPostgresUrl(target) ? new PostgresDb(target) : new SqliteDb(target);
}
