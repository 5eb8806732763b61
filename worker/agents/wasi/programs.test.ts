/**
 * The WASI preview1 test programs (agents/wasi-tests/*.c, built into agents/dist/wasi-tests/),
 * one per function family. Each prints {"ok":[...],"fail":[...],"seen":[...]} and exits 1 on
 * any failed check. Families that need nothing but stdin, args, env and /input run through
 * the agent runtime (runAgentInThread: validation, fuel, memory cap), fd and path with a
 * writable mount at /scratch, args and env with UTF-8 text as given. Only the comparisons
 * with the bare shim (what it gets wrong) run a WASI directly.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Directory, File, OpenFile, PreopenDirectory, WASI, type Fd } from '@bjorn3/browser_wasi_shim';
import { prepareAgentModule } from '../module-cache';
import { CappedOutput } from '../output';
import { runAgentInThread } from '../run';
import { runRequest } from '../testing/request';
import type { AgentRunOutcome, AgentRunRequest } from '../types';
import { AgentWasi, Symlink } from '.';

const ROOT = join(import.meta.dirname, '../../..');
const FAMILIES = ['args', 'environ', 'clocks', 'fd', 'path', 'poll', 'proc', 'random', 'sched', 'sock'] as const;
type Family = (typeof FAMILIES)[number];
const wasm = (name: Family): Uint8Array<ArrayBuffer> => readFileSync(join(ROOT, 'agents/dist/wasi-tests', `${name}.wasm`));
const utf8 = (s: string) => new TextEncoder().encode(s);

interface Report {
  ok: string[];
  fail: string[];
  seen: string[];
}

async function viaRuntime(name: Family, over: Partial<AgentRunRequest> = {}): Promise<AgentRunOutcome> {
  const prepared = await prepareAgentModule(wasm(name), 16);
  return runAgentInThread(prepared.module, runRequest(name, over), { capPages: prepared.capPages, memory: prepared.memory });
}

function reportOf(out: AgentRunOutcome): Report {
  assert.ok(out.ok, `the program failed: ${JSON.stringify(out.ok ? null : out.error)}`);
  return out.result.output as Report;
}

/** Runs a program under a WASI (ours, or the bare shim to show what it gets wrong) with the given fds 3.. */
function direct(name: Family, opts: { args?: string[]; env?: string[]; stdin?: string; preopens?: Fd[]; shim?: boolean } = {}) {
  const stdout = new CappedOutput('stdout', 1 << 20);
  const stderr = new CappedOutput('stderr', 1 << 16);
  const fds: Fd[] = [new OpenFile(new File(utf8(opts.stdin ?? ''), { readonly: true })), stdout, stderr, ...(opts.preopens ?? [])];
  const argv = [name, ...(opts.args ?? [])];
  const w = opts.shim ? new WASI(argv, opts.env ?? [], fds, { debug: false }) : new AgentWasi(argv, opts.env ?? [], fds);
  const instance = new WebAssembly.Instance(new WebAssembly.Module(wasm(name)), { wasi_snapshot_preview1: w.wasiImport as WebAssembly.ModuleImports });
  const code = w.start(instance as unknown as { exports: { memory: WebAssembly.Memory; _start: () => unknown } });
  return { code, report: JSON.parse(stdout.text()) as Report, stderr: stderr.text() };
}

function allOk(r: Report, atLeast: number): void {
  assert.deepEqual(r.fail, [], `failed checks: ${r.fail.join('; ')}`);
  assert.ok(r.ok.length >= atLeast, `only ${r.ok.length} checks ran: ${r.ok.join(', ')}`);
}

test('every family has its program built', () => {
  for (const f of FAMILIES) assert.ok(wasm(f).byteLength > 1000, f);
});

test('args through the runtime: argv as given, sizes in bytes', async () => {
  const r = reportOf(await viaRuntime('args', { args: ['--mode', 'fast', ''] }));
  allOk(r, 7);
  assert.deepEqual(r.seen, ['args', '--mode', 'fast', '']);
});

test('args with UTF-8 text: args_sizes_get counts bytes (the bare shim counts UTF-16 units and overflows)', async () => {
  const args = ['héllo wörld', '日本語', '😀 emoji', 'a\nb'];
  const ours = reportOf(await viaRuntime('args', { args }));
  allOk(ours, 7);
  assert.deepEqual(ours.seen, ['args', ...args]);
  const shim = direct('args', { args, shim: true });
  assert.equal(shim.code, 1);
  assert.ok(shim.report.fail.some((f) => f.startsWith('args_get writes no byte past')), shim.report.fail.join('; '));
});

