/**
 * The SQLite program (agents/dist/programs/sqlite.wasm, built by agents/build.sh from the
 * amalgamation better-sqlite3 ships and agents/sqlite/sqlite_agent.c) run under the agents'
 * WASI layer (worker/agents/wasi) with a read-only /input and a writable /out preopen: it
 * imports a CSV of 3,000 rows, indexes it, runs aggregate queries into CSV and JSON files and
 * keeps its database in /out. Everything is checked against better-sqlite3 doing the same
 * work natively in this process, and the database file it leaves is opened by better-sqlite3.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { Directory, File, OpenFile, PreopenDirectory, type Fd } from '@bjorn3/browser_wasi_shim';
import { CappedOutput } from '../../worker/agents/output';
import { AgentWasi } from '../../worker/agents/wasi';
import { csvCellMatches, parseCsv, reference, salesCsv, salesRows, script } from './workload';

const WASM = join(import.meta.dirname, '../dist/programs/sqlite.wasm');
const utf8 = (s: string): Uint8Array<ArrayBuffer> => new TextEncoder().encode(s);
const text = (b: Uint8Array): string => new TextDecoder().decode(b);

let compiled: WebAssembly.Module | undefined;
const moduleOf = (): WebAssembly.Module => (compiled ??= new WebAssembly.Module(readFileSync(WASM)));

interface Summary {
  sqlite: string;
  statements: number;
  changes: number;
  imports: { file: string; table: string; rows: number }[];
  outputs: { file: string; format: string; rows: number }[];
  results: { columns: string[]; rows: unknown[][]; truncated: boolean }[];
}

function run(args: string[], opts: { input?: Record<string, string>; stdin?: string; outDir?: string } = {}) {
  const input = new PreopenDirectory(
    '/input',
    new Map(Object.entries(opts.input ?? {}).map(([name, body]) => [name, new File(utf8(body), { readonly: true })])),
  );
  const out = new PreopenDirectory(opts.outDir ?? '/out', new Map());
  const stdout = new CappedOutput('stdout', 1 << 20);
  const stderr = new CappedOutput('stderr', 1 << 16);
  const fds: Fd[] = [new OpenFile(new File(utf8(opts.stdin ?? ''), { readonly: true })), stdout, stderr, input, out];
  const wasi = new AgentWasi(['sqlite', ...args], [], fds);
  const instance = new WebAssembly.Instance(moduleOf(), { wasi_snapshot_preview1: wasi.wasiImport as WebAssembly.ModuleImports });
  const code = wasi.start(instance as unknown as { exports: { memory: WebAssembly.Memory; _start: () => unknown } });
  return { code, stdout: stdout.text(), stderr: stderr.text(), out: out.dir };
}

function fileText(dir: Directory, name: string): string {
  const f = dir.contents.get(name);
  assert.ok(f instanceof File, `${name} is not in /out: ${[...dir.contents.keys()].join(', ')}`);
  return text(f.data);
}

test('the module is a real build (over a megabyte) of SQLite', () => {
  assert.ok(readFileSync(WASM).byteLength > 1_000_000);
});

test('imports 3,000 CSV rows, indexes them and writes aggregates that match better-sqlite3', () => {
  const rows = salesRows(3000);
  const sql = script('/input/sales.csv', '/out');
  const r = run(['--db', '/out/sales.db', '/input/run.sql'], { input: { 'sales.csv': salesCsv(rows), 'run.sql': sql } });
  assert.equal(r.code, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as Summary;
  const ref = reference(rows, '/out');

  const native = new Database(':memory:');
  assert.equal(summary.sqlite, (native.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v, 'the same SQLite release');
  native.close();
  assert.deepEqual(summary.imports, [{ file: '/input/sales.csv', table: 'sales', rows: 3000 }]);
  assert.equal(summary.changes, ref.changes);
  assert.deepEqual(
    summary.outputs.map((o) => [o.file, o.format, o.rows]),
    [...ref.files].map(([file, f]) => [file, f.format, f.rows.length]),
  );
  assert.deepEqual(summary.results.map((x) => ({ columns: x.columns, rows: x.rows })), ref.results);
  assert.ok(ref.results[0]?.rows[0]?.[3] === 'text', 'quoted digits stay text');

  for (const [file, want] of ref.files) {
    const body = fileText(r.out, file.slice('/out/'.length));
    if (want.format === 'json') {
      assert.deepEqual(JSON.parse(body), want.rows, file);
      continue;
    }
    const [header, ...records] = parseCsv(body);
    assert.deepEqual(header, want.columns, file);
    assert.equal(records.length, want.rows.length, file);
    records.forEach((rec, i) =>
      want.columns.forEach((col, j) => {
        const cell = rec[j] ?? '';
        assert.ok(csvCellMatches(cell, want.rows[i]?.[col]), `${file} row ${i} ${col}: ${cell} vs ${String(want.rows[i]?.[col])}`);
      }),
    );
  }

  // The database the program left in /out is a sound SQLite file (the rollback journal is gone).
  assert.ok(!r.out.contents.has('sales.db-journal'));
  const saved = r.out.contents.get('sales.db');
  assert.ok(saved instanceof File);
  const db = new Database(Buffer.from(saved.data));
  try {
    assert.equal((db.prepare('PRAGMA integrity_check').get() as { integrity_check: string }).integrity_check, 'ok');
    assert.equal((db.prepare('SELECT count(*) AS n FROM sales').get() as { n: number }).n, ref.salesLeft);
    const indexes = db.prepare("SELECT name FROM sqlite_schema WHERE type = 'index' AND name LIKE 'sales_%' ORDER BY name").pluck().all();
    assert.deepEqual(indexes, ['sales_product_day', 'sales_region']);
  } finally {
    db.close();
  }
});

test('reads SQL from stdin into an in-memory database; results in the summary', () => {
  const r = run([], { stdin: "CREATE TABLE t(x); INSERT INTO t VALUES (1), (2.5), ('a,b'), (NULL), (x'00ff');\nSELECT x, typeof(x) FROM t ORDER BY rowid;" });
  assert.equal(r.code, 0, r.stderr);
  const s = JSON.parse(r.stdout) as Summary;
  assert.equal(s.statements, 3);
  assert.deepEqual(s.results, [
    {
      columns: ['x', 'typeof(x)'],
      rows: [
        [1, 'integer'],
        [2.5, 'real'],
        ['a,b', 'text'],
        [null, 'null'],
        ['00ff', 'blob'],
      ],
      truncated: false,
    },
  ]);
  assert.deepEqual([...r.out.contents.keys()], []);
});

test('a database in a mount below a directory that is not one (/work/out) opens: absolute paths are not resolved through lstat', () => {
  const r = run(['--db', '/work/out/t.db'], { outDir: '/work/out', stdin: "CREATE TABLE t(x); INSERT INTO t VALUES ('kept');" });
  assert.equal(r.code, 0, r.stderr);
  const saved = r.out.contents.get('t.db');
  assert.ok(saved instanceof File);
  const db = new Database(Buffer.from(saved.data));
  assert.equal(db.prepare('SELECT x FROM t').pluck().get(), 'kept');
  db.close();
});

test('an SQL error names the script line and exits 1; a bad dot command exits 2', () => {
  const bad = run(['/input/bad.sql'], { input: { 'bad.sql': 'CREATE TABLE t(x);\n\nSELECT nope FROM t;\n' } });
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /^sqlite: line 3: no such column: nope/);
  const dot = run(['/input/dot.sql'], { input: { 'dot.sql': '-- hello\n.tables\n' } });
  assert.equal(dot.code, 2);
  assert.match(dot.stderr, /line 2: unknown or malformed dot command: \.tables/);
  const missing = run(['/input/none.sql']);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot open \/input\/none\.sql/);
});
