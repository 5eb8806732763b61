/**
 * The OpenAPI document against the coordinator it describes: every registered route is in /openapi.json
 * and in docs/api.md, no documented path is unregistered, the document is structurally OpenAPI 3.1 with
 * every $ref resolving, the examples marked in docs/api.md (and the document's own) validate against the
 * document's schemas, and live answers of a real coordinator validate against the response schemas.
 *
 * Schemas are compiled with Ajv's JSON Schema 2020-12 dialect (OpenAPI 3.1's), strict: Ajv is fastify's
 * own validator (a dependency of fastify through @fastify/ajv-compiler), so no package is added for it.
 */
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { ACCESS, registeredRoutes } from './access';
import { createCoordinator, type Coordinator } from './index';
import { OPERATIONS, openApiPath } from './openapi';
import { HELLO_WAT, TestNode, apiClient, tempDir, wat, type ApiAnswer } from './testing';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = Record<string, any>;

const DOCS = readFileSync(new URL('../docs/api.md', import.meta.url), 'utf8');

/** `GET /v1/tasks/:id` → `get /v1/tasks/{id}`: how a registered route appears in the document. */
const docKey = (route: string): string => {
  const [method, url] = route.split(' ') as [string, string];
  return `${method.toLowerCase()} ${openApiPath(url)}`;
};

/** A JSON pointer (`#/components/schemas/X`) in `doc`, or undefined. */
function resolve(doc: Json, ref: string): Json | undefined {
  if (!ref.startsWith('#/')) return undefined;
  let node: Json | undefined = doc;
  for (const raw of ref.slice(2).split('/')) {
    const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    if (node === null || typeof node !== 'object' || Array.isArray(node)) return undefined;
    node = (node as Record<string, Json>)[key];
  }
  return node;
}

function refsIn(node: Json, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const n of node) refsIn(n, out);
  else if (node !== null && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') out.push(v);
      else refsIn(v, out);
    }
  }
  return out;
}

/** The examples in docs/api.md: `<!-- example: METHOD /path request|response [status] -->` then a ```json block. */
function docExamples(): { route: string; part: 'request' | 'response'; status: string | null; value: unknown; line: number }[] {
  const out: { route: string; part: 'request' | 'response'; status: string | null; value: unknown; line: number }[] = [];
  const re = /<!-- example: ([A-Z]+ \S+) (request|response)(?: (\d{3}))? -->\s*\n```json\n([\s\S]*?)\n```/g;
  for (const m of DOCS.matchAll(re)) {
    const line = DOCS.slice(0, m.index).split('\n').length;
    let value: unknown;
    try {
      value = JSON.parse(m[4]!);
    } catch (err) {
      assert.fail(`docs/api.md line ${line}: the example for ${m[1]} ${m[2]} is not JSON (${String(err)})`);
    }
    out.push({ route: m[1]!, part: m[2] as 'request' | 'response', status: m[3] ?? null, value, line });
  }
  return out;
}

