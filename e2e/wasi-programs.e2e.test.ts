/**
 * Real WASI programs through the pool, for real: the built page in a headless Chromium node,
 * a coordinator on a temp SQLite file, tasks over the HTTP API with mounts and raw output.
 * - SQLite (agents/dist/programs/sqlite.wasm, built from the amalgamation better-sqlite3 ships):
 *   a CSV of 3,000 rows and the script in a read-only mount, the database and result files in a
 *   writable one; the files that come back in the result are checked against better-sqlite3
 *   running the same work natively here, and the database file is opened by better-sqlite3.
 * - One program per WASI preview1 family (agents/dist/wasi-tests/): each with what it needs
 *   (args and env as given, stdin text, a read-only /input, a writable /scratch), stdout as text;
 *   each prints its verdict {"ok","fail","seen"}, which must hold no failure.
 * Figures (module size, compile time in the page, the SQLite task's time) go to stderr.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import Database from 'better-sqlite3';
import type { TaskRecord } from '../shared';
import { postTasks, waitAll, waitTask } from './tasks';
import type { LaunchedNodes } from '../scripts/nodes';
import { E2ePool } from './pool';
import { ROOT } from '../scripts/page-build';
import { registerAgent } from '../scripts/register-agents';
import { csvCellMatches, parseCsv, reference, salesCsv, salesRows, script } from '../agents/sqlite/workload';

const FAMILIES = ['args', 'environ', 'clocks', 'fd', 'path', 'poll', 'proc', 'random', 'sched', 'sock'] as const;
type Family = (typeof FAMILIES)[number];
const SQLITE = join(ROOT, 'agents/dist/programs/sqlite.wasm');

let pool: E2ePool | null = null;
let nodes: LaunchedNodes | null = null;
let url = '';

type ResultFile = { text: string } | { base64: string };
interface AgentResult {
  exitCode: number;
  output: unknown;
  stderr: string;
  files?: Record<string, Record<string, ResultFile>>;
  durationMs: number;
  spawnMs?: number;
}

const figure = (line: string): void => {
  process.stderr.write(`wasi-programs: ${line}\n`);
};

before(async () => {
  pool = await E2ePool.start('e2e-wasi-programs-');
  url = pool.url;
  const regs = [await registerAgent(url, 'sqlite', readFileSync(SQLITE))];
  for (const f of FAMILIES) regs.push(await registerAgent(url, `wasi-${f}`, readFileSync(join(ROOT, 'agents/dist/wasi-tests', `${f}.wasm`))));
  for (const r of regs) assert.equal(r.code, null, `${r.name} refused: ${r.status} ${r.code} ${r.message}`);
  nodes = await pool.join({ count: 1 });
});

after(async () => {
  await pool?.close();
});

const resultOf = (rec: TaskRecord): AgentResult => {
  assert.equal(rec.state, 'succeeded', `${rec.id}: ${rec.state} ${rec.error?.code} ${rec.error?.message} ${JSON.stringify(rec.error?.details ?? {}).slice(0, 600)}`);
  return rec.result as AgentResult;
};

const textOf = (f: ResultFile | undefined, name: string): string => {
  assert.ok(f && 'text' in f, `${name} did not come back as text: ${JSON.stringify(f)?.slice(0, 100)}`);
  return f.text;
};

test('SQLite through the pool: CSV in a read-only mount, database and result files back from a writable one', { timeout: 90_000 }, async () => {
  const bytes = readFileSync(SQLITE);
  const page = nodes!.pages[0]!;
  const compileMs = await page.evaluate(async (b64: string) => {
    const bin = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    const t0 = performance.now();
    await WebAssembly.compile(bin);
    return performance.now() - t0;
  }, bytes.toString('base64'));
  figure(`sqlite.wasm ${bytes.byteLength} bytes; WebAssembly.compile in Chromium ${compileMs.toFixed(1)} ms`);

  const rows = salesRows(3000);
  const spec = {
    kind: 'agent',
    maxAttempts: 1,
    payload: {
      agent: 'sqlite',
      args: ['--db', '/work/out/sales.db', '/data/run.sql'],
      stdout: 'text',
      mounts: {
        '/data': { files: { 'sales.csv': { text: salesCsv(rows) }, 'run.sql': { text: script('/data/sales.csv', '/work/out') } } },
        '/work/out': { writable: true },
      },
      limits: { memoryMB: 64, fuel: 20_000_000_000, timeoutMs: 60_000 },
    },
  };
  const t0 = performance.now();
  const [id] = await postTasks(url, [spec]);
  const rec = await waitTask(url, id!);
  const taskMs = performance.now() - t0;
  const result = resultOf(rec);
  figure(`sqlite task: ${taskMs.toFixed(0)} ms submit to record (run ${result.durationMs} ms on the node, spawn ${result.spawnMs ?? '?'} ms)`);
  assert.equal(result.exitCode, 0);
  assert.equal(typeof result.output, 'string', 'stdout "text" gives the text');
  const summary = JSON.parse(result.output as string) as { imports: { rows: number }[]; outputs: { file: string; rows: number }[]; results: { columns: string[]; rows: unknown[][] }[] };

  const ref = reference(rows, '/work/out');
  assert.deepEqual(summary.imports.map((i) => i.rows), [3000]);
  assert.deepEqual(summary.results.map((r) => ({ columns: r.columns, rows: r.rows })), ref.results);
  const out = result.files?.['/work/out'];
  assert.ok(out, `no files back from /work/out: ${JSON.stringify(Object.keys(result.files ?? {}))}`);
  assert.deepEqual(Object.keys(out).sort(), ['by_region.csv', 'monthly.json', 'products.json', 'sales.db']);
  for (const [file, want] of ref.files) {
    const name = file.slice('/work/out/'.length);
    const body = textOf(out[name], name);
    if (want.format === 'json') {
      assert.deepEqual(JSON.parse(body), want.rows, name);
      continue;
    }
    const [header, ...records] = parseCsv(body);
    assert.deepEqual(header, want.columns, name);
    assert.equal(records.length, want.rows.length, name);
    records.forEach((rec, i) =>
      want.columns.forEach((col, j) => assert.ok(csvCellMatches(rec[j] ?? '', want.rows[i]?.[col]), `${name} row ${i} ${col}: ${rec[j]} vs ${String(want.rows[i]?.[col])}`)),
    );
  }
  const saved = out['sales.db'];
  assert.ok(saved && 'base64' in saved, 'the database comes back as base64 bytes');
  const db = new Database(Buffer.from(saved.base64, 'base64'));
  try {
    assert.equal(db.prepare('PRAGMA integrity_check').pluck().get(), 'ok');
    assert.equal(db.prepare('SELECT count(*) FROM sales').pluck().get(), ref.salesLeft);
  } finally {
    db.close();
  }
});

test('SQLite cannot write into a read-only mount: a failed attempt with its exit code and stderr', { timeout: 30_000 }, async () => {
  const [id] = await postTasks(url, [
    {
      kind: 'agent',
      maxAttempts: 1,
      payload: { agent: 'sqlite', args: ['--db', '/data/new.db'], stdin: { text: 'CREATE TABLE t(x);' }, stdout: 'text', mounts: { '/data': { files: { 'a.txt': { text: 'a' } } } } },
    },
  ]);
  const rec = await waitTask(url, id!);
  assert.equal(rec.state, 'failed');
  assert.equal(rec.error?.code, 'AGENT_EXIT_NONZERO');
  const details = rec.error?.details as { exitCode?: number; stderr?: { text?: string } } | undefined;
  assert.equal(details?.exitCode, 1);
  assert.match(details?.stderr?.text ?? '', /^sqlite: cannot open the database \/data\/new\.db/);
});

interface Verdict {
  ok: string[];
  fail: string[];
  seen: string[];
}

/** Each family's task: what it needs, and what else to check on its result. */
const PLANS: Record<Family, { payload: Record<string, unknown>; check?: (r: AgentResult, v: Verdict) => void; exitCode?: number }> = {
  args: {
    payload: { args: ['--mode', 'fast', '', 'héllo wörld', '日本語 😀', 'a\nb'], argv0: 'args-prog' },
    check: (_r, v) => assert.deepEqual(v.seen, ['args-prog', '--mode', 'fast', '', 'héllo wörld', '日本語 😀', 'a\nb']),
  },
  environ: {
    payload: { env: { K: 'ünï', NL: 'line1\nline2', EMPTY: '' }, injectEnv: false },
    check: (_r, v) => assert.deepEqual(v.seen, ['K=ünï', 'NL=line1\nline2', 'EMPTY=']),
  },
  clocks: { payload: {} },
  fd: {
    payload: { stdin: { text: 'hello' }, mounts: { '/scratch': { writable: true } } },
    check: (r) => assert.equal(textOf(r.files?.['/scratch']?.['a.txt'], 'a.txt'), 'Abcd'),
  },
  path: {
    payload: { mounts: { '/scratch': { writable: true } } },
    check: (r) => assert.equal(textOf(r.files?.['/scratch']?.['a2.txt'], 'a2.txt'), 'yy'),
  },
  poll: { payload: { stdin: { text: 'hello' }, mounts: { '/input': { files: { 'data.txt': { text: 'hello world' } } } } } },
  proc: { payload: { args: ['7'], okExitCodes: [7] }, exitCode: 7 },
  random: { payload: {} },
  sched: { payload: {} },
  // sock_accept on fd 3 must say NOTSOCK: fd 3 must be a preopen, so give it a mount.
  sock: { payload: { mounts: { '/input': { files: { 'x.txt': { text: 'x' } } } } } },
};

test('each WASI preview1 family program through the pool with mounts and raw output: no failed check', { timeout: 60_000 }, async () => {
  const specs = FAMILIES.map((f) => ({ kind: 'agent', maxAttempts: 1, payload: { agent: `wasi-${f}`, stdout: 'text', ...PLANS[f].payload } }));
  const records = await waitAll(url, await postTasks(url, specs));
  const wrong: string[] = [];
  records.forEach((rec, i) => {
    const family = FAMILIES[i]!;
    try {
      const r = resultOf(rec);
      assert.equal(r.exitCode, PLANS[family].exitCode ?? 0);
      assert.equal(typeof r.output, 'string');
      const v = JSON.parse(r.output as string) as Verdict;
      assert.deepEqual(v.fail, [], `failed checks: ${v.fail.join('; ')}`);
      assert.ok(v.ok.length > 0, 'no check ran');
      PLANS[family].check?.(r, v);
    } catch (err) {
      wrong.push(`${family}: ${err instanceof Error ? err.message : String(err)}`);
    }
  });
  assert.deepEqual(wrong, []);
});
