/**
 * The agent payload of issue 8 at submit: what is accepted and the coded refusals (mount paths
 * escaping their root, overlapping mounts, bad base64, over-large inline input, NUL in args or
 * env, stdin with input), over real HTTP; and how replicas compare the new result shape.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AGENT_IO_LIMITS, LIMITS, checkAgentPayload, type AgentPayload } from '../shared';
import { createCoordinator, type Coordinator } from './index';
import { outcomeDigest } from './quorum';
import { HELLO_WAT, apiClient, tempDir, wat } from './testing';

const tmp = tempDir();
let c: Coordinator;
const api = (path: string, init?: RequestInit & { json?: unknown }) => apiClient(c.url)(path, init);

before(async () => {
  c = await createCoordinator({ dbPath: join(tmp.dir, 'c.db') });
  const res = await api('/v1/agents/hello/versions/1.0.0', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) });
  assert.equal(res.status, 201, JSON.stringify(res.body));
});

after(async () => {
  await c.close();
  tmp.cleanup();
});

async function submit(payload: Record<string, unknown>) {
  return api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello', ...payload } } });
}

async function refused(payload: Record<string, unknown>, status: number, code: string, pathHas?: string) {
  const res = await submit(payload);
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body.error.code, code, res.body.error.message);
  if (pathHas) assert.ok(String(res.body.error.details?.path ?? res.body.error.message).includes(pathHas), JSON.stringify(res.body.error));
  return res.body.error as { code: string; message: string; details: Record<string, unknown> };
}

describe('accepted payloads', () => {
  test('raw stdin, stdout modes, okExitCodes, argv0, injectEnv, UTF-8 env and args, mounts of every kind', async () => {
    const payload = {
      stdin: { base64: Buffer.from([0, 1, 2, 255]).toString('base64') },
      stdout: 'text',
      okExitCodes: [1, 2],
      argv0: 'tool',
      args: ['héllo', 'a\nb', '日本語'],
      env: { K: 'ünï\nline' },
      injectEnv: false,
      files: { 'a.txt': 'x' },
      mounts: {
        '/data': { files: { 'dir/sub/b.bin': { base64: 'AAEC' }, 'c.txt': { text: 'hi' } } },
        '/out': { writable: true, maxBytes: 1 << 20 },
        '/tmp': { writable: true },
      },
    };
    const res = await submit(payload);
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const task = await api(`/v1/tasks/${res.body.id}`);
    assert.deepEqual(task.body.payload.mounts, payload.mounts);
    assert.equal(task.body.payload.stdout, 'text');
  });

  test('injectEnv from the version\'s config unless the task says otherwise', async () => {
    const pub = await api('/v1/agents/bare-env/versions/1.0.0', {
      method: 'PUT',
      headers: { 'content-type': 'application/wasm', 'x-agent-config': JSON.stringify({ injectEnv: false }) },
      body: await wat(HELLO_WAT),
    });
    assert.equal(pub.status, 201, JSON.stringify(pub.body));
    assert.equal((await api('/v1/agents/bare-env')).body.versions[0].config.injectEnv, false, 'the record shows the config');
    const plain = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'bare-env' } } });
    assert.equal((await api(`/v1/tasks/${plain.body.id}`)).body.payload.injectEnv, false);
    const own = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'bare-env', injectEnv: true } } });
    assert.equal((await api(`/v1/tasks/${own.body.id}`)).body.payload.injectEnv, true);
    const other = await submit({});
    assert.equal((await api(`/v1/tasks/${other.body.id}`)).body.payload.injectEnv, undefined, 'other versions keep the default');
  });

  test('a mount at / alone', async () => {
    assert.equal((await submit({ mounts: { '/': { files: { 'etc/conf': { text: 'x' } } } } })).status, 202);
  });
});

describe('refused at submit with a code', () => {
  test('paths that escape their mount or are not clean: MOUNT_PATH_INVALID', async () => {
    await refused({ mounts: { '/data': { files: { '../etc/passwd': { text: 'x' } } } } }, 400, 'MOUNT_PATH_INVALID', '../etc/passwd');
    await refused({ mounts: { '/data': { files: { 'a/../../b': { text: 'x' } } } } }, 400, 'MOUNT_PATH_INVALID');
    await refused({ mounts: { '/data': { files: { '/etc/passwd': { text: 'x' } } } } }, 400, 'MOUNT_PATH_INVALID', '/etc/passwd');
    await refused({ mounts: { '/data': { files: { 'a//b': { text: 'x' } } } } }, 400, 'MOUNT_PATH_INVALID');
    await refused({ mounts: { '/data': { files: { './a': { text: 'x' } } } } }, 400, 'MOUNT_PATH_INVALID');
    await refused({ mounts: { '/data': { files: { 'a/': { text: 'x' } } } } }, 400, 'MOUNT_PATH_INVALID');
    await refused({ mounts: { '/data': { files: { a: { text: 'x' }, 'a/b': { text: 'y' } } } } }, 400, 'MOUNT_PATH_INVALID');
    await refused({ mounts: { 'data': {} } }, 400, 'MOUNT_PATH_INVALID');
    await refused({ mounts: { '/data/../etc': {} } }, 400, 'MOUNT_PATH_INVALID');
    await refused({ mounts: { '/data/': {} } }, 400, 'MOUNT_PATH_INVALID');
  });

  test('mounts at the same path or nested: MOUNT_OVERLAP (the files shorthand is /input)', async () => {
    await refused({ mounts: { '/a': {}, '/a/b': {} } }, 400, 'MOUNT_OVERLAP');
    await refused({ mounts: { '/': {}, '/tmp': { writable: true } } }, 400, 'MOUNT_OVERLAP');
    const e = await refused({ files: { 'x.txt': 'x' }, mounts: { '/input': { writable: true } } }, 400, 'MOUNT_OVERLAP');
    assert.match(e.message, /files shorthand/);
    // Siblings that share a prefix are not nested.
    assert.equal((await submit({ mounts: { '/a': {}, '/ab': {} } })).status, 202);
  });

  test('invalid base64 in stdin or a file: INVALID_BASE64', async () => {
    await refused({ stdin: { base64: 'not base64!' } }, 400, 'INVALID_BASE64', 'stdin');
    await refused({ mounts: { '/d': { files: { f: { base64: 'AAE' } } } } }, 400, 'INVALID_BASE64', '/d/files/f');
  });

  test('inline input over the limit: AGENT_INPUT_TOO_LARGE, pointing at blobs', async () => {
    const big = 'x'.repeat(LIMITS.maxAgentInputBytes / 2 + 1);
    const e = await refused({ input: { big }, mounts: { '/d': { files: { f: { text: big } } } } }, 413, 'AGENT_INPUT_TOO_LARGE');
    assert.match(e.message, /blob/);
    assert.equal(e.details.limit, LIMITS.maxAgentInputBytes);
  });

  test('NUL in args, argv0 or env values: AGENT_BAD_ARGS', async () => {
    await refused({ args: ['a\u0000b'] }, 400, 'AGENT_BAD_ARGS', '/args/0');
    await refused({ argv0: '\u0000' }, 400, 'AGENT_BAD_ARGS', 'argv0');
    await refused({ env: { K: 'v\u0000' } }, 400, 'AGENT_BAD_ARGS', '/env/K');
  });

  test('stdin with input, and maxBytes on a read-only mount: AGENT_PAYLOAD_INVALID', async () => {
    await refused({ input: 1, stdin: { text: 'x' } }, 400, 'AGENT_PAYLOAD_INVALID');
    await refused({ mounts: { '/d': { maxBytes: 10 } } }, 400, 'AGENT_PAYLOAD_INVALID');
  });

  test('what the schema refuses: unknown fields, a bad stdout mode, exit codes out of range, maxBytes over the bound', async () => {
    await refused({ stdot: 'text' }, 400, 'SCHEMA_VIOLATION');
    await refused({ stdout: 'xml' }, 400, 'SCHEMA_VIOLATION');
    await refused({ okExitCodes: [256] }, 400, 'SCHEMA_VIOLATION');
    await refused({ mounts: { '/d': { writable: true, maxBytes: AGENT_IO_LIMITS.maxMountBytes + 1 } } }, 400, 'SCHEMA_VIOLATION');
    await refused({ mounts: { '/d': { files: { f: { text: 'x', base64: 'AA==' } } } } }, 400, 'SCHEMA_VIOLATION');
  });
});

describe('the shared check, as a node runs it again', () => {
  test('mounts come back in fd order: the files shorthand first, then the mounts as given', () => {
    const p: AgentPayload = { agent: 'a', files: { 'x': 'y' }, mounts: { '/z': { writable: true }, '/b': {} } };
    assert.deepEqual(checkAgentPayload(p).map((m) => [m.path, m.writable, m.maxBytes]), [
      ['/input', false, 0],
      ['/z', true, AGENT_IO_LIMITS.defaultMountBytes],
      ['/b', false, 0],
    ]);
  });

  test('too many files inline: AGENT_INPUT_TOO_LARGE', () => {
    const files: Record<string, { text: string }> = {};
    for (let i = 0; i <= AGENT_IO_LIMITS.maxMountFiles; i++) files[`f${i}`] = { text: '' };
    assert.throws(() => checkAgentPayload({ agent: 'a', mounts: { '/d': { files } } }), (e: { code: string }) => e.code === 'AGENT_INPUT_TOO_LARGE');
  });
});

describe('replicas compare the new result shape', () => {
  test('text output, exit codes and writable mounts\' files all count; timings do not', () => {
    const r = (over: Record<string, unknown>) => ({ ok: true as const, result: { exitCode: 0, output: 'hi\n', stderr: '', fuelUsed: 1, durationMs: 1, memoryBytes: 1, ...over } });
    assert.equal(outcomeDigest('agent', r({})), outcomeDigest('agent', r({ durationMs: 9, fuelUsed: 7 })));
    assert.notEqual(outcomeDigest('agent', r({})), outcomeDigest('agent', r({ output: 'ho\n' })));
    assert.notEqual(outcomeDigest('agent', r({})), outcomeDigest('agent', r({ exitCode: 3 })));
    const files = (t: string) => ({ files: { '/out': { 'a.txt': { text: t } } } });
    assert.equal(outcomeDigest('agent', r(files('x'))), outcomeDigest('agent', r(files('x'))));
    assert.notEqual(outcomeDigest('agent', r(files('x'))), outcomeDigest('agent', r(files('y'))));
    // A result without files digests as it did before files existed.
    assert.equal(outcomeDigest('agent', r({})), outcomeDigest('agent', { ok: true, result: { exitCode: 0, output: 'hi\n' } }));
  });
});
