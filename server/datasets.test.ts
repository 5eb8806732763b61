import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { request } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LIMITS } from '../shared';
import { Auth } from './auth';
import { createCoordinator, type Coordinator } from './index';
import { Journal } from './journal';
import { apiClient, tempDir } from './testing';
import { testDb } from './postgres-testing';

const NDJSON = { 'content-type': 'application/x-ndjson' };

const line = (q: string, a: string) => JSON.stringify({ messages: [{ role: 'user', content: q }, { role: 'assistant', content: a }] });
const DATASET = [line('2+2?', '4'), '', line('capital of France?', 'Paris'), JSON.stringify({ messages: [{ role: 'system', content: 'terse' }, { role: 'user', content: 'hi' }, { role: 'assistant', content: 'hello' }] })].join('\n') + '\n';
const sha = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');
const trainTask = (dataset: string) => ({ kind: 'train', payload: { model: 'tiny', adapterName: 'a', dataset, lora: { rank: 2, alpha: 4, targetModules: ['q_proj'] }, steps: 1 } });

/** The status of a request declaring `declared` bytes, of which only the first KiB is sent (a refusal must not wait for the rest). */
function oversize(url: string, declared: number, headers: Record<string, string> = {}): Promise<{ status: number; body: string }> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, method: 'POST', path: u.pathname, headers: { ...NDJSON, ...headers, 'content-length': String(declared) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => {
        resolve({ status: res.statusCode!, body: Buffer.concat(chunks).toString('utf8') });
        req.destroy();
      });
    });
    req.on('error', reject);
    req.setTimeout(10_000, () => req.destroy(new Error('no answer within 10 s')));
    req.write(Buffer.alloc(1024, 0x20));
  });
}

