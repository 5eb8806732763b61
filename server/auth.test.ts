import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { AppError } from '../shared';
import Fastify from 'fastify';
import { ACCESS, installAccess, registeredRoutes } from './access';
import { Auth, ROLES, ensureLocalTokens, type AuthFileConfig, type Role } from './auth';
import { createCoordinator, type Coordinator } from './index';
import { HELLO_WAT, TestNode, apiClient, tempDir, until, wat, type ApiAnswer } from './testing';

const PLANNER = 'planner-token-0123456789';
const ADMIN = 'admin-token-0123456789ab';
const sha = (t: string): string => createHash('sha256').update(t).digest('hex');

function refusal(fn: () => unknown): AppError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof AppError, String(err));
    return err;
  }
  assert.fail('expected a refusal');
}

describe('auth config', () => {
  test('verify: plaintext and sha256 entries give their principals; unknown tokens give null', () => {
    const auth = Auth.fromConfig({
      tokens: [
        { token: PLANNER, roles: ['planner'], tenant: 'acme' },
        { sha256: sha(ADMIN).toUpperCase(), roles: ['admin'] },
      ],
    });
    assert.equal(auth.isOpen, false);
    const p = auth.verify(PLANNER);
    assert.ok(p);
    assert.deepEqual([...p.roles], ['planner']);
    assert.equal(p.tenant, 'acme');
    assert.equal(p.id, `tok-${sha(PLANNER).slice(0, 12)}`);
    assert.ok(!p.id.includes(PLANNER));
    const a = auth.verify(ADMIN);
    assert.ok(a);
    assert.equal(a.tenant, null);
    assert.ok(Auth.has(a, 'validator'), 'admin holds every role');
    assert.ok(Auth.has(p, 'planner'));
    assert.ok(!Auth.has(p, 'validator'));
    assert.ok(!Auth.has(null, 'planner'));
    for (const t of [undefined, null, '', 'x', `${PLANNER}x`, PLANNER.slice(1), 'a'.repeat(10_000)]) assert.equal(auth.verify(t), null);
  });

  test('open mode: every caller is admin', () => {
    const auth = Auth.open();
    assert.equal(auth.isOpen, true);
    const p = auth.verify(undefined);
    assert.ok(p && Auth.has(p, 'allocator'));
    assert.equal(p.tenant, null);
  });

  test('bearer: parses the authorization header', () => {
    assert.equal(Auth.bearer('Bearer abc'), 'abc');
    assert.equal(Auth.bearer('bearer   abc '), 'abc');
    assert.equal(Auth.bearer(['Bearer abc']), 'abc');
    assert.equal(Auth.bearer('Basic abc'), null);
    assert.equal(Auth.bearer('Bearer a b'), null);
    assert.equal(Auth.bearer(undefined), null);
  });

  test('a bad entry is INVALID_ARGUMENT naming the entry and the field', () => {
    const cases: [unknown, string, number | undefined][] = [
      [[], '(top level)', undefined],
      [{ tokens: {} }, 'tokens', undefined],
      [{ tokens: [], extra: 1 }, 'extra', undefined],
      [{ tokens: [{ token: PLANNER, roles: ['planner'] }, 'x'] }, 'tokens[1]', 1],
      [{ tokens: [{ roles: ['planner'] }] }, 'tokens[0]', 0],
      [{ tokens: [{ token: PLANNER, sha256: sha(PLANNER), roles: ['planner'] }] }, 'tokens[0]', 0],
      [{ tokens: [{ token: 'short', roles: ['planner'] }] }, 'tokens[0].token', 0],
      [{ tokens: [{ sha256: 'abc', roles: ['planner'] }] }, 'tokens[0].sha256', 0],
      [{ tokens: [{ token: PLANNER, roles: [] }] }, 'tokens[0].roles', 0],
      [{ tokens: [{ token: PLANNER, roles: ['planner'] }, { token: ADMIN, roles: ['admin', 'plannr'] }] }, 'tokens[1].roles[1]', 1],
      [{ tokens: [{ token: PLANNER, roles: ['planner'], tenant: 'a b' }] }, 'tokens[0].tenant', 0],
      [{ tokens: [{ token: PLANNER, role: ['planner'] }] }, 'tokens[0].role', 0],
      [{ tokens: [{ token: PLANNER, roles: ['planner'] }, { sha256: sha(PLANNER), roles: ['admin'] }] }, 'tokens[1]', 1],
    ];
    for (const [cfg, path, entry] of cases) {
      const err = refusal(() => Auth.fromConfig(cfg as AuthFileConfig, 'auth.json'));
      assert.equal(err.code, 'INVALID_ARGUMENT', path);
      assert.equal(err.details?.path, path, err.message);
      assert.equal(err.details?.entry, entry, err.message);
      assert.ok(err.message.startsWith(`auth.json: ${path}: `), err.message);
      assert.ok(!err.message.includes(PLANNER) && !err.message.includes(ADMIN), 'the message never holds a token');
    }
  });

  test('fromFile: unreadable or non-JSON files are INVALID_ARGUMENT', () => {
    const tmp = tempDir();
    try {
      assert.equal(refusal(() => Auth.fromFile(join(tmp.dir, 'missing.json'))).code, 'INVALID_ARGUMENT');
      writeFileSync(join(tmp.dir, 'bad.json'), '{ tokens: ');
      assert.equal(refusal(() => Auth.fromFile(join(tmp.dir, 'bad.json'))).code, 'INVALID_ARGUMENT');
      writeFileSync(join(tmp.dir, 'ok.json'), JSON.stringify({ tokens: [{ token: PLANNER, roles: ['planner'] }] }));
      assert.ok(Auth.fromFile(join(tmp.dir, 'ok.json')).verify(PLANNER));
    } finally {
      tmp.cleanup();
    }
  });

  test('default deny: a route missing from the table is refused even to admin (open mode excepted)', async () => {
    for (const [auth, status] of [[Auth.fromConfig({ tokens: [{ token: ADMIN, roles: ['admin'] }] }), 403], [Auth.open(), 200]] as const) {
      const app = Fastify();
      installAccess(app, auth);
      app.get('/unlisted', async () => ({ ok: true }));
      await app.ready();
      const res = await app.inject({ url: '/unlisted', headers: { authorization: `Bearer ${ADMIN}` } });
      assert.equal(res.statusCode, status, res.body);
      assert.deepEqual(registeredRoutes(app), ['GET /unlisted']);
      await app.close();
    }
  });

  test('ensureLocalTokens writes a 0600 file with an admin and a node token, then reuses it', () => {
    const tmp = tempDir();
    try {
      const path = join(tmp.dir, 'data', 'auth.json');
      const first = ensureLocalTokens(path);
      assert.equal(first.created, true);
      assert.equal(statSync(path).mode & 0o777, 0o600);
      assert.match(first.admin, /^[A-Za-z0-9_-]{43}$/);
      assert.notEqual(first.admin, first.join);
      assert.ok(Auth.has(first.auth.verify(first.admin), 'admin'));
      const join_ = first.auth.verify(first.join);
      assert.ok(Auth.has(join_, 'node') && !Auth.has(join_, 'planner'));
      const again = ensureLocalTokens(path);
      assert.equal(again.created, false);
      assert.equal(again.admin, first.admin);
      assert.equal(again.join, first.join);
      const other = join(tmp.dir, 'digests.json');
      writeFileSync(other, JSON.stringify({ tokens: [{ sha256: sha(ADMIN), roles: ['admin'] }] }));
      assert.equal(refusal(() => ensureLocalTokens(other)).code, 'INVALID_ARGUMENT');
      assert.ok(readFileSync(other, 'utf8').includes(sha(ADMIN)), 'a file without plaintext tokens is left alone');
    } finally {
      tmp.cleanup();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Every route over real HTTP, under a token file: no token, the wrong role, another tenant, the right role.

const T = {
  admin: 'tok-admin-aaaaaaaaaaaaaaaa',
  planner: 'tok-planner-bbbbbbbbbbbbbb',
  validator: 'tok-validator-cccccccccccc',
  refiner: 'tok-refiner-dddddddddddddd', // held as a sha256 digest only
  evolver: 'tok-evolver-eeeeeeeeeeeeee',
  allocator: 'tok-allocator-ffffffffffff',
  node: 'tok-node-gggggggggggggggggg',
  acmePlanner: 'tok-acme-planner-hhhhhhhhh',
  acmeValidator: 'tok-acme-validator-iiiiii',
  acmeAllocator: 'tok-acme-allocator-jjjjjj',
  acmeEvolver: 'tok-acme-evolver-kkkkkkkkk',
  acmeAdmin: 'tok-acme-admin-oooooooooooo',
  betaPlanner: 'tok-beta-planner-lllllllll',
  betaValidator: 'tok-beta-validator-mmmmmm',
  betaAllocator: 'tok-beta-allocator-nnnnnn',
} as const;
const ALL_TOKENS = Object.values(T);

const CONFIG: AuthFileConfig = {
  tokens: [
    { token: T.admin, roles: ['admin'] },
    { token: T.planner, roles: ['planner'] },
    { token: T.validator, roles: ['validator'] },
    { sha256: sha(T.refiner), roles: ['refiner'] },
    { token: T.evolver, roles: ['evolver'] },
    { token: T.allocator, roles: ['allocator'] },
    { token: T.node, roles: ['node'] },
    { token: T.acmePlanner, roles: ['planner'], tenant: 'acme' },
    { token: T.acmeValidator, roles: ['validator'], tenant: 'acme' },
    { token: T.acmeAllocator, roles: ['allocator'], tenant: 'acme' },
    { token: T.acmeEvolver, roles: ['evolver'], tenant: 'acme' },
    { token: T.acmeAdmin, roles: ['admin'], tenant: 'acme' },
    { token: T.betaPlanner, roles: ['planner'], tenant: 'beta' },
    { token: T.betaValidator, roles: ['validator'], tenant: 'beta' },
    { token: T.betaAllocator, roles: ['allocator'], tenant: 'beta' },
  ],
};

/** A token holding exactly `role`, bound to no tenant. */
const TOKEN_OF: Record<Exclude<Role, 'admin'>, string> = {
  planner: T.planner,
  validator: T.validator,
  refiner: T.refiner,
  evolver: T.evolver,
  allocator: T.allocator,
  node: T.node,
};

interface Fixture {
  /** A cancelled (so ended) task of tenant acme. */
  acmeTask: string;
  /** A cancelled train task of tenant acme that left a checkpoint. */
  acmeTrain: string;
  helloHash: string;
  hello: Uint8Array<ArrayBuffer>;
}

interface Sample {
  path: string;
  method?: string;
  json?: unknown;
  body?: BodyInit;
  headers?: Record<string, string>;
}

/**
 * How a tenant-bound token of another tenant fares on the route:
 * 'task' → 404 TASK_NOT_FOUND (as a missing task); 'shared' → 403 for any tenant-bound token;
 * 'none' → the route holds no tenant's data (checked separately where it filters).
 */
type TenantRule = 'task' | 'shared' | 'none';

/** One sample request per route; a route registered without one fails the walk below. */
const SAMPLES: Record<string, { sample: (f: Fixture) => Sample; tenant: TenantRule }> = {
  'GET /healthz': { sample: () => ({ path: '/healthz' }), tenant: 'none' },
  'GET /readyz': { sample: () => ({ path: '/readyz' }), tenant: 'none' },
  'GET /openapi.json': { sample: () => ({ path: '/openapi.json' }), tenant: 'none' },
  'GET /docs': { sample: () => ({ path: '/docs' }), tenant: 'none' },
  'GET /*': { sample: () => ({ path: '/index.html' }), tenant: 'none' },
  'GET /ort/*': { sample: () => ({ path: '/ort/ort.wasm.min.mjs' }), tenant: 'none' },
  'GET /v1/modules/:sha256': { sample: (f) => ({ path: `/v1/modules/${f.helloHash}` }), tenant: 'none' },
  'GET /v1/models/:name/manifest': { sample: () => ({ path: '/v1/models/tiny/manifest' }), tenant: 'none' },
  'GET /models/:name/*': { sample: () => ({ path: '/models/tiny/config.json' }), tenant: 'none' },
  'GET /v1/nodes/ws': { sample: () => ({ path: '/v1/nodes/ws' }), tenant: 'none' }, // over a socket, below
  'POST /v1/tasks': { sample: () => ({ path: '/v1/tasks', method: 'POST', json: { kind: 'agent', payload: { agent: 'hello', input: {} } } }), tenant: 'none' },
  'GET /v1/tasks': { sample: () => ({ path: '/v1/tasks' }), tenant: 'none' },
  'GET /v1/tasks/:id': { sample: (f) => ({ path: `/v1/tasks/${f.acmeTask}` }), tenant: 'task' },
  'GET /v1/tasks/:id/checkpoint': { sample: (f) => ({ path: `/v1/tasks/${f.acmeTrain}/checkpoint` }), tenant: 'task' },
  'GET /v1/tasks/:id/wait': { sample: (f) => ({ path: `/v1/tasks/${f.acmeTask}/wait?timeoutMs=0` }), tenant: 'task' },
  'GET /v1/tasks/:id/events': { sample: (f) => ({ path: `/v1/tasks/${f.acmeTask}/events` }), tenant: 'task' },
  'POST /v1/tasks/:id/cancel': { sample: (f) => ({ path: `/v1/tasks/${f.acmeTask}/cancel`, method: 'POST', json: {} }), tenant: 'task' },
  'POST /v1/tasks/:id/verdict': { sample: (f) => ({ path: `/v1/tasks/${f.acmeTask}/verdict`, method: 'POST', json: { verdict: 'pass' } }), tenant: 'task' },
  'GET /v1/models': { sample: () => ({ path: '/v1/models' }), tenant: 'none' },
  'GET /v1/models/:name': { sample: () => ({ path: '/v1/models/tiny' }), tenant: 'none' },
  'POST /v1/chat/completions': {
    sample: () => ({ path: '/v1/chat/completions', method: 'POST', json: { model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] } }),
    tenant: 'none',
  },
  'POST /v1/completions': { sample: () => ({ path: '/v1/completions', method: 'POST', json: { model: 'no-such-model', prompt: 'hi' } }), tenant: 'none' },
  'GET /metrics': { sample: () => ({ path: '/metrics' }), tenant: 'none' },
  'GET /v1/kpis': { sample: () => ({ path: '/v1/kpis' }), tenant: 'none' },
  'GET /v1/maintenance': { sample: () => ({ path: '/v1/maintenance' }), tenant: 'none' },
  'PUT /v1/maintenance': { sample: () => ({ path: '/v1/maintenance', method: 'PUT', json: { on: false } }), tenant: 'shared' },
  'GET /v1/nodes': { sample: () => ({ path: '/v1/nodes' }), tenant: 'none' },
  'POST /v1/nodes/:id/drain': { sample: () => ({ path: `/v1/nodes/${UNKNOWN_NODE}/drain`, method: 'POST', json: {} }), tenant: 'shared' },
  'PUT /v1/nodes/:id/caps': { sample: () => ({ path: `/v1/nodes/${UNKNOWN_NODE}/caps`, method: 'PUT', json: { maxLeases: 2 } }), tenant: 'shared' },
  'GET /v1/pool': { sample: () => ({ path: '/v1/pool' }), tenant: 'none' },
  'GET /v1/whoami': { sample: () => ({ path: '/v1/whoami' }), tenant: 'none' },
  'PUT /v1/agents/:name/versions/:version': {
    sample: (f) => ({ path: '/v1/agents/hello/versions/1.0.0', method: 'PUT', body: f.hello, headers: { 'content-type': 'application/wasm' } }),
    tenant: 'shared',
  },
  'GET /v1/agents': { sample: () => ({ path: '/v1/agents' }), tenant: 'none' },
  'GET /v1/agents/:name': { sample: () => ({ path: '/v1/agents/hello' }), tenant: 'none' },
  'PUT /v1/adapters/:base/:name': {
    sample: () => ({
      path: '/v1/adapters/tiny/style',
      method: 'PUT',
      body: new Uint8Array(16),
      headers: { 'content-type': 'application/octet-stream', 'x-adapter-config': '{"peft_type":"LORA"}' },
    }),
    tenant: 'shared',
  },
  'POST /v1/adapters/:base/:name/merge': { sample: () => ({ path: '/v1/adapters/tiny/style/merge', method: 'POST', json: {} }), tenant: 'shared' },
  'GET /v1/adapters': { sample: () => ({ path: '/v1/adapters' }), tenant: 'none' },
  'GET /v1/adapters/:base/:name': { sample: () => ({ path: '/v1/adapters/tiny/style' }), tenant: 'none' },
  'GET /v1/adapters/:base/:name/:file': { sample: () => ({ path: '/v1/adapters/tiny/style@1/adapter_config.json' }), tenant: 'none' },
  'POST /v1/datasets': {
    sample: () => ({ path: '/v1/datasets', method: 'POST', body: '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}\n', headers: { 'content-type': 'application/x-ndjson' } }),
    tenant: 'none',
  },
  'GET /v1/datasets': { sample: () => ({ path: '/v1/datasets' }), tenant: 'none' },
  'GET /v1/datasets/:sha256': { sample: () => ({ path: `/v1/datasets/${'0'.repeat(64)}` }), tenant: 'none' },
  'GET /v1/datasets/:sha256/content': { sample: () => ({ path: `/v1/datasets/${'0'.repeat(64)}/content` }), tenant: 'none' },
  'POST /v1/blobs': { sample: () => ({ path: '/v1/blobs', method: 'POST', body: new Uint8Array(16), headers: { 'content-type': 'application/octet-stream' } }), tenant: 'none' },
  'GET /v1/blobs': { sample: () => ({ path: '/v1/blobs' }), tenant: 'none' },
  'GET /v1/blobs/:sha256': { sample: () => ({ path: `/v1/blobs/${'0'.repeat(64)}` }), tenant: 'none' },
  'PUT /v1/quotas/:tenant': { sample: () => ({ path: '/v1/quotas/acme', method: 'PUT', json: { maxQueued: 1000 } }), tenant: 'none' },
  'GET /v1/quotas': { sample: () => ({ path: '/v1/quotas' }), tenant: 'none' },
};
const UNKNOWN_NODE = '00000000-0000-4000-8000-000000000000';

describe('every route under --auth, over real HTTP', () => {
  const tmp = tempDir();
  const log: string[] = [];
  let c: Coordinator;
  let f: Fixture;
  let routes: readonly string[];

  const call = async (s: Sample, token: string | null): Promise<ApiAnswer> => {
    const headers: Record<string, string> = { ...s.headers };
    if (token !== null) headers.authorization = `Bearer ${token}`;
    const init: RequestInit & { json?: unknown } = { method: s.method ?? 'GET', headers };
    if (s.json !== undefined) init.json = s.json;
    if (s.body !== undefined) init.body = s.body;
    return apiClient(c.url)(s.path, init);
  };
  const code = (a: ApiAnswer): string | undefined => (typeof a.body === 'object' ? (a.body?.error?.code as string | undefined)?.toUpperCase() : undefined);

  before(async () => {
    mkdirSync(join(tmp.dir, 'dist'));
    writeFileSync(join(tmp.dir, 'dist', 'index.html'), '<!doctype html><title>node</title>');
    mkdirSync(join(tmp.dir, 'models', 'tiny', 'onnx'), { recursive: true });
    writeFileSync(join(tmp.dir, 'models', 'tiny', 'config.json'), '{"model_type":"llama"}');
    writeFileSync(join(tmp.dir, 'models', 'tiny', 'onnx', 'model.onnx'), 'abc');
    c = await createCoordinator({
      dbPath: ':memory:',
      staticDir: join(tmp.dir, 'dist'),
      modelsDir: join(tmp.dir, 'models'),
      auth: Auth.fromConfig(CONFIG),
      logger: { level: 'debug', stream: { write: (line) => void log.push(line) } },
    });
    routes = registeredRoutes(c.app);
    const hello = await wat(HELLO_WAT);
    const put = await call({ path: '/v1/agents/hello/versions/1.0.0', method: 'PUT', body: hello, headers: { 'content-type': 'application/wasm' } }, T.evolver);
    assert.equal(put.status, 201, JSON.stringify(put.body));
    const sub = await call({ path: '/v1/tasks', method: 'POST', json: { kind: 'agent', payload: { agent: 'hello', input: {} } } }, T.acmePlanner);
    assert.equal(sub.status, 202, JSON.stringify(sub.body));
    const cancel = await call({ path: `/v1/tasks/${sub.body.id}/cancel`, method: 'POST', json: {} }, T.acmePlanner);
    assert.equal(cancel.body.state, 'cancelled');
    const train = await call(
      {
        path: '/v1/tasks',
        method: 'POST',
        json: { kind: 'train', payload: { model: 'tiny-llama', adapterName: 'auth', dataset: '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}', lora: { rank: 2, alpha: 4, targetModules: ['q_proj'] }, steps: 2 } },
      },
      T.acmePlanner,
    );
    assert.equal(train.status, 202, JSON.stringify(train.body));
    assert.equal((await call({ path: `/v1/tasks/${train.body.id}/cancel`, method: 'POST', json: {} }, T.acmePlanner)).body.state, 'cancelled');
    // As its node would have left one (a cancelled run keeps its last checkpoint).
    c.journal.putCheckpoint(train.body.id, 1, 'c'.repeat(64), new Uint8Array([1, 2, 3]));
    f = { acmeTask: sub.body.id as string, acmeTrain: train.body.id as string, helloHash: put.body.sha256 as string, hello };
  });

  after(async () => {
    await c.close();
    tmp.cleanup();
  });

  test('every registered route has an access rule and a sample here', () => {
    assert.ok(routes.length >= 25, `only ${routes.length} routes collected`);
    for (const r of routes) {
      assert.ok(ACCESS[r], `${r} has no entry in server/access.ts ACCESS (default deny refuses it to everyone)`);
      assert.ok(SAMPLES[r], `${r} has no sample request in auth.test.ts`);
    }
    for (const r of Object.keys(ACCESS)) assert.ok(routes.includes(r), `ACCESS lists ${r}, which is not a route`);
  });

  test('no token → 401 UNAUTHORIZED with www-authenticate: Bearer; an unknown token too; open routes answer', async () => {
    for (const r of routes) {
      const access = ACCESS[r]!;
      if ('hub' in access) continue; // the socket, below
      const s = SAMPLES[r]!.sample(f);
      for (const token of [null, 'not-a-known-token-000000']) {
        const a = await call(s, token);
        if ('open' in access) {
          assert.ok(a.status !== 401 && a.status !== 403, `${r} is open but answered ${a.status} ${JSON.stringify(a.body)}`);
          assert.ok(a.status < 500, `${r}: ${a.status}`);
        } else {
          assert.equal(a.status, 401, `${r} without a good token: ${a.status} ${JSON.stringify(a.body)}`);
          assert.equal(code(a), 'UNAUTHORIZED', r);
          assert.equal(a.headers.get('www-authenticate'), 'Bearer', r);
        }
      }
    }
  });

  test('the wrong role → 403 FORBIDDEN; the right role (and admin) pass the gate', async () => {
    for (const r of routes) {
      const access = ACCESS[r]!;
      if (!('roles' in access)) continue;
      const s = SAMPLES[r]!.sample(f);
      const wrong = ROLES.filter((role): role is Exclude<Role, 'admin'> => role !== 'admin' && !access.roles.includes(role));
      assert.ok(wrong.length > 0, r);
      for (const role of wrong) {
        const a = await call(s, TOKEN_OF[role]);
        assert.equal(a.status, 403, `${r} with role ${role}: ${a.status} ${JSON.stringify(a.body)}`);
        assert.equal(code(a), 'FORBIDDEN', r);
      }
      for (const role of access.roles) {
        const a = await call(s, role === 'admin' ? T.admin : TOKEN_OF[role]);
        assert.ok(a.status !== 401 && a.status !== 403 && a.status < 500, `${r} with role ${role}: ${a.status} ${JSON.stringify(a.body)}`);
      }
      const a = await call(s, T.admin);
      assert.ok(a.status !== 401 && a.status !== 403 && a.status < 500, `${r} as admin: ${a.status} ${JSON.stringify(a.body)}`);
    }
  });

  test("another tenant's token: its tasks are not found, shared routes are refused, its own tenant works", async () => {
    const ofTenant = (role: Role, tenant: 'acme' | 'beta'): string => {
      const key = `${tenant}${role[0]!.toUpperCase()}${role.slice(1)}` as keyof typeof T;
      assert.ok(T[key], `no ${tenant} ${role} token`);
      return T[key];
    };
    for (const r of routes) {
      const access = ACCESS[r]!;
      const rule = SAMPLES[r]!.tenant;
      if (!('roles' in access) || rule === 'none') continue;
      const role = access.roles[0]!;
      const s = SAMPLES[r]!.sample(f);
      if (rule === 'task') {
        const other = await call(s, ofTenant(role, 'beta'));
        assert.equal(other.status, 404, `${r} by beta: ${other.status} ${JSON.stringify(other.body)}`);
        assert.equal(code(other), 'TASK_NOT_FOUND', r);
        // The same answer as for a task that does not exist.
        const missing = await call({ ...s, path: s.path.replace(f.acmeTask, '00000000-0000-4000-8000-00000000abcd').replace(f.acmeTrain, '00000000-0000-4000-8000-00000000abcd') }, ofTenant(role, 'beta'));
        assert.equal(missing.status, 404, r);
        assert.deepEqual(Object.keys(other.body.error).sort(), Object.keys(missing.body.error).sort(), r);
        const own = await call(s, ofTenant(role, 'acme'));
        assert.ok(own.status < 300, `${r} by acme: ${own.status} ${JSON.stringify(own.body)}`);
      } else {
        const a = await call(s, ofTenant(role, 'acme'));
        assert.equal(a.status, 403, `${r} by a tenant-bound ${role}: ${a.status} ${JSON.stringify(a.body)}`);
        assert.equal(code(a), 'FORBIDDEN', r);
      }
    }
  });

  test('submit: without tenant takes the token’s, another tenant is FORBIDDEN; the list is the token’s tenant only', async () => {
    const spec = { kind: 'agent', payload: { agent: 'hello', input: { n: 2 } } };
    const mine = await call({ path: '/v1/tasks', method: 'POST', json: spec }, T.betaPlanner);
    assert.equal(mine.status, 202);
    assert.equal(c.journal.getTask(mine.body.id)!.tenant, 'beta');
    const same = await call({ path: '/v1/tasks', method: 'POST', json: { ...spec, tenant: 'beta' } }, T.betaPlanner);
    assert.equal(same.status, 202);
    const theirs = await call({ path: '/v1/tasks', method: 'POST', json: { ...spec, tenant: 'acme' } }, T.betaPlanner);
    assert.equal(theirs.status, 403);
    assert.equal(code(theirs), 'FORBIDDEN');
    const batch = await call({ path: '/v1/tasks', method: 'POST', json: { tasks: [spec, { ...spec, tenant: 'acme' }] } }, T.betaPlanner);
    assert.equal(batch.status, 403, 'one foreign spec refuses the batch');
    assert.equal(batch.body.error.details.path, '/tasks/1/tenant');
    const any = await call({ path: '/v1/tasks', method: 'POST', json: { ...spec, tenant: 'acme' } }, T.planner);
    assert.equal(any.status, 202, 'a token bound to no tenant submits for any');

    const listed = await call({ path: '/v1/tasks?limit=1000' }, T.betaPlanner);
    assert.equal(listed.status, 200);
    assert.ok(listed.body.tasks.length >= 2);
    assert.ok(listed.body.tasks.every((t: { tenant: string }) => t.tenant === 'beta'), JSON.stringify(listed.body.tasks.map((t: { tenant: string }) => t.tenant)));
    const asked = await call({ path: '/v1/tasks?tenant=acme' }, T.betaPlanner);
    assert.equal(asked.status, 403);
    const all = await call({ path: '/v1/tasks?limit=1000' }, T.planner);
    assert.ok(all.body.tasks.some((t: { tenant: string }) => t.tenant === 'acme') && all.body.tasks.some((t: { tenant: string }) => t.tenant === 'beta'));
  });

  test('idempotency keys are per tenant: the same key in two tenants makes two tasks and shows neither the other', async () => {
    const spec = (n: number) => ({ kind: 'agent', idempotencyKey: 'order-7', payload: { agent: 'hello', input: { n } } });
    const a = await call({ path: '/v1/tasks', method: 'POST', json: spec(1) }, T.acmePlanner);
    const b = await call({ path: '/v1/tasks', method: 'POST', json: spec(2) }, T.betaPlanner);
    assert.equal(a.status, 202, JSON.stringify(a.body));
    assert.equal(b.status, 202, 'another tenant with the same key and another spec is no conflict');
    assert.notEqual(a.body.id, b.body.id);
    const again = await call({ path: '/v1/tasks', method: 'POST', json: spec(2) }, T.betaPlanner);
    assert.equal(again.body.id, b.body.id, 'the same tenant, key and spec give back its task');
    const conflict = await call({ path: '/v1/tasks', method: 'POST', json: spec(3) }, T.betaPlanner);
    assert.equal(code(conflict), 'IDEMPOTENCY_CONFLICT');
    assert.equal(conflict.body.error.details.existingId, b.body.id, 'the conflict names only its own tenant’s task');
    const rec = await call({ path: `/v1/tasks/${b.body.id}` }, T.betaPlanner);
    assert.equal(rec.body.idempotencyKey, 'order-7', 'the record shows the key as sent');
    const untenanted = await call({ path: '/v1/tasks', method: 'POST', json: spec(4) }, T.planner);
    assert.equal(untenanted.status, 202);
    assert.ok(![a.body.id, b.body.id].includes(untenanted.body.id));
    const control = await call({ path: '/v1/tasks', method: 'POST', json: { ...spec(5), idempotencyKey: '\u0001acme\u0001order-7' } }, T.planner);
    assert.equal(code(control), 'SCHEMA_VIOLATION', 'keys with control characters are refused');
  });

  test('quotas: a tenant-bound allocator sets and sees only its own tenant', async () => {
    assert.equal((await call({ path: '/v1/quotas/beta', method: 'PUT', json: { maxQueued: 50 } }, T.betaAllocator)).status, 200);
    const foreign = await call({ path: '/v1/quotas/acme', method: 'PUT', json: { maxQueued: 0 } }, T.betaAllocator);
    assert.equal(foreign.status, 403);
    assert.equal(code(foreign), 'FORBIDDEN');
    assert.equal((await call({ path: '/v1/quotas/acme', method: 'PUT', json: { maxQueued: 1000 } }, T.allocator)).status, 200);
    const seen = await call({ path: '/v1/quotas' }, T.betaAllocator);
    assert.deepEqual(Object.keys(seen.body.quotas), ['beta']);
    const every = await call({ path: '/v1/quotas' }, T.allocator);
    assert.deepEqual(Object.keys(every.body.quotas).sort(), ['acme', 'beta']);
  });

  test('OpenAI routes: the tasks belong to the token’s tenant', async () => {
    const ctl = new AbortController();
    const res = await fetch(`${c.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${T.betaPlanner}` },
      body: JSON.stringify({ model: 'tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, stream: true }),
      signal: ctl.signal,
    });
    assert.equal(res.status, 200);
    const task = await until(() => c.journal.listTasks({ limit: 1000 }).find((t) => t.kind === 'generate'), 5_000, 'generate task journaled');
    assert.equal(task.tenant, 'beta');
    ctl.abort();
    await until(() => c.journal.getTask(task.id)?.state === 'cancelled', 5_000, 'task cancelled when the client left');
    const denied = await call({ path: `/v1/tasks/${task.id}` }, T.acmePlanner);
    assert.equal(denied.status, 404);
  });

  test('the node socket: a node token joins; none is UNAUTHORIZED, a token without node FORBIDDEN', async () => {
    const refusedWith = async (token: string | null): Promise<string> => {
      const n = await TestNode.open(c.url);
      n.send({ type: 'hello', protocol: 1, name: 'x', ...(token ? { token } : {}), capabilities: { kinds: ['agent'], maxConcurrent: 1, webgpu: null, models: [], adapters: [] } });
      const err = await n.next('error');
      await n.closed;
      return err.error.code;
    };
    assert.equal(await refusedWith(null), 'UNAUTHORIZED');
    assert.equal(await refusedWith('not-a-known-token-000000'), 'UNAUTHORIZED');
    assert.equal(await refusedWith(T.planner), 'FORBIDDEN', 'a known token without the node role');
    const n = await TestNode.connect(c.url, { token: T.node });
    assert.ok(n.id);
    await n.close();
    const viaHeader = await TestNode.connect(c.url, { headers: { authorization: `Bearer ${T.admin}` } });
    assert.ok(viaHeader.id);
    await viaHeader.close();
  });

  test('no token appears in the fastify log or the journal; the page link’s ?token= is redacted', async () => {
    assert.equal((await call({ path: `/index.html?token=${T.node}` }, null)).status, 200);
    assert.ok(log.length > 50, `the log holds ${log.length} lines`);
    const text = log.join('');
    assert.ok(text.includes('[redacted]'), 'the ?token= query is logged redacted');
    for (const t of ALL_TOKENS) assert.ok(!text.includes(t), `token ${t.slice(0, 12)}… in the log`);
    const db = c.journal.db;
    const tables = db.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'").all();
    let rows = 0;
    for (const { name } of tables) {
      for (const row of db.prepare(`SELECT * FROM "${name}"`).all()) {
        rows++;
        const dump = JSON.stringify(row, (_k, v: unknown) => (Buffer.isBuffer(v) ? v.toString('latin1') : v));
        for (const t of ALL_TOKENS) assert.ok(!dump.includes(t), `token ${t.slice(0, 12)}… in journal table ${name}`);
      }
    }
    assert.ok(rows > 10, `${rows} journal rows read`);
  });
});
