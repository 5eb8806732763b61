/**
 * Input and output as bytes and inline mounts through the pool, for real: the built page in a
 * headless Chromium node, a coordinator on a temp SQLite file, tasks over the HTTP API.
 * agents/wasi-tests/rawout.c (raw text, bytes, exit codes) and mounts.c (a read-only tree, a
 * writable one whose files come back, a cap it fills): a raw-text agent succeeds, a non-zero
 * exit listed in okExitCodes succeeds and one not listed fails keeping its stdout and stderr,
 * a writable mount's files (binary too) come back, and a full mount is AGENT_MOUNT_FULL.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { AgentResult, CapturedStream, TaskRecord } from '../shared';
import { postTasks, waitAll } from './tasks';
import { E2ePool } from './pool';
import { ROOT } from '../scripts/page-build';
import { registerAgent } from '../scripts/register-agents';

let pool: E2ePool | null = null;
let url = '';

before(async () => {
  pool = await E2ePool.start('e2e-wasi-io-');
  url = pool.url;
  for (const name of ['rawout', 'mounts']) {
    const r = await registerAgent(url, `io-${name}`, readFileSync(join(ROOT, 'agents/dist/wasi-tests', `${name}.wasm`)));
    assert.equal(r.code, null, `${name} refused: ${r.status} ${r.code} ${r.message}`);
  }
  await pool.join({ count: 1 });
});

after(async () => {
  await pool?.close();
});

const TEXT = 'hello, wörld\nnot JSON at all\n';
const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const task = (agent: string, payload: Record<string, unknown>) => ({ kind: 'agent', payload: { agent, ...payload }, maxAttempts: 1 });

function succeeded(rec: TaskRecord): AgentResult {
  assert.equal(rec.state, 'succeeded', `${rec.state} ${rec.error?.code} ${rec.error?.message}`);
  return rec.result as AgentResult;
}

test('raw text, okExitCodes, a kept non-zero exit, files back from a writable mount and a full mount, through the pool', async () => {
  const specs = [
    task('io-rawout', { args: ['text', '0'], stdout: 'text' }),
    task('io-rawout', { args: ['text', '3'], stdout: 'text', okExitCodes: [3] }),
    task('io-rawout', { args: ['text', '4'], stdout: 'text', okExitCodes: [3] }),
    task('io-rawout', { args: ['cat', '0'], stdin: { base64: b64(Uint8Array.of(0, 1, 2, 255)) }, stdout: 'base64' }),
    task('io-mounts', {
      args: ['write', '/out'],
      mounts: {
        '/in': { files: { 'src.txt': { text: 'abc' }, 'sub/deep/n.bin': { base64: b64(Uint8Array.of(0, 255, 1, 254)) } } },
        '/out': { writable: true, files: { 'gone.txt': { text: 'bye' } } },
      },
    }),
    task('io-mounts', { args: ['fill', '/out'], mounts: { '/out': { writable: true, maxBytes: 10_000 } } }),
  ];
  const [text, okExit, badExit, bytes, written, full] = await waitAll(url, await postTasks(url, specs));

  const t = succeeded(text!);
  assert.equal(t.output, TEXT);
  assert.equal(t.stderr, 'a line on stderr\n');

  const o = succeeded(okExit!);
  assert.equal(o.exitCode, 3);
  assert.equal(o.output, TEXT);

  assert.equal(badExit!.state, 'failed');
  assert.equal(badExit!.error?.code, 'AGENT_EXIT_NONZERO');
  const d = badExit!.error!.details as { exitCode: number; stdout: CapturedStream; stderr: CapturedStream };
  assert.equal(d.exitCode, 4);
  assert.deepEqual(d.stdout, { text: TEXT, bytes: Buffer.byteLength(TEXT), truncated: false });
  assert.deepEqual(d.stderr, { text: 'a line on stderr\n', bytes: 17, truncated: false });

  assert.equal(succeeded(bytes!).output, b64(Uint8Array.of(0, 1, 2, 255)));

  const w = succeeded(written!);
  assert.deepEqual((w.output as { fail: string[] }).fail, []);
  assert.deepEqual(w.files, {
    '/out': {
      'hello.txt': { text: 'hello\n' },
      'sub/deep/bytes.bin': { base64: b64(Uint8Array.from({ length: 256 }, (_, i) => i)) },
      'copy.txt': { text: 'ABC' },
    },
  });

  assert.equal(full!.state, 'failed');
  assert.equal(full!.error?.code, 'AGENT_MOUNT_FULL');
  assert.equal(full!.error?.details?.mount, '/out');
});
