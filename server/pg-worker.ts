/**
 * The thread behind `PostgresDb` (server/sql.ts), with two connections. The synchronous lane: statements run in
 * the order they come, each answer posted on the caller's port and then signalled through the shared counter the
 * caller waits on. The asynchronous lane (`PostgresDb.runAsync`): each message is one whole transaction (BEGIN,
 * its statements, COMMIT; ROLLBACK on an error) on its own connection, answered on its own port without the
 * counter, so the caller's event loop goes on while the server works; and since such a transaction never waits
 * for the caller, a statement of the synchronous lane that waits on its row locks is never waited on in turn.
 * A lost connection is answered as such (the caller throws STORE_UNAVAILABLE) and the next message connects again.
 */
import pg from 'pg';
import { isMainThread, workerData, type MessagePort } from 'node:worker_threads';
import type { PgAnswer, PgQuery } from './sql';

type Request = { id: number; queries?: PgQuery[]; close?: boolean };
type AsyncRequest = { id: number; queries: PgQuery[]; sync: 'full' | 'normal' };

/** SQLSTATE classes of a server that is going away or cannot be reached (08 connection, 57P admin shutdown). */
const CONNECTION_STATES = /^(08|57P)/;
/** Longest one statement of the asynchronous lane may run before it is given up (the caller then sees STORE_UNAVAILABLE). */
const ASYNC_QUERY_TIMEOUT_MS = 15_000;

/** One connection, made on first use and again after it was lost. */
function connection(url: string, extra: Partial<pg.ClientConfig> = {}) {
  let client: pg.Client | null = null;
  let connecting: Promise<pg.Client> | null = null;
  return {
    connect(): Promise<pg.Client> {
      if (client) return Promise.resolve(client);
      connecting ??= (async () => {
        const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, application_name: 'execution-node-journal', ...extra });
        c.on('error', () => {
          if (client === c) client = null;
        });
        try {
          await c.connect();
        } catch (err) {
          void c.end().catch(() => undefined);
          throw err;
        }
        client = c;
        return c;
      })().finally(() => {
        connecting = null;
      });
      return connecting;
    },
    /** Drops `c` (lost): the next connect() makes a new one. */
    drop(c: pg.Client): void {
      if (client === c) client = null;
      void c.end().catch(() => undefined);
    },
    async end(): Promise<void> {
      const c = client;
      client = null;
      await c?.end().catch(() => undefined);
    },
  };
}

/** The answer for an error of `c` (a lost connection is dropped). */
function failure(id: number, err: unknown, lane: ReturnType<typeof connection>, c: pg.Client | null): PgAnswer {
  const e = err as Error & { code?: string };
  const code = typeof e.code === 'string' ? e.code : null;
  const lost = code === null ? !(e instanceof pg.DatabaseError) : CONNECTION_STATES.test(code) || /ECONN|EPIPE|ETIMEDOUT|ENOTFOUND|EAI_AGAIN/.test(code);
  if (lost && c) lane.drop(c);
  return { id, ok: false, message: e.message, code, connection: lost };
}

async function runAll(c: pg.Client, queries: readonly PgQuery[]): Promise<Array<{ rows: unknown[]; changes: number }>> {
  const results: Array<{ rows: unknown[]; changes: number }> = [];
  for (const q of queries) {
    const r = await c.query({ text: q.text, values: q.values, ...(q.name ? { name: q.name } : {}) });
    results.push({ rows: r.rows, changes: r.rowCount ?? 0 });
  }
  return results;
}

if (!isMainThread && (workerData as { role?: string } | null)?.role === 'pg') {
  const { url, port, asyncPort, signal } = workerData as { url: string; port: MessagePort; asyncPort: MessagePort; signal: SharedArrayBuffer };
  const counter = new Int32Array(signal);
  // BIGINT and NUMERIC (COUNT, SUM, millisecond times) as numbers, as better-sqlite3 gives them.
  pg.types.setTypeParser(20, (v) => Number(v));
  pg.types.setTypeParser(1700, (v) => Number(v));
  const syncLane = connection(url);
  const asyncLane = connection(url, { query_timeout: ASYNC_QUERY_TIMEOUT_MS });

  const answer = (a: PgAnswer): void => {
    port.postMessage(a);
    Atomics.add(counter, 0, 1);
    Atomics.notify(counter, 0);
  };

  let asyncChain: Promise<void> = Promise.resolve();
  asyncPort.on('message', (m: AsyncRequest) => {
    asyncChain = asyncChain.then(async () => {
      let c: pg.Client | null = null;
      let begun = false;
      try {
        c = await asyncLane.connect();
        await c.query('BEGIN');
        begun = true;
        await c.query(`SET LOCAL synchronous_commit = ${m.sync === 'full' ? 'on' : 'off'}`);
        const results = await runAll(c, m.queries);
        await c.query('COMMIT');
        asyncPort.postMessage({ id: m.id, ok: true, results } satisfies PgAnswer);
      } catch (err) {
        const out = failure(m.id, err, asyncLane, c);
        if (begun && c && !out.ok && !out.connection) await c.query('ROLLBACK').catch(() => undefined);
        asyncPort.postMessage(out);
      }
    });
  });

  let chain: Promise<void> = Promise.resolve();
  port.on('message', (m: Request) => {
    chain = chain.then(async () => {
      if (m.close) {
        // The asynchronous lane's transactions finish (and are answered) first.
        await asyncChain;
        await Promise.all([syncLane.end(), asyncLane.end()]);
        answer({ id: m.id, ok: true, results: [] });
        return;
      }
      let c: pg.Client | null = null;
      try {
        c = await syncLane.connect();
        answer({ id: m.id, ok: true, results: await runAll(c, m.queries ?? []) });
      } catch (err) {
        answer(failure(m.id, err, syncLane, c));
      }
    });
  });
}