describe('datasets, open mode', () => {
  const tmp = tempDir();
  let c: Coordinator;
  const api = (path: string, init?: RequestInit & { json?: unknown }) => apiClient(c.url)(path, init);

  before(async () => {
    c = await createCoordinator({ dbPath: testDb(join(tmp.dir, 'c.db')) });
  });
  after(async () => {
    await c.close();
    tmp.cleanup();
  });

  test('upload, re-upload is the same dataset, list, record, content byte-identical', async () => {
    const up = await api('/v1/datasets', { method: 'POST', headers: NDJSON, body: DATASET });
    assert.equal(up.status, 201, JSON.stringify(up.body));
    const hex = sha(DATASET);
    assert.deepEqual({ ...up.body, createdAt: 0 }, { id: `sha256:${hex}`, sha256: hex, bytes: Buffer.byteLength(DATASET), conversations: 3, createdAt: 0, contentUrl: `/v1/datasets/${hex}/content` });
    assert.equal(typeof up.body.createdAt, 'number');

    const again = await api('/v1/datasets', { method: 'POST', headers: { 'content-type': 'application/jsonl; charset=utf-8' }, body: DATASET });
    assert.equal(again.status, 200, JSON.stringify(again.body));
    assert.deepEqual(again.body, up.body);

    const list = await api('/v1/datasets');
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.datasets, [up.body]);
    for (const ref of [hex, `sha256:${hex}`, hex.toUpperCase()]) {
      const rec = await api(`/v1/datasets/${encodeURIComponent(ref)}`);
      assert.equal(rec.status, 200, ref);
      assert.deepEqual(rec.body, up.body);
    }
    const res = await fetch(`${c.url}/v1/datasets/${hex}/content`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'application/x-ndjson');
    const bytes = Buffer.from(await res.arrayBuffer());
    assert.ok(bytes.equals(Buffer.from(DATASET)), 'content is the uploaded bytes');
    assert.equal(sha(bytes), hex);

    const missing = await api(`/v1/datasets/${'0'.repeat(64)}`);
    assert.equal(missing.status, 404);
    assert.equal(missing.body.error.code, 'DATASET_NOT_FOUND');
    const garbage = await api('/v1/datasets/not-a-hash/content');
    assert.equal(garbage.status, 400);
    assert.equal(garbage.body.error.code, 'INVALID_ID');
  });

  test('a bad line is DATASET_INVALID with its line number; an empty dataset, non-UTF-8 refused; nothing stored', async () => {
    const before = (await api('/v1/datasets')).body.datasets.length;
    const cases: Array<[string | Buffer, number | null]> = [
      [`${line('a', 'b')}\n\n{"messages":[{"role":"user","content":"no answer"}]}\n`, 3],
      [`${line('a', 'b')}\nnot json\n`, 2],
      [`${line('a', 'b')}\n{"messages":[{"role":"robot","content":"x"}]}\n`, 2],
      ['[1,2]\n', 1],
      ['', null],
      ['\n  \n\n', null],
      [Buffer.concat([Buffer.from(`${line('a', 'b')}\n`), Buffer.from([0x7b, 0xff, 0xfe, 0x7d, 0x0a])]), 2],
    ];
    for (const [body, at] of cases) {
      const r = await api('/v1/datasets', { method: 'POST', headers: NDJSON, body: typeof body === 'string' ? body : new Uint8Array(body) });
      assert.equal(r.body.error?.code, 'DATASET_INVALID', `${String(body).slice(0, 60)}: ${JSON.stringify(r.body)}`);
      assert.equal(r.status, 422);
      if (at !== null) {
        assert.equal(r.body.error.details.line, at, JSON.stringify(r.body));
        assert.match(r.body.error.message, new RegExp(`line ${at}\\b`));
      }
    }
    assert.equal((await api('/v1/datasets')).body.datasets.length, before);
  });

  test('wrong content type is 415 before the body is read; over the limit is BODY_TOO_LARGE', async () => {
    for (const type of ['application/json', 'text/plain', 'application/octet-stream']) {
      const r = await api('/v1/datasets', { method: 'POST', headers: { 'content-type': type }, body: DATASET });
      assert.equal(r.status, 415, type);
      assert.equal(r.body.error.code, 'UNSUPPORTED_MEDIA_TYPE', type);
    }
    const latin = await api('/v1/datasets', { method: 'POST', headers: { 'content-type': 'application/x-ndjson; charset=latin1' }, body: DATASET });
    assert.equal(latin.status, 415);
    const big = await oversize(`${c.url}/v1/datasets`, LIMITS.maxDatasetBytes + 1);
    assert.equal(big.status, 413, big.body);
    const err = JSON.parse(big.body).error;
    assert.equal(err.code, 'BODY_TOO_LARGE');
    assert.equal(err.details.limit, LIMITS.maxDatasetBytes);
    // The JSON routes keep their own (smaller) limit.
    const json = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'x', input: { s: 'x'.repeat(LIMITS.maxBodyBytes) } } } });
    assert.equal(json.status, 413);
    assert.equal(json.body.error.details.limit, LIMITS.maxBodyBytes);
  });

  test('a train task naming a dataset: an unknown one is DATASET_NOT_FOUND at submit, an uploaded one is journaled', async () => {
    const unknown = await api('/v1/tasks', { method: 'POST', json: trainTask(`sha256:${'1'.repeat(64)}`) });
    assert.equal(unknown.status, 404, JSON.stringify(unknown.body));
    assert.equal(unknown.body.error.code, 'DATASET_NOT_FOUND');
    assert.match(unknown.body.error.message, /^\/payload\/dataset: /);
    const bad = await api('/v1/tasks', { method: 'POST', json: { tasks: [trainTask(DATASET), trainTask('sha256:nothex')] } });
    assert.equal(bad.body.error.code, 'DATASET_NOT_FOUND');
    assert.match(bad.body.error.message, /^\/tasks\/1\/payload\/dataset: /);
    const ok = await api('/v1/tasks', { method: 'POST', json: trainTask(`sha256:${sha(DATASET)}`) });
    assert.equal(ok.status, 202, JSON.stringify(ok.body));
    const task = await api(`/v1/tasks/${ok.body.id}`);
    assert.equal(task.body.payload?.dataset ?? task.body.spec?.payload?.dataset, `sha256:${sha(DATASET)}`);
  });

  test('a journal from before datasets opens and takes them (the tables are created on open)', () => {
    const path = join(tmp.dir, 'old.db');
    const old = new Journal(path);
    old.db.exec('DROP TABLE dataset_owners; DROP TABLE datasets;');
    old.close();
    const j = new Journal(path);
    try {
      assert.equal(j.putDataset('ab'.repeat(32), new Uint8Array([1, 2]), 1, null).created, true);
      assert.equal(j.putDataset('ab'.repeat(32), new Uint8Array([1, 2]), 1, null).created, false);
      assert.equal(j.datasets(null).length, 1);
    } finally {
      j.close();
    }
  });
});

