/**
 * Wasm memory under load, for real: the built page in two headless Chromium nodes of 4 agent
 * workers each, a coordinator on a temp SQLite file, 5,000 mixed agent tasks — the catalog the
 * agents e2e runs (hostile ones too) plus memory hogs that touch 256 or 512 MiB within their cap
 * and a bomb that runs into a 512 MiB cap.
 *
 * Every Wasm memory reserves ~8 GiB of address space until it is collected, and a renderer has
 * room for about 124 at once over the page and all its workers: before the fix, good agents failed
 * now and then with "Out of memory: Cannot allocate Wasm memory for new instance". Here no task may
 * end other than as its agent should, and after the hogs the renderers' memory must come back
 * below a bound (a worker that ran a hog is recycled).
 */
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { after, before, test } from 'node:test';
import wabtInit from 'wabt';
import { AGENTS, type AgentSpec } from '../agents';
import type { TaskRecord } from '../shared';
import { postTasks as submitAll, waitAll as awaitAll } from './tasks';
import type { LaunchedNodes } from '../scripts/nodes';
import { E2ePool } from './pool';
import { registerAgent, registerSampleAgents } from '../scripts/register-agents';
import type { NodeStats } from '../web/node';

const TASKS = 5_000;
const BATCH = 500;
const WORKERS = 4;
/** After the hogs, each renderer must come back under this resident size. */
const RENDERER_RSS_BOUND = 640 << 20;

/** Grows by `pages` 64 KiB pages, writes to every 4 KiB of them, prints {"mib": pages/16}. */
function hogWat(pages: number): string {
  return `(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{\\"mib\\":${pages / 16}}")
  (func (export "_start") (local $at i32) (local $end i32)
    (if (i32.eq (memory.grow (i32.const ${pages})) (i32.const -1)) (then unreachable))
    (local.set $at (i32.const 65536))
    (local.set $end (i32.const ${(pages + 1) * 65536}))
    (loop $touch
      (i32.store (local.get $at) (local.get $at))
      (local.set $at (i32.add (local.get $at) (i32.const 4096)))
      (br_if $touch (i32.lt_u (local.get $at) (local.get $end))))
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const ${`{"mib":${pages / 16}}`.length}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))`;
}

interface Planned {
  name: string;
  spec: Record<string, unknown>;
  /** What the task must end as: an output, or an error code. */
  expect: { ok: true; output: unknown } | { ok: false; code: string };
  hog: boolean;
}

let dir = '';
let pool: E2ePool | null = null;
let nodes: LaunchedNodes | null = null;
let url = '';

before(async () => {
  pool = await E2ePool.start('e2e-agents-load-');
  url = pool.url;
  dir = pool.dir;
  await registerSampleAgents(url);
  const wabt = await wabtInit();
  for (const pages of [4096, 8192]) {
    const mod = wabt.parseWat(`hog-${pages}.wat`, hogWat(pages));
    const reg = await registerAgent(url, `hog-${pages / 16}`, mod.toBinary({}).buffer);
    mod.destroy();
    assert.equal(reg.code, null, `hog-${pages / 16} refused: ${reg.message}`);
  }
  nodes = await pool.join({ count: 2, workers: WORKERS });
});

after(async () => {
  await pool?.close();
});

const postTasks = (specs: unknown[]): Promise<string[]> => submitAll(url, specs);
const waitAll = (ids: string[]): Promise<TaskRecord[]> => awaitAll(url, ids, { concurrency: 48, polls: 6 });

function catalogTask(agent: AgentSpec): Planned {
  const payload: Record<string, unknown> = { agent: agent.name, input: agent.input };
  if (agent.files) payload.files = agent.files;
  if (agent.limits) payload.limits = agent.limits;
  const exp = agent.expected;
  return {
    name: agent.name,
    spec: { kind: 'agent', payload, maxAttempts: 2 },
    expect: exp.ok ? { ok: true, output: exp.output } : { ok: false, code: exp.errorCode },
    hog: false,
  };
}

function hogTask(mib: 256 | 512): Planned {
  return {
    name: `hog-${mib}`,
    spec: { kind: 'agent', payload: { agent: `hog-${mib}`, input: {}, limits: { memoryMB: mib + 64, timeoutMs: 20_000 } }, maxAttempts: 2 },
    expect: { ok: true, output: { mib } },
    hog: true,
  };
}

const bomb512: Planned = {
  name: 'memory-bomb-512',
  spec: { kind: 'agent', payload: { agent: 'memory-bomb', input: {}, limits: { memoryMB: 512, timeoutMs: 20_000 } }, maxAttempts: 2 },
  expect: { ok: false, code: 'AGENT_MEMORY_LIMIT' },
  hog: true,
};

/** The plan: 96 % catalog (useful and hostile interleaved as in agents.e2e), 24 hogs spread through it. */
function plan(): Planned[] {
  const runnable = AGENTS.filter((a) => a.expected.ok || a.expected.stage === 'run');
  const useful = runnable.filter((a) => !a.hostile);
  // sleep-poll holds a worker for its whole 500 ms deadline: a few are enough.
  const hostile = runnable.filter((a) => a.hostile && a.name !== 'sleep-poll');
  const sleeper = runnable.find((a) => a.name === 'sleep-poll')!;
  const out: Planned[] = [];
  for (let i = 0; i < TASKS; i++) {
    if (i % 200 === 100) out.push(i % 600 === 100 ? bomb512 : hogTask(i % 400 === 100 ? 256 : 512));
    else if (i % 1000 === 999) out.push(catalogTask(sleeper));
    else if (i % 25 === 24) out.push(catalogTask(hostile[Math.floor(i / 25) % hostile.length]!));
    else out.push(catalogTask(useful[i % useful.length]!));
  }
  return out;
}

