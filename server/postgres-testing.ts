/**
 * A throwaway PostgreSQL cluster for tests: `initdb` and `pg_ctl` in a temporary folder (as the `postgres`
 * user when run as root, since the server refuses root), listening on loopback only, removed by `close()`.
 * Debian's `postgresql` package provides the binaries (scripts/install.sh installs it).
 */
import { execFileSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';

export interface TestPostgres {
  /** The cluster's maintenance database URL. */
  readonly url: string;
  readonly port: number;
  /** A new empty database; its URL. */
  database(): Promise<string>;
  /** Stops the server ('immediate': as a crash would). */
  stop(mode?: 'fast' | 'immediate'): void;
  start(): void;
  close(): void;
}

/** The folder of PostgreSQL's server binaries (PG_BIN, else Debian's newest /usr/lib/postgresql/N/bin). */
export function postgresBin(): string | null {
  if (process.env.PG_BIN) return process.env.PG_BIN;
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => existsSync(join(root, v, 'bin', 'initdb')))
    .sort((a, b) => Number(b) - Number(a));
  return versions.length ? join(root, versions[0]!, 'bin') : null;
}

/** A loopback port nothing listens on now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export async function startPostgres(): Promise<TestPostgres> {
  const bin = postgresBin();
  if (!bin) throw new Error('PostgreSQL is not installed (apt-get install postgresql, or set PG_BIN)');
  const asRoot = process.getuid?.() === 0;
  const dir = mkdtempSync(join(tmpdir(), 'journal-pg-'));
  const run = (cmd: string, args: string[]): void => {
    const [file, argv] = asRoot ? ['runuser', ['-u', 'postgres', '--', join(bin, cmd), ...args]] : [join(bin, cmd), args];
    execFileSync(file, argv, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 60_000 });
  };
  if (asRoot) chownSync(dir, Number(execFileSync('id', ['-u', 'postgres']).toString().trim()), Number(execFileSync('id', ['-g', 'postgres']).toString().trim()));
  const data = join(dir, 'data');
  run('initdb', ['-D', data, '-U', 'journal', '--auth=trust', '--locale=C', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c max_connections=200`;
  const start = (): void => run('pg_ctl', ['-D', data, '-o', opts, '-l', join(dir, 'log'), '-w', '-t', '60', 'start']);
  start();
  const url = `postgres://journal@127.0.0.1:${port}/postgres`;
  let n = 0;
  let running = true;
  return {
    url,
    port,
    async database() {
      const name = `j${n++}`;
      const c = new pg.Client({ connectionString: url });
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${name}`);
      } finally {
        await c.end();
      }
      return `postgres://journal@127.0.0.1:${port}/${name}`;
    },
    stop(mode = 'fast') {
      run('pg_ctl', ['-D', data, '-m', mode, '-w', 'stop']);
      running = false;
    },
    start() {
      start();
      running = true;
    },
    close() {
      try {
        if (running) run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']);
      } finally {
        running = false;
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/** Set by server/postgres-suites.test.ts: coordinator suites run there journal to a PostgreSQL cluster. */
export const JOURNAL_TEST_PG = 'JOURNAL_TEST_PG';
const databases = new Map<string, string>();

/**
 * The journal a test coordinator uses for `path`: the SQLite file itself, or, while the suites run on
 * PostgreSQL, a database of its own (the same one each time for the same path, so restarts find their tasks).
 */
export function testDb(path: string): string {
  const cluster = process.env[JOURNAL_TEST_PG];
  if (!cluster) return path;
  let url = databases.get(path);
  if (!url) {
    const name = `t${process.pid}_${databases.size}`;
    const u = new URL(cluster);
    execFileSync(join(postgresBin()!, 'createdb'), ['-h', u.hostname, '-p', u.port, '-U', u.username, name], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
    u.pathname = `/${name}`;
    databases.set(path, (url = u.toString()));
  }
  return url;
}