describe('datasets under auth, two tenants', () => {
  const tmp = tempDir();
  let c: Coordinator;
  const T = { admin: 'tok-admin-aaaaaaaaaaaaaaaa', acme: 'tok-acme-planner-hhhhhhhhh', beta: 'tok-beta-planner-lllllllll', evolver: 'tok-evolver-eeeeeeeeeeeeee' };
  const as = (token: string) => apiClient(c.url, token);

  before(async () => {
    c = await createCoordinator({
      dbPath: testDb(join(tmp.dir, 'c.db')),
      auth: Auth.fromConfig({
        tokens: [
          { token: T.admin, roles: ['admin'] },
          { token: T.acme, roles: ['planner'], tenant: 'acme' },
          { token: T.beta, roles: ['planner'], tenant: 'beta' },
          { token: T.evolver, roles: ['evolver'] },
        ],
      }),
    });
  });
  after(async () => {
    await c.close();
    tmp.cleanup();
  });

  test("another tenant cannot see, read or train on a tenant's dataset; its own upload of the same bytes is its own", async () => {
    const acme = as(T.acme);
    const beta = as(T.beta);
    const hex = sha(DATASET);
    const noToken = await apiClient(c.url)('/v1/datasets', { method: 'POST', headers: NDJSON, body: DATASET });
    assert.equal(noToken.status, 401);
    const evolver = await as(T.evolver)('/v1/datasets');
    assert.equal(evolver.status, 403);

    const up = await acme('/v1/datasets', { method: 'POST', headers: NDJSON, body: DATASET });
    assert.equal(up.status, 201, JSON.stringify(up.body));
    assert.equal((await acme('/v1/datasets', { method: 'POST', headers: NDJSON, body: DATASET })).status, 200);
    assert.deepEqual((await acme('/v1/datasets')).body.datasets.map((d: { sha256: string }) => d.sha256), [hex]);

    assert.deepEqual((await beta('/v1/datasets')).body.datasets, []);
    for (const path of [`/v1/datasets/${hex}`, `/v1/datasets/${hex}/content`]) {
      const r = await beta(path);
      assert.equal(r.status, 404, path);
      assert.equal(r.body.error.code, 'DATASET_NOT_FOUND', path);
    }
    const train = await beta('/v1/tasks', { method: 'POST', json: trainTask(`sha256:${hex}`) });
    assert.equal(train.body.error?.code, 'DATASET_NOT_FOUND', JSON.stringify(train.body));
    assert.equal((await acme('/v1/tasks', { method: 'POST', json: trainTask(`sha256:${hex}`) })).status, 202);

    // beta uploading the same bytes is a new dataset to beta (201: it does not learn acme has them).
    const betaUp = await beta('/v1/datasets', { method: 'POST', headers: NDJSON, body: DATASET });
    assert.equal(betaUp.status, 201, JSON.stringify(betaUp.body));
    assert.equal(betaUp.body.id, `sha256:${hex}`);
    assert.equal((await beta(`/v1/datasets/${hex}`)).status, 200);
    const content = await fetch(`${c.url}/v1/datasets/${hex}/content`, { headers: { authorization: `Bearer ${T.beta}` } });
    assert.ok(Buffer.from(await content.arrayBuffer()).equals(Buffer.from(DATASET)));

    // A token without a tenant sees every dataset, stored once.
    const all = await as(T.admin)('/v1/datasets');
    assert.deepEqual(all.body.datasets.map((d: { sha256: string }) => d.sha256), [hex]);
  });
});