describe('OpenAPI document', () => {
  const tmp = tempDir();
  let c: Coordinator;
  let doc: Obj;
  let routes: readonly string[];
  let ajv: Ajv2020;
  const api = (): ReturnType<typeof apiClient> => apiClient(c.url);

  /** The document's operation for a route key (`GET /v1/tasks/:id`). */
  const operation = (route: string): Obj => {
    const [method, url] = route.split(' ') as [string, string];
    const op = doc.paths[openApiPath(url)]?.[method.toLowerCase()];
    assert.ok(op, `${route} is not in /openapi.json`);
    return op;
  };
  const BASE = 'https://coordinator.invalid/openapi.json';
  /** The document's refs (`#/components/schemas/X`) as refs into the components schema Ajv holds. */
  const rebase = (schema: Json, to: string): Json => JSON.parse(JSON.stringify(schema).replace(/"#\/components\/schemas\//g, `"${to}#/$defs/`)) as Json;
  const compiled = new Map<string, ReturnType<Ajv2020['compile']>>();
  const compile = (schema: Json): ReturnType<Ajv2020['compile']> => {
    const key = JSON.stringify(schema);
    let fn = compiled.get(key);
    if (!fn) {
      fn = ajv.compile(rebase(schema, BASE) as object);
      compiled.set(key, fn);
    }
    return fn;
  };
  const checkWith = (schema: Json, value: unknown, what: string): void => {
    const fn = compile(schema);
    assert.ok(fn(value), `${what}: ${ajv.errorsText(fn.errors, { separator: '; ' })}\n${JSON.stringify(value).slice(0, 800)}`);
  };

  before(async () => {
    mkdirSync(join(tmp.dir, 'dist'));
    writeFileSync(join(tmp.dir, 'dist', 'index.html'), '<!doctype html><title>node</title>');
    mkdirSync(join(tmp.dir, 'models', 'tiny'), { recursive: true });
    writeFileSync(join(tmp.dir, 'models', 'tiny', 'config.json'), '{"model_type":"llama"}');
    c = await createCoordinator({ dbPath: ':memory:', staticDir: join(tmp.dir, 'dist'), modelsDir: join(tmp.dir, 'models') });
    routes = registeredRoutes(c.app);
    const res = await api()('/openapi.json');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
    doc = res.body as Obj;
    // OpenAPI 3.1's dialect is JSON Schema 2020-12; strict, so a keyword Ajv does not know is an error.
    ajv = new Ajv2020({ strict: true, strictTypes: false, strictTuples: false, allErrors: true });
    ajv.addSchema({ $id: BASE, $defs: rebase(doc.components.schemas as Json, '') as object });
  });

  after(async () => {
    await c.close();
    tmp.cleanup();
  });

  test('every registered route is in /openapi.json, and every path there is a registered route', () => {
    assert.ok(routes.length >= 30, `only ${routes.length} routes collected`);
    const registered = new Set(routes.map(docKey));
    const documented = new Set<string>();
    for (const [path, item] of Object.entries(doc.paths as Obj)) for (const m of Object.keys(item)) documented.add(`${m} ${path}`);
    const missing = routes.filter((r) => !documented.has(docKey(r)));
    assert.deepEqual(missing, [], `registered but not in /openapi.json (add them to OPERATIONS in server/openapi.ts): ${missing.join(', ')}`);
    const extra = [...documented].filter((k) => !registered.has(k));
    assert.deepEqual(extra, [], `in /openapi.json but not registered: ${extra.join(', ')}`);
    assert.deepEqual(Object.keys(OPERATIONS).filter((k) => !routes.includes(k)), [], 'OPERATIONS keys are route keys');
  });

  test('every registered route is named in docs/api.md as `METHOD /path` (a query may follow inside the backticks)', () => {
    const esc = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    const missing = routes.filter((r) => !new RegExp('`' + esc(r) + '(\\?[^`]*)?`').test(DOCS));
    assert.deepEqual(missing, [], `routes docs/api.md does not name (write each as \`METHOD /path\`): ${missing.join(', ')}`);
  });

  test('the document is OpenAPI 3.1: info, paths, responses on every operation, unique operation ids, every $ref resolves, every schema compiles', () => {
    assert.match(doc.openapi, /^3\.1\.\d+$/);
    assert.equal(typeof doc.info?.title, 'string');
    assert.equal(typeof doc.info?.version, 'string');
    assert.equal(doc.components?.securitySchemes?.bearer?.scheme, 'bearer');
    const ids = new Set<string>();
    const methods = new Set(['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace']);
    for (const [path, item] of Object.entries(doc.paths as Obj)) {
      assert.ok(path.startsWith('/'), path);
      const params = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
      for (const [m, op] of Object.entries(item as Obj)) {
        assert.ok(methods.has(m), `${m} ${path}`);
        assert.ok(Object.keys(op.responses ?? {}).length > 0, `${m} ${path} has no responses`);
        for (const [status, r] of Object.entries(op.responses as Obj)) {
          assert.match(status, /^[1-5]\d\d$/, `${m} ${path}`);
          assert.equal(typeof r.description, 'string', `${m} ${path} ${status}`);
        }
        assert.ok(!ids.has(op.operationId), `operationId ${op.operationId} twice`);
        ids.add(op.operationId);
        const inPath = (op.parameters as Obj[]).filter((p) => p.in === 'path').map((p) => p.name);
        assert.deepEqual(inPath.sort(), [...params].sort(), `${m} ${path}: path parameters`);
        assert.ok(Array.isArray(op.security), `${m} ${path}: security`);
        for (const s of op.security as Obj[]) for (const k of Object.keys(s)) assert.ok(doc.components.securitySchemes[k], k);
      }
    }
    const refs = refsIn(doc as Json);
    assert.ok(refs.length > 50, `${refs.length} refs`);
    for (const r of new Set(refs)) assert.ok(resolve(doc as Json, r) !== undefined, `$ref ${r} does not resolve`);
    for (const name of Object.keys(doc.components.schemas)) compile({ $ref: `#/components/schemas/${name}` });
  });

  test('security per operation is the ACCESS table’s roles; /openapi.json and /docs are open', async () => {
    for (const route of routes) {
      const access = ACCESS[route]!;
      const op = operation(route);
      if ('open' in access) assert.deepEqual(op.security, [], route);
      else if ('roles' in access) {
        assert.deepEqual(op.security, [{ bearer: [...access.roles] }], route);
        assert.deepEqual(op['x-roles'], [...access.roles], route);
        const shape = OPERATIONS[route]!.openAiErrors ? 'OpenAiError' : 'Error';
        assert.equal(op.responses['401']?.content?.['application/json']?.schema?.$ref, `#/components/schemas/${shape}`, route);
      }
    }
    assert.deepEqual(operation('GET /openapi.json').security, []);
    const page = await fetch(`${c.url}/docs`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /^text\/html/);
    assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
    const html = await page.text();
    assert.ok(!/<script/i.test(html), 'no scripts: the page works under its CSP');
    for (const route of routes) {
      const [method, url] = route.split(' ') as [string, string];
      assert.ok(html.includes(`${method}</span> <code>${openApiPath(url)}</code>`), `${route} on /docs`);
    }
    assert.ok(html.includes('id="schema-TaskSpec"') && html.includes('href="#schema-AgentPayload"'), 'schemas and links to them');
  });

  test('examples in docs/api.md validate against the document; every request body example is marked', () => {
    const examples = docExamples();
    assert.ok(examples.length >= 10, `${examples.length} marked examples`);
    for (const e of examples) {
      const op = operation(e.route);
      const at = `docs/api.md line ${e.line} (${e.route} ${e.part})`;
      if (e.part === 'request') {
        const schema = op.requestBody?.content?.['application/json']?.schema;
        assert.ok(schema, `${at}: the operation takes no JSON body`);
        checkWith(schema, e.value, at);
      } else {
        const status = e.status ?? Object.keys(op.responses).find((s) => s.startsWith('2'))!;
        const schema = op.responses[status]?.content?.['application/json']?.schema;
        assert.ok(schema, `${at}: no JSON response ${status}`);
        checkWith(schema, e.value, at);
      }
    }
    // Every ```json block right after a line naming a route with a body is marked (the auth.json file is not an operation).
    const unmarked = [...DOCS.matchAll(/(?<!-->\s*)\n```json\n/g)].map((m) => DOCS.slice(0, m.index).split('\n').length + 1);
    const allowed = [...DOCS.matchAll(/<!-- not an operation -->\s*\n```json\n/g)].map((m) => DOCS.slice(0, m.index! + m[0].indexOf('```')).split('\n').length);
    assert.deepEqual(unmarked.filter((l) => !allowed.includes(l)), [], 'JSON blocks in docs/api.md without an example marker (or <!-- not an operation -->)');
  });


  test("the document's own examples validate against their schemas", () => {
    let n = 0;
    for (const [path, item] of Object.entries(doc.paths as Obj)) {
      for (const [m, op] of Object.entries(item as Obj)) {
        const media = [
          ...Object.values((op.requestBody?.content ?? {}) as Obj),
          ...Object.values(op.responses as Obj).flatMap((r: Obj) => Object.values((r.content ?? {}) as Obj)),
        ] as Obj[];
        for (const md of media) {
          if (md.example === undefined) continue;
          checkWith(md.schema, md.example, `${m} ${path} example`);
          n++;
        }
      }
    }
    assert.ok(n >= 10, `${n} examples`);
  });

  test('live answers of a real coordinator validate against the response schemas', async () => {
    const call = api();
    const answers: [string, ApiAnswer][] = [];
    const run = async (route: string, path: string, init?: RequestInit & { json?: unknown }): Promise<ApiAnswer> => {
      const a = await call(path, init);
      answers.push([route, a]);
      return a;
    };
    const hello = await wat(HELLO_WAT);
    await run('PUT /v1/agents/:name/versions/:version', '/v1/agents/hello/versions/1.0.0', { method: 'PUT', body: hello, headers: { 'content-type': 'application/wasm' } });
    const node = await TestNode.connect(c.url, { name: 'doc-node' });
    try {
      const sub = await run('POST /v1/tasks', '/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello', input: { n: 1 } }, labels: { run: 'openapi' } } });
      await run('POST /v1/tasks', '/v1/tasks', { method: 'POST', json: { tasks: [{ kind: 'agent', payload: { agent: 'hello' } }] } });
      const id = sub.body.id as string;
      await run('GET /v1/tasks/:id', `/v1/tasks/${id}`);
      await run('GET /v1/tasks', '/v1/tasks?limit=5');
      await run('POST /v1/tasks/:id/cancel', `/v1/tasks/${id}/cancel`, { method: 'POST', json: { reason: 'docs' } });
      await run('GET /v1/tasks/:id/wait', `/v1/tasks/${id}/wait?timeoutMs=0`);
      await run('POST /v1/tasks/:id/verdict', `/v1/tasks/${id}/verdict`, { method: 'POST', json: { verdict: 'pass' } });
      await run('GET /v1/nodes', '/v1/nodes');
      await run('PUT /v1/nodes/:id/caps', `/v1/nodes/${node.id}/caps`, { method: 'PUT', json: { maxLeases: 4 } });
      await run('GET /v1/agents', '/v1/agents');
      await run('GET /v1/agents/:name', '/v1/agents/hello');
      await run('PUT /v1/quotas/:tenant', '/v1/quotas/acme', { method: 'PUT', json: { maxQueued: 10 } });
      await run('GET /v1/quotas', '/v1/quotas');
      await run('GET /healthz', '/healthz');
      await run('GET /readyz', '/readyz');
      await run('GET /v1/kpis', '/v1/kpis');
      await run('PUT /v1/maintenance', '/v1/maintenance', { method: 'PUT', json: { on: true, reason: 'docs' } });
      await run('GET /v1/maintenance', '/v1/maintenance');
      await run('GET /v1/pool', '/v1/pool');
      await run('GET /v1/whoami', '/v1/whoami');
      await run('GET /v1/models', '/v1/models');
      await run('GET /v1/models/:name', '/v1/models/tiny');
      await run('GET /v1/models/:name/manifest', '/v1/models/tiny/manifest');
      await run('GET /v1/adapters', '/v1/adapters');
      await run('POST /v1/datasets', '/v1/datasets', { method: 'POST', body: '{"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}]}\n', headers: { 'content-type': 'application/x-ndjson' } });
      await run('GET /v1/datasets', '/v1/datasets');
      await run('POST /v1/nodes/:id/drain', `/v1/nodes/${node.id}/drain`, { method: 'POST', json: { reason: 'docs' } });
      // Errors, in both shapes.
      await run('GET /v1/tasks/:id', '/v1/tasks/00000000-0000-4000-8000-000000000000');
      await run('GET /v1/tasks', '/v1/tasks?limit=0');
      await run('PUT /v1/nodes/:id/caps', `/v1/nodes/${node.id}/caps`, { method: 'PUT', json: { maxLeases: -1 } });
      await run('POST /v1/chat/completions', '/v1/chat/completions', { method: 'POST', json: { model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] } });
    } finally {
      await node.close();
    }
    for (const [route, a] of answers) {
      const r = operation(route).responses[String(a.status)];
      assert.ok(r, `${route} answered ${a.status}, which the document does not list: ${JSON.stringify(a.body).slice(0, 300)}`);
      const schema = r.content?.['application/json']?.schema;
      assert.ok(schema, `${route} ${a.status}: no JSON schema`);
      checkWith(schema, a.body, `${route} → ${a.status}`);
    }
    assert.ok(answers.some(([, a]) => a.status >= 400) && answers.some(([, a]) => a.status < 300));
  });
});
