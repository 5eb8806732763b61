/**
 * Input and output as bytes, env and args as given, and mounts (issue 8): the runtime with the
 * C programs agents/wasi-tests/rawout.c and mounts.c (built into agents/dist/wasi-tests/).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AGENT_IO_LIMITS, type AgentLimits, type AgentResult, type CapturedStream } from '../../shared';
import { prepareAgentModule, type PreparedModule } from './module-cache';
import { runAgentInThread } from './run';
import { runRequest } from './testing/request';
import type { AgentRunOutcome, AgentRunRequest } from './types';

const ROOT = join(import.meta.dirname, '../..');
const prepared = new Map<string, PreparedModule>();
const utf8 = (s: string) => new TextEncoder().encode(s);
const ALL_BYTES = Uint8Array.from({ length: 256 }, (_, i) => i);
const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');

async function run(name: 'rawout' | 'mounts', over: Partial<AgentRunRequest> = {}, limits: Partial<AgentLimits> = {}): Promise<AgentRunOutcome> {
  let p = prepared.get(name);
  if (!p) {
    p = await prepareAgentModule(readFileSync(join(ROOT, 'agents/dist/wasi-tests', `${name}.wasm`)), 16);
    prepared.set(name, p);
  }
  return runAgentInThread(p.module, runRequest(name, over, limits), { capPages: p.capPages, memory: p.memory });
}

function ok(out: AgentRunOutcome): AgentResult {
  assert.ok(out.ok, `the run failed: ${JSON.stringify(out.ok ? null : out.error)}`);
  return out.result;
}

function failed(out: AgentRunOutcome, code: string): Record<string, unknown> {
  assert.ok(!out.ok, `the run succeeded: ${JSON.stringify(out.ok ? out.result.output : null)}`);
  assert.equal(out.error.code, code, out.error.message);
  return out.error.details ?? {};
}

const TEXT = 'hello, wörld\nnot JSON at all\n';

test('stdout "text": a program printing text and exiting 0 succeeds with the text as output', async () => {
  const r = ok(await run('rawout', { args: ['text', '0'], stdout: 'text' }));
  assert.equal(r.output, TEXT);
  assert.equal(r.exitCode, 0);
  assert.equal(r.stderr, 'a line on stderr\n');
  assert.equal(r.files, undefined);
});

test('stdout "json" (the default) still refuses text, keeping what it printed in the details', async () => {
  const d = failed(await run('rawout', { args: ['text', '0'] }), 'AGENT_BAD_OUTPUT');
  assert.deepEqual(d.stdout, { text: TEXT, bytes: utf8(TEXT).byteLength, truncated: false } satisfies CapturedStream);
  assert.equal(d.exitCode, 0);
});

test('stdout "base64": every byte value comes back', async () => {
  const r = ok(await run('rawout', { args: ['bytes', '0'], stdout: 'base64' }));
  assert.equal(r.output, b64(ALL_BYTES));
});

test('stdin bytes reach the program unchanged', async () => {
  const r = ok(await run('rawout', { args: ['cat', '0'], stdin: ALL_BYTES, stdout: 'base64' }));
  assert.equal(r.output, b64(ALL_BYTES));
});

test('a non-zero exit keeps exitCode, stdout and stderr; listed in okExitCodes it is a success', async () => {
  const d = failed(await run('rawout', { args: ['text', '3'], stdout: 'text' }), 'AGENT_EXIT_NONZERO');
  assert.equal(d.exitCode, 3);
  assert.deepEqual(d.stdout, { text: TEXT, bytes: utf8(TEXT).byteLength, truncated: false });
  assert.deepEqual(d.stderr, { text: 'a line on stderr\n', bytes: 17, truncated: false });
  const r = ok(await run('rawout', { args: ['text', '3'], stdout: 'text', okExitCodes: [1, 3] }));
  assert.equal(r.exitCode, 3);
  assert.equal(r.output, TEXT);
  failed(await run('rawout', { args: ['text', '4'], stdout: 'text', okExitCodes: [1, 3] }), 'AGENT_EXIT_NONZERO');
});

test('stdout past its cap is AGENT_OUTPUT_LIMIT with what fitted kept and marked truncated', async () => {
  const d = failed(await run('rawout', { args: ['bytes', '0'], stdout: 'base64' }, { maxStdoutBytes: 100 }), 'AGENT_OUTPUT_LIMIT');
  assert.deepEqual(d.stdout, { base64: b64(ALL_BYTES.subarray(0, 100)), bytes: 100, truncated: true });
});

test('a failed attempt keeps at most maxFailureStreamBytes of stdout, marked truncated', async () => {
  const big = new Uint8Array(AGENT_IO_LIMITS.maxFailureStreamBytes + 5000).fill(65);
  const d = failed(await run('rawout', { args: ['cat', '1'], stdin: big, stdout: 'text' }), 'AGENT_EXIT_NONZERO');
  const s = d.stdout as CapturedStream;
  assert.equal(s.bytes, big.byteLength);
  assert.equal(s.truncated, true);
  assert.equal(s.text?.length, AGENT_IO_LIMITS.maxFailureStreamBytes);
});

test('argv0, UTF-8 args and env as given; injectEnv false gives exactly the env', async () => {
  const args = ['argv', '0', 'héllo wörld', '日本語', 'a=b', '😀'];
  const r = ok(await run('rawout', { argv0: 'tool', args, env: { K: 'ünï', J: '日本' }, injectEnv: false, stdout: 'text' }));
  assert.equal(r.output, ['tool', ...args, 'K=ünï', 'J=日本', ''].join('\n'));
  const injected = ok(await run('rawout', { args: ['argv', '0'], env: { K: 'v' }, taskId: 't-7', stdout: 'text' }));
  assert.equal(injected.output, ['rawout', 'argv', '0', 'AGENT_TASK_ID=t-7', 'AGENT_NAME=rawout', 'K=v', ''].join('\n'));
});

test('NUL or lone surrogates in args, argv0 or env, and = in env names, are AGENT_BAD_ARGS before the run', async () => {
  for (const over of [{ args: ['a\0b'] }, { argv0: 'x\0' }, { env: { K: 'v\0' } }, { env: { K: '\ud800' } }, { env: { 'A=B': 'x' } }] as Partial<AgentRunRequest>[]) {
    failed(await run('rawout', over), 'AGENT_BAD_ARGS');
  }
});

const IN = { 'src.txt': utf8('abc'), 'sub/deep/n.bin': Uint8Array.of(0, 255, 1, 254) };

test('mounts: a read-only tree answers EROFS; a writable one returns its files (text and binary, nested)', async () => {
  const r = ok(await run('mounts', {
    args: ['write', '/out'],
    stdout: 'json',
    mounts: [
      { path: '/in', files: IN },
      { path: '/out', files: { 'gone.txt': utf8('bye'), 'kept.bin': Uint8Array.of(0xff, 0xfe) }, writable: true },
    ],
  }));
  const report = r.output as { ok: string[]; fail: string[] };
  assert.deepEqual(report.fail, []);
  assert.ok(report.ok.length >= 17, report.ok.join(', '));
  assert.deepEqual(r.files, {
    '/out': {
      'kept.bin': { base64: b64(Uint8Array.of(0xff, 0xfe)) },
      'hello.txt': { text: 'hello\n' },
      'sub/deep/bytes.bin': { base64: b64(ALL_BYTES) },
      'copy.txt': { text: 'ABC' },
    },
  });
});

test('mounts: the files shorthand still makes /input, beside mounts; a mount at / works', async () => {
  const r = ok(await run('mounts', { args: ['grow', '', '10'], files: { 'a.txt': utf8('x') }, mounts: [{ path: '/', files: {}, writable: true }] }));
  assert.deepEqual(r.output, { grown: 1, errno: 0, enospc: 0 });
  assert.deepEqual(r.files, { '/': { big: { base64: b64(new Uint8Array(10)) } } });
});

test('a writable mount past maxBytes: NOSPC to the program; AGENT_MOUNT_FULL when it then fails, success when it copes', async () => {
  const mounts = [{ path: '/out', files: {}, writable: true, maxBytes: 10_000 }];
  const d = failed(await run('mounts', { args: ['fill', '/out'], mounts }), 'AGENT_MOUNT_FULL');
  assert.equal(d.mount, '/out');
  assert.equal(d.maxBytes, 10_000);
  assert.equal(d.exitCode, 1);
  const coped = ok(await run('mounts', { args: ['fill', '/out', 'handle'], mounts }));
  const out = coped.output as { written: number; enospc: number };
  assert.equal(out.enospc, 1);
  // 10,000 bytes less one entry (the file itself) hold 9 whole chunks of 1,000.
  assert.equal(out.written, 9000);
  assert.equal((coped.files?.['/out']?.big as { text: string }).text.length, 9000);
  const grown = ok(await run('mounts', { args: ['grow', '/out', '20000', 'handle'], mounts }));
  assert.deepEqual(grown.output, { grown: 0, errno: 51, enospc: 1 }); // wasi-libc's errno values are WASI's: NOSPC 51
});

test('files back over the result bound are AGENT_OUTPUT_TOO_LARGE', async () => {
  const size = AGENT_IO_LIMITS.maxResultFileBytes + 1;
  const mounts = [{ path: '/out', files: {}, writable: true, maxBytes: AGENT_IO_LIMITS.maxMountBytes }];
  const d = failed(await run('mounts', { args: ['grow', '/out', String(size)], mounts }), 'AGENT_OUTPUT_TOO_LARGE');
  assert.equal(d.limit, AGENT_IO_LIMITS.maxResultFileBytes);
  assert.equal(d.bytes, size);
});
