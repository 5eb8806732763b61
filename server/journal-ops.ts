/**
 * Operations on a journal (scripts/journal.ts is the command): an online backup of a SQLite journal while its
 * coordinator runs (SQLite's backup API, as better-sqlite3 exposes it), a restore of such a backup, and a copy
 * of a SQLite journal into PostgreSQL that keeps every row as it is (task ids, seq order, idempotency keys,
 * modules, agent versions, datasets, reputation, events).
 */
import Database from 'better-sqlite3';
import { copyFileSync, existsSync, renameSync } from 'node:fs';
import { Journal, SCHEMA_VERSION } from './journal';
import { isPostgresUrl, SqliteDb } from './sql';

/** Tables in the order a copy writes them (a row's references come first). */
const TABLES = [
  'modules',
  'datasets',
  'dataset_owners',
  'blobs',
  'blob_owners',
  'agent_versions',
  'agent_verdicts',
  'quotas',
  'tasks',
  'task_replicas',
  'node_reputation',
  'events',
] as const;

/** Tables whose `seq` PostgreSQL numbers from a sequence, moved past the copied rows. */
const SEQUENCED = ['tasks', 'agent_versions', 'events'] as const;

/** Rows one INSERT of a copy carries. */
const COPY_BATCH = 200;

/**
 * Copies the SQLite journal at `from` (opened and migrated as a coordinator would, with its leased tasks put
 * back in the queue) into the PostgreSQL journal at `to`, in one transaction: all of it or none. A destination
 * that already holds tasks is refused.
 */
export function copyToPostgres(from: string, to: string): Record<string, number> {
  if (isPostgresUrl(from) || !existsSync(from)) throw new Error(`copy: ${from} is not a SQLite journal file`);
  if (!isPostgresUrl(to)) throw new Error(`copy: ${to} is not a postgres:// URL`);
  const source = new Journal(from);
  const dest = new Journal(to);
  try {
    const have = dest.db.prepare<[], { n: number }>('SELECT COUNT(*) AS n FROM tasks').get()?.n ?? 0;
    if (have > 0) throw new Error(`copy: ${dest.db.name} already holds ${have} tasks; copy into an empty journal`);
    const counts: Record<string, number> = {};
    dest.db.transaction(() => {
      for (const table of TABLES) {
        const columns = source.db.prepare<[], { name: string }>(`PRAGMA table_info(${table})`).all().map((c) => c.name);
        const list = columns.join(', ');
        let copied = 0;
        let last = -Infinity;
        // Read in rowid order, a batch at a time: bounded memory whatever the journal's size.
        const read = source.db.prepare<[number, number], Record<string, unknown> & { _rowid: number }>(
          `SELECT rowid AS _rowid, ${list} FROM ${table} WHERE rowid > ? ORDER BY rowid LIMIT ?`,
        );
        for (;;) {
          const rows = read.all(last, COPY_BATCH);
          if (rows.length === 0) break;
          const one = `(${columns.map(() => '?').join(', ')})`;
          const insert = dest.db.prepare(`INSERT INTO ${table} (${list}) VALUES ${rows.map(() => one).join(', ')}`);
          insert.run(...rows.flatMap((r) => columns.map((c) => r[c])));
          copied += rows.length;
          last = rows[rows.length - 1]!._rowid;
        }
        counts[table] = copied;
      }
      for (const table of SEQUENCED) {
        dest.db.prepare(`SELECT setval(pg_get_serial_sequence('${table}', 'seq'), GREATEST((SELECT MAX(seq) FROM ${table}), 1))`).get();
      }
    })();
    return counts;
  } finally {
    source.close();
    dest.close();
  }
}

/**
 * An online backup of the SQLite journal `from` into `to` (a new file), through SQLite's backup API on a
 * connection of its own: the coordinator keeps serving meanwhile, and the copy holds every transaction
 * committed before the backup's last step.
 */
export async function backupSqlite(from: string, to: string): Promise<{ pages: number }> {
  if (isPostgresUrl(from)) throw new Error('backup: a PostgreSQL journal is backed up with pg_dump (README "Moving to PostgreSQL")');
  if (!existsSync(from)) throw new Error(`backup: no journal at ${from}`);
  if (existsSync(to)) throw new Error(`backup: ${to} exists; name a new file`);
  const db = new Database(from, { fileMustExist: true });
  try {
    db.pragma('busy_timeout = 5000');
    const { totalPages } = await db.backup(to);
    return { pages: totalPages };
  } finally {
    db.close();
  }
}

/**
 * Restores the backup `from` as the journal `to` (its coordinator stopped): the backup is checked first
 * (integrity_check, a journal schema this coordinator reads), the journal it replaces is kept beside it as
 * `<to>.replaced-<time>` with its -wal and -shm files, and the result opens as a journal.
 */
export function restoreSqlite(from: string, to: string, now = Date.now()): { replaced: string | null; tasks: number } {
  const check = new Database(from, { readonly: true, fileMustExist: true });
  try {
    const ok = check.pragma('integrity_check', { simple: true });
    if (ok !== 'ok') throw new Error(`restore: ${from} fails SQLite's integrity check (${String(ok)})`);
    const version = check.pragma('user_version', { simple: true }) as number;
    if (version > SCHEMA_VERSION) throw new Error(`restore: ${from} has schema version ${version}, newer than this coordinator's ${SCHEMA_VERSION}`);
    if (!check.prepare<[], { n: number }>("SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = 'tasks'").get()?.n) {
      throw new Error(`restore: ${from} is not a journal (no tasks table)`);
    }
  } finally {
    check.close();
  }
  let replaced: string | null = null;
  if (existsSync(to)) {
    replaced = `${to}.replaced-${now}`;
    renameSync(to, replaced);
    for (const suffix of ['-wal', '-shm']) if (existsSync(to + suffix)) renameSync(to + suffix, replaced + suffix);
  }
  copyFileSync(from, to);
  const j = new Journal(new SqliteDb(to));
  try {
    return { replaced, tasks: Object.values(j.countsByState()).reduce((a, b) => a + b, 0) };
  } finally {
    j.close();
  }
}