test('environ through the runtime, and with UTF-8 values directly', async () => {
  const r = reportOf(await viaRuntime('environ', { taskId: 't-9', env: { FOO: 'bar baz', EMPTY: '' } }));
  allOk(r, 5);
  assert.deepEqual(r.seen, ['AGENT_TASK_ID=t-9', 'AGENT_NAME=environ', 'FOO=bar baz', 'EMPTY=']);
  const d = reportOf(await viaRuntime('environ', { env: { K: 'ünï', NL: 'line1\nline2', J: '日本' }, injectEnv: false }));
  allOk(d, 5);
  assert.deepEqual(d.seen, ['K=ünï', 'NL=line1\nline2', 'J=日本']);
});

test('clocks', async () => {
  allOk(reportOf(await viaRuntime('clocks')), 12);
});

test('poll: several subscriptions, clocks and fd readiness', async () => {
  const r = reportOf(await viaRuntime('poll', { stdin: utf8('hello'), files: { 'data.txt': utf8('hello world') } }));
  allOk(r, 30);
});

test('proc: proc_exit with 0 and with 7', async () => {
  allOk(reportOf(await viaRuntime('proc', { args: ['0'] })), 1);
  const seven = await viaRuntime('proc', { args: ['7'] });
  assert.ok(!seven.ok);
  assert.equal(seven.error.code, 'AGENT_EXIT_NONZERO');
  assert.equal(seven.error.details?.exitCode, 7);
});

test('random', async () => {
  allOk(reportOf(await viaRuntime('random')), 7);
});

test('sched', async () => {
  allOk(reportOf(await viaRuntime('sched')), 3);
});

test('sock: BADF and NOTSOCK instead of a trap', async () => {
  allOk(reportOf(await viaRuntime('sock')), 9);
});

const SCRATCH = [{ path: '/scratch', files: {}, writable: true }];

test('fd: rights, append, flags, times and sizes in a writable mount', async () => {
  const out = await viaRuntime('fd', { stdin: utf8('hello'), mounts: SCRATCH });
  allOk(reportOf(out), 45);
  assert.ok(out.ok);
  assert.deepEqual(out.result.files?.['/scratch']?.['a.txt'], { text: 'Abcd' });
});

test('path: symlinks, links, renames, removal, times and flags in a writable mount', async () => {
  const out = await viaRuntime('path', { mounts: SCRATCH });
  allOk(reportOf(out), 90);
  assert.ok(out.ok);
  // What the mount holds at exit comes back: links are left out, emptied and removed directories are gone.
  const files = out.result.files?.['/scratch'] ?? {};
  assert.deepEqual(files['a2.txt'], { text: 'yy' });
  assert.ok(!Object.keys(files).some((p) => p === 'ln' || p.startsWith('d/') || p.startsWith('g/')), Object.keys(files).join(', '));
});

test('path: the tree it leaves (links and empty directories, which results leave out), seen directly', () => {
  const scratch = new PreopenDirectory('/scratch', new Map());
  const { code, report, stderr } = direct('path', { preopens: [scratch] });
  assert.equal(code, 0, stderr);
  allOk(report, 90);
  const tree = scratch.dir.contents;
  const ln = tree.get('ln');
  assert.ok(ln instanceof Symlink && ln.target === 'a.txt');
  assert.ok(tree.get('e') instanceof Directory && !tree.has('d') && !tree.has('g'));
  assert.equal(new TextDecoder().decode((tree.get('a2.txt') as File).data), 'yy');
});

test('sleep-poll through the runtime ends at its deadline with AGENT_TIMEOUT, not after 10 s', async () => {
  const bytes = readFileSync(join(ROOT, 'agents/dist/sleep-poll.wasm'));
  const prepared = await prepareAgentModule(bytes, 16);
  const t0 = performance.now();
  const out = runAgentInThread(prepared.module, runRequest('sleep-poll', {}, { timeoutMs: 300 }), { capPages: prepared.capPages, memory: prepared.memory });
  const took = performance.now() - t0;
  assert.ok(!out.ok);
  assert.equal(out.error.code, 'AGENT_TIMEOUT');
  assert.ok(took >= 250 && took < 5000, `took ${took} ms`);
});
