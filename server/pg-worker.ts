/**
 * The thread behind `PostgresDb` (server/sql.ts): one `pg` client, statements run in the order they come, each
 * answer posted on the caller's port and then signalled through the shared counter the caller waits on.
 * A lost connection is answered as such (the caller throws STORE_UNAVAILABLE) and the next statement connects
 * again.
 */
import pg from 'pg';
import { isMainThread, workerData, type MessagePort } from 'node:worker_threads';
import type { PgAnswer, PgQuery } from './sql';

type Request = { id: number; queries?: PgQuery[]; close?: boolean };

/** SQLSTATE classes of a server that is going away or cannot be reached (08 connection, 57P admin shutdown). */
const CONNECTION_STATES = /^(08|57P)/;

if (!isMainThread && (workerData as { role?: string } | null)?.role === 'pg') {
  const { url, port, signal } = workerData as { url: string; port: MessagePort; signal: SharedArrayBuffer };
  const counter = new Int32Array(signal);
  // BIGINT and NUMERIC (COUNT, SUM, millisecond times) as numbers, as better-sqlite3 gives them.
  pg.types.setTypeParser(20, (v) => Number(v));
  pg.types.setTypeParser(1700, (v) => Number(v));
  let client: pg.Client | null = null;
  let connecting: Promise<pg.Client> | null = null;

  const connect = (): Promise<pg.Client> => {
    if (client) return Promise.resolve(client);
    connecting ??= (async () => {
      const c = new pg.Client({ connectionString: url, connectionTimeoutMillis: 5000, application_name: 'execution-node-journal' });
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
  };

  const answer = (a: PgAnswer): void => {
    port.postMessage(a);
    Atomics.add(counter, 0, 1);
    Atomics.notify(counter, 0);
  };

  let chain: Promise<void> = Promise.resolve();
  port.on('message', (m: Request) => {
    chain = chain.then(async () => {
      if (m.close) {
        const c = client;
        client = null;
        await c?.end().catch(() => undefined);
        answer({ id: m.id, ok: true, results: [] });
        return;
      }
      let c: pg.Client | null = null;
      try {
        c = await connect();
        const results: Array<{ rows: unknown[]; changes: number }> = [];
        for (const q of m.queries ?? []) {
          const r = await c.query({ text: q.text, values: q.values, ...(q.name ? { name: q.name } : {}) });
          results.push({ rows: r.rows, changes: r.rowCount ?? 0 });
        }
        answer({ id: m.id, ok: true, results });
      } catch (err) {
        const e = err as Error & { code?: string };
        const code = typeof e.code === 'string' ? e.code : null;
        const connection = code === null ? !(e instanceof pg.DatabaseError) : CONNECTION_STATES.test(code) || /ECONN|EPIPE|ETIMEDOUT|ENOTFOUND|EAI_AGAIN/.test(code);
        if (connection && c) {
          if (client === c) client = null;
          void c.end().catch(() => undefined);
        }
        answer({ id: m.id, ok: false, message: e.message, code, connection });
      }
    });
  });
}
