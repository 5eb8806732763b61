/**
 * Security headers and cross-site refusal over real HTTP on 127.0.0.1: the page's CSP, nosniff and
 * no-referrer on every answer, CORS only on the public file routes, and state-changing requests from
 * another site (Origin, Sec-Fetch-Site) refused before their body is read.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { request, type IncomingHttpHeaders } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createCoordinator, type Coordinator } from './index';
import { API_CSP, PAGE_CSP } from './headers';
import { HELLO_WAT, tempDir, wat } from './testing';

const tmp = tempDir('headers-');
let c: Coordinator;
let port = 0;
let moduleHash = '';

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request with exactly these headers (node:http adds no Origin or Sec-Fetch-* of its own). */
function raw(method: string, path: string, headers: Record<string, string> = {}, body?: string | Uint8Array): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const json = { 'content-type': 'application/json' };
const task = JSON.stringify({ kind: 'agent', payload: { agent: 'hello' } });

before(async () => {
  mkdirSync(join(tmp.dir, 'dist', 'assets'), { recursive: true });
  writeFileSync(join(tmp.dir, 'dist', 'index.html'), '<!doctype html><title>node</title>');
  writeFileSync(join(tmp.dir, 'dist', 'assets', 'worker.js'), 'self.onmessage = () => {};');
  c = await createCoordinator({ dbPath: join(tmp.dir, 'c.db'), staticDir: join(tmp.dir, 'dist'), allowOrigins: ['http://page.example:8000'] });
  port = Number(new URL(c.url).port);
  const put = await raw('PUT', '/v1/agents/hello/versions/1', { 'content-type': 'application/wasm' }, await wat(HELLO_WAT));
  assert.equal(put.status, 201, put.body);
  moduleHash = (JSON.parse(put.body) as { sha256: string }).sha256;
});

after(async () => {
  await c.close();
  tmp.cleanup();
});

describe('security headers', () => {
  test('the page has the CSP (frame-ancestors none, wasm allowed, no eval) and framing is refused', async () => {
    const page = await raw('GET', '/');
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    assert.equal(page.headers['content-security-policy'], PAGE_CSP);
    assert.match(PAGE_CSP, /frame-ancestors 'none'/);
    assert.match(PAGE_CSP, /script-src 'self' 'wasm-unsafe-eval'(;|$)/);
    assert.doesNotMatch(PAGE_CSP, /'unsafe-eval'|script-src[^;]*'unsafe-inline'/);
    assert.equal(page.headers['x-frame-options'], 'DENY');
    assert.equal(page.headers['cross-origin-opener-policy'], 'same-origin');
    assert.equal(page.headers['cross-origin-embedder-policy'], 'require-corp');
  });

  test('every answer is nosniff and no-referrer; JSON answers cannot run anything; scripts keep their own policy', async () => {
    const answers = await Promise.all([
      raw('GET', '/'),
      raw('GET', '/healthz'),
      raw('GET', '/v1/tasks'),
      raw('GET', '/v1/nothing'),
      raw('GET', '/assets/worker.js'),
      raw('GET', `/v1/modules/${moduleHash}`),
      raw('POST', '/v1/tasks', json, '{"kind":'),
    ]);
    for (const a of answers) {
      assert.equal(a.headers['x-content-type-options'], 'nosniff', JSON.stringify(a.headers));
      assert.equal(a.headers['referrer-policy'], 'no-referrer');
    }
    const [, health, list, missing, script] = answers;
    for (const a of [health!, list!, missing!]) assert.equal(a.headers['content-security-policy'], API_CSP);
    assert.equal(missing!.status, 404);
    assert.match(String(script!.headers['content-type']), /^text\/javascript/);
    assert.equal(script!.headers['content-security-policy'], undefined, 'a worker script is not given the JSON policy');
  });

  test('CORS only on the public file routes, never with credentials', async () => {
    const module = await raw('GET', `/v1/modules/${moduleHash}`, { origin: 'http://elsewhere.example' });
    assert.equal(module.status, 200);
    assert.equal(module.headers['access-control-allow-origin'], '*');
    assert.equal(module.headers['access-control-allow-credentials'], undefined);
    for (const path of ['/v1/tasks', '/healthz', '/metrics', '/']) {
      const a = await raw('GET', path, { origin: 'http://elsewhere.example' });
      assert.equal(a.headers['access-control-allow-origin'], undefined, path);
    }
  });
});

describe('cross-site state-changing requests', () => {
  test('refused with CROSS_SITE_REFUSED when Origin is another site or the browser says cross-site', async () => {
    const own = `http://127.0.0.1:${port}`;
    const refused: Array<[string, string, Record<string, string>]> = [
      ['POST', '/v1/tasks', { ...json, origin: 'http://evil.example' }],
      ['POST', '/v1/tasks', { ...json, origin: `http://127.0.0.1:${port + 1}` }], // another port is another origin
      ['POST', '/v1/tasks', { ...json, origin: 'null' }],
      ['POST', '/v1/tasks', { ...json, 'sec-fetch-site': 'cross-site' }],
      ['POST', '/v1/tasks', { ...json, origin: own, 'sec-fetch-site': 'cross-site' }],
      // a form post: a "simple" request that skips CORS preflight
      ['POST', '/v1/tasks', { 'content-type': 'application/x-www-form-urlencoded', origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' }],
      ['POST', '/v1/tasks', { 'content-type': 'text/plain', origin: 'https://evil.example' }],
      ['PUT', '/v1/quotas/acme', { ...json, origin: 'http://evil.example' }],
      ['DELETE', '/v1/tasks', { origin: 'http://evil.example' }],
      ['PATCH', '/v1/tasks', { ...json, origin: 'http://evil.example' }],
    ];
    const before = c.journal.listTasks({ limit: 1000 }).length;
    for (const [method, path, headers] of refused) {
      const a = await raw(method, path, headers, method === 'DELETE' ? undefined : task);
      assert.equal(a.status, 403, `${method} ${path} ${JSON.stringify(headers)}: ${a.body}`);
      const body = JSON.parse(a.body) as { error: { code: string } };
      assert.equal(body.error.code, 'CROSS_SITE_REFUSED');
    }
    assert.equal(c.journal.listTasks({ limit: 1000 }).length, before, 'nothing was submitted');
  });

  test('the own page, allowed origins, same-origin fetches and callers that are not browsers pass; reads are never refused', async () => {
    const own = `http://127.0.0.1:${port}`;
    const passing: Array<Record<string, string>> = [
      json, // curl, Layer 2 services: no Origin, no Sec-Fetch-Site
      { ...json, origin: own, 'sec-fetch-site': 'same-origin' },
      { ...json, origin: own },
      { ...json, origin: 'http://page.example:8000', 'sec-fetch-site': 'cross-site' }, // --allow-origin
      { ...json, 'sec-fetch-site': 'none' }, // typed into the address bar / a bookmark
    ];
    for (const headers of passing) {
      const a = await raw('POST', '/v1/tasks', headers, task);
      assert.equal(a.status, 202, `${JSON.stringify(headers)}: ${a.body}`);
    }
    const read = await raw('GET', '/v1/tasks?limit=1', { origin: 'http://evil.example', 'sec-fetch-site': 'cross-site' });
    assert.equal(read.status, 200);
  });
});