function mismatch(p: Planned, rec: TaskRecord): string | null {
  const where = `${p.name} ${rec.id} (attempts ${rec.attempts})`;
  if (p.expect.ok) {
    if (rec.state !== 'succeeded') return `${where}: ${rec.state} ${rec.error?.code} ${rec.error?.message}`;
    try {
      assert.deepStrictEqual((rec.result as { output: unknown }).output, p.expect.output);
    } catch {
      return `${where}: output ${JSON.stringify((rec.result as { output: unknown }).output).slice(0, 200)}`;
    }
    return null;
  }
  if (rec.state !== 'failed' || rec.error?.code !== p.expect.code) return `${where}: expected ${p.expect.code}, got ${rec.state} ${rec.error?.code} ${rec.error?.message}`;
  return null;
}

/** Resident bytes of each renderer process of the browser that uses this user data directory. */
function rendererRss(userDataRoot: string): number[] {
  const procs = new Map<number, { ppid: number; cmd: string }>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      procs.set(Number(name), { ppid, cmd: readFileSync(`/proc/${name}/cmdline`, 'utf8') });
    } catch {
      // gone meanwhile
    }
  }
  const browser = [...procs].find(([, p]) => p.cmd.includes(`--user-data-dir=${userDataRoot}`) && !p.cmd.includes('--type='))?.[0];
  if (browser === undefined) return [];
  const under = (pid: number): boolean => {
    for (let p = procs.get(pid); p; p = procs.get(p.ppid)) if (p.ppid === browser) return true;
    return false;
  };
  const out: number[] = [];
  for (const [pid, p] of procs) {
    if (!p.cmd.includes('--type=renderer') || !under(pid)) continue;
    try {
      const kb = /VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
      if (kb) out.push(Number(kb) * 1024);
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

const mib = (b: number): number => Math.round(b / (1 << 20));

test(`${TASKS} mixed agent tasks, memory hogs included: every one ends as its agent should`, { timeout: 240_000 }, async () => {
  const tasks = plan();
  const started = Date.now();
  let peak = 0;
  const sampler = setInterval(() => {
    for (const r of rendererRss(dir)) peak = Math.max(peak, r);
  }, 500);
  const ids: string[] = [];
  let records: TaskRecord[];
  try {
    for (let i = 0; i < tasks.length; i += BATCH) ids.push(...(await postTasks(tasks.slice(i, i + BATCH).map((t) => t.spec))));
    records = await waitAll(ids);
  } finally {
    clearInterval(sampler);
  }
  const wrong = new Map<string, { count: number; first: string }>();
  records.forEach((rec, i) => {
    const m = mismatch(tasks[i]!, rec);
    if (m === null) return;
    const w = wrong.get(tasks[i]!.name);
    if (w) w.count++;
    else wrong.set(tasks[i]!.name, { count: 1, first: m });
  });
  const retried = records.filter((r) => r.attempts > 1).length;
  const stats = (await Promise.all(nodes!.pages.map((p) => p.evaluate(() => window.__execNode!.stats())))) as NodeStats[];
  const pools = stats.map((s) => s.pool);
  process.stderr.write(
    `agents-load: ${TASKS} tasks in ${Date.now() - started} ms; ${retried} retried by the coordinator; ` +
      `renderer peak ${mib(peak)} MiB; pools ${JSON.stringify(pools.map((p) => ({ recycled: p.recycledWorkers, resourceRetries: p.resourceRetries })))}; ` +
      `codes ${JSON.stringify(stats.map((s) => s.byCode))}\n`,
  );
  assert.deepEqual(
    [...wrong].map(([name, w]) => `${name} ×${w.count}: ${w.first}`),
    [],
    `${[...wrong.values()].reduce((a, w) => a + w.count, 0)} of ${TASKS} tasks ended wrong`,
  );
  // The nodes' own count: no run was refused Wasm memory by the host, not even once before a retry.
  for (const s of stats) assert.equal(s.byCode.NODE_RESOURCE_EXHAUSTED ?? 0, 0, `a node reported NODE_RESOURCE_EXHAUSTED: ${JSON.stringify(s.byCode)}`);
  // Hogs were recycled out of their workers.
  assert.ok(pools.reduce((a, p) => a + p.recycledWorkers, 0) >= tasks.filter((t) => t.hog).length, `recycled ${JSON.stringify(pools)}`);

  // The hogs' memory goes back: every renderer under the bound, polled (bounded), not slept on.
  let rss: number[] = [];
  const until = Date.now() + 20_000;
  for (;;) {
    rss = rendererRss(dir);
    if (rss.length > 0 && rss.every((r) => r < RENDERER_RSS_BOUND)) break;
    if (Date.now() > until) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  process.stderr.write(`agents-load: renderer RSS after the hogs ${JSON.stringify(rss.map(mib))} MiB (bound ${mib(RENDERER_RSS_BOUND)})\n`);
  assert.ok(rss.length > 0, 'no renderer process found');
  assert.ok(rss.every((r) => r < RENDERER_RSS_BOUND), `renderer RSS ${JSON.stringify(rss.map(mib))} MiB stays above ${mib(RENDERER_RSS_BOUND)} MiB`);
});
