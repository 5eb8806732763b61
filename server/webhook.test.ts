/**
 * Webhooks: the SSRF rules (a table of URLs, tricky forms included) at submit and at delivery on the
 * resolved addresses, signed deliveries checked with the README's own verification snippet, stable
 * delivery ids across retries, redirects not followed.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer } from 'node:net';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { AppError } from '../shared';
import { createCoordinator, type Coordinator } from './index';
import { Journal, type StoredTask } from './journal';
import { HELLO_WAT, apiClient, receiver, tempDir, wat, type ReceivedRequest } from './testing';
import { Webhooks, WEBHOOK_SECRET_FILE, refusedAddress } from './webhook';

type Verify = (secret: string, header: string, rawBody: string, toleranceS?: number, nowS?: number) => boolean;

const tmp = tempDir('webhook-');
let c: Coordinator;
let verifyWebhook: Verify;
const api = (path: string, init?: RequestInit & { json?: unknown }) => apiClient(c.url)(path, init);

async function until(what: string, cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

before(async () => {
  // The README's snippet, exactly as written there, is what the deliveries are verified with.
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Verifying webhook signatures'));
  const snippet = /```js\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(snippet, 'README has a js snippet under "Verifying webhook signatures"');
  const file = join(tmp.dir, 'verify.mjs');
  writeFileSync(file, snippet);
  verifyWebhook = ((await import(pathToFileURL(file).href)) as { verifyWebhook: Verify }).verifyWebhook;

  c = await createCoordinator({ dbPath: join(tmp.dir, 'c.db'), webhook: { attempts: 3, baseDelayMs: 10, allowHosts: ['localhost'] } });
  const put = await api('/v1/agents/hello/versions/1', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) });
  assert.equal(put.status, 201);
});

after(async () => {
  await c.close();
  tmp.cleanup();
});

const REFUSED: readonly string[] = [
  'http://example.com/hook', // plain http to a host not allowed
  'https://127.0.0.1/',
  'https://127.1.2.3:8443/x',
  'https://0x7f.1/', // hex and short forms the URL parser turns into 127.0.0.1
  'https://0x7f000001/',
  'https://2130706433/', // decimal
  'https://017700000001/', // octal
  'https://127.0.0.1./',
  'https://localhost/',
  'https://localhost./',
  'https://LOCALHOST:9/',
  'https://api.localhost/',
  'https://0.0.0.0/',
  'https://0/',
  'https://10.0.0.1/',
  'https://172.16.0.1/',
  'https://172.31.255.255/',
  'https://192.168.1.1/',
  'https://100.64.0.1/',
  'https://169.254.169.254/latest/meta-data/', // cloud metadata
  'https://224.0.0.1/',
  'https://255.255.255.255/',
  'https://[::1]/',
  'https://[::]/',
  'https://[::ffff:127.0.0.1]/', // IPv4-mapped
  'https://[::ffff:7f00:1]/',
  'https://[0:0:0:0:0:ffff:10.1.2.3]/',
  'https://[::127.0.0.1]/', // IPv4-compatible
  'https://[64:ff9b::a9fe:a9fe]/', // NAT64 of 169.254.169.254
  'https://[2002:c0a8:101::1]/', // 6to4 of 192.168.1.1
  'https://[fe80::1]/',
  'https://[fc00::1]/',
  'https://[fd12:3456::1]/',
  'https://[ff02::1]/',
  'ftp://example.com/',
  'not a url',
];

const ACCEPTED: readonly string[] = [
  'https://example.com/hook?x=1',
  'https://93.184.216.34/',
  'https://172.32.0.1/',
  'https://11.0.0.1/',
  'https://[2606:4700:4700::1111]/',
  'https://[::ffff:8.8.8.8]/',
];

describe('webhook URL rules', () => {
  const journal = new Journal(':memory:');
  after(() => journal.close());
  const plain = new Webhooks(journal);
  const allowing = new Webhooks(journal, { allowHosts: ['127.0.0.1', 'LocalHost.', '[::1]', '10.0.0.7'] });

  test('loopback, private, link-local, unspecified, multicast and their tricky forms are refused; public https passes', () => {
    for (const url of REFUSED) {
      assert.throws(
        () => plain.check(url, '/webhook'),
        (err: unknown) => err instanceof AppError && err.code === 'WEBHOOK_URL_REFUSED' && err.details?.path === '/webhook',
        url,
      );
    }
    for (const url of ACCEPTED) assert.equal(plain.check(url).href, new URL(url).href, url);
  });

  test('allowed hosts may be plain http and loopback or private; other hosts still may not', () => {
    for (const url of ['http://127.0.0.1:9/hook', 'http://localhost:9/', 'http://localhost.:9/', 'https://LOCALHOST/', 'http://[::1]:9/', 'http://10.0.0.7/']) {
      assert.doesNotThrow(() => allowing.check(url), url);
    }
    for (const url of ['http://127.0.0.2/', 'https://10.0.0.8/', 'http://example.com/', 'https://[::ffff:127.0.0.1]/']) {
      assert.throws(() => allowing.check(url), (err: unknown) => err instanceof AppError && err.code === 'WEBHOOK_URL_REFUSED', url);
    }
  });

  test('resolved addresses: every refused range named, public ones pass', () => {
    const cases: Array<[string, RegExp | null]> = [
      ['127.0.0.1', /loopback/],
      ['::1', /loopback/],
      ['::', /unspecified/],
      ['0.1.2.3', /unspecified/],
      ['::ffff:127.0.0.1', /IPv4-mapped.*loopback/],
      ['0:0:0:0:0:ffff:a9fe:a9fe', /IPv4-mapped.*link-local/],
      ['fe80::1%eth0', /link-local/],
      ['febf:ffff::1', /link-local/],
      ['fc00::', /unique local/],
      ['fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', /unique local/],
      ['ff05::2', /multicast/],
      ['239.255.255.250', /multicast/],
      ['192.168.0.1', /private/],
      ['172.20.1.1', /private/],
      ['198.18.0.1', /benchmarking/],
      ['8.8.8.8', null],
      ['2001:4860:4860::8888', null],
      ['::ffff:1.1.1.1', null],
    ];
    for (const [address, why] of cases) {
      const got = refusedAddress(address);
      if (why) assert.match(got ?? '', why, address);
      else assert.equal(got, null, address);
    }
  });

  test('at delivery a name is resolved and every address checked: a name that resolves to loopback is never connected to', async () => {
    let connections = 0;
    const sink = createNetServer((s) => {
      connections++;
      s.destroy();
    });
    await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
    const port = (sink.address() as { port: number }).port;
    // `localhost` resolves (getaddrinfo, /etc/hosts) to loopback. Submit refuses that name outright, so this
    // calls the delivery path directly, as a stored task from before the rule would; a delivery does not trust
    // names, it resolves them and checks the addresses (a public name that rebinds to loopback fares the same).
    const hooks = new Webhooks(journal, { attempts: 3, baseDelayMs: 1 });
    const record = { id: 'task-rebind', state: 'succeeded' } as unknown as StoredTask;
    hooks.send(`https://localhost:${port}/hook`, record);
    await hooks.settle();
    sink.close();
    assert.equal(connections, 0);
    assert.equal(hooks.failed, 1);
    const ev = journal.events(10).find((e) => e.type === 'webhook_failed' && e.taskId === 'task-rebind');
    const data = ev?.data as { code: string; error: string };
    assert.equal(data.code, 'WEBHOOK_URL_REFUSED');
    assert.match(data.error, /resolves to (127\.0\.0\.1|::1)/);
  });

  test('an explicit secret signs; a delivery to an allowed IP literal arrives', async () => {
    const rx = await receiver();
    const hooks = new Webhooks(journal, { allowHosts: ['127.0.0.1'], secret: 'operator-secret' });
    const record = { id: 'task-literal', state: 'succeeded' } as unknown as StoredTask;
    hooks.send(`http://127.0.0.1:${rx.port}/in?q=1`, record);
    await hooks.settle();
    rx.server.close();
    assert.equal(hooks.delivered, 1);
    const hit = rx.hits[0]!;
    assert.equal(hit.body, JSON.stringify(record));
    assert.ok(verifyWebhook('operator-secret', String(hit.headers['x-webhook-signature']), hit.body));
    assert.ok(!verifyWebhook('another-secret', String(hit.headers['x-webhook-signature']), hit.body));
  });
});

describe('webhooks through the API', () => {
  test('submit refuses a forbidden webhook with WEBHOOK_URL_REFUSED and its path, and journals nothing', async () => {
    const before = c.journal.listTasks({ limit: 1000 }).length;
    const one = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello' }, webhook: 'http://127.0.0.1:9/hook' } });
    assert.equal(one.status, 400);
    assert.equal(one.body.error.code, 'WEBHOOK_URL_REFUSED');
    assert.equal(one.body.error.details.path, '/webhook');
    const batch = await api('/v1/tasks', {
      method: 'POST',
      json: { tasks: [{ kind: 'agent', payload: { agent: 'hello' } }, { kind: 'agent', payload: { agent: 'hello' }, webhook: 'https://[::ffff:169.254.169.254]/' }] },
    });
    assert.equal(batch.status, 400);
    assert.equal(batch.body.error.code, 'WEBHOOK_URL_REFUSED');
    assert.equal(batch.body.error.details.path, '/tasks/1/webhook');
    assert.equal(c.journal.listTasks({ limit: 1000 }).length, before);
    const ok = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello' }, webhook: 'https://example.com/hook' } });
    assert.equal(ok.status, 202);
  });

  test('a delivery is signed with the secret kept beside the journal, verified by the README snippet; retries keep the webhook id', async () => {
    const secret = readFileSync(join(tmp.dir, WEBHOOK_SECRET_FILE), 'utf8').trim();
    assert.match(secret, /^[0-9a-f]{64}$/);
    const rx = await receiver((n, res) => {
      res.statusCode = n === 1 ? 500 : 200; // the first attempt fails: the retry must carry the same id
      res.end();
    });
    // `localhost` is an allowed host here: resolved, checked, connected to the resolved address.
    const sub = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello' }, webhook: `http://localhost:${rx.port}/hook` } });
    assert.equal(sub.status, 202, JSON.stringify(sub.body));
    const cancel = await api(`/v1/tasks/${sub.body.id}/cancel`, { method: 'POST', json: {} });
    assert.equal(cancel.body.state, 'cancelled');
    await until('two webhook requests', () => rx.hits.length >= 2);
    rx.server.close();
    const [first, second] = rx.hits as [ReceivedRequest, ReceivedRequest];
    for (const hit of [first, second]) {
      assert.equal(hit.headers['content-type'], 'application/json');
      assert.equal(hit.headers['x-task-id'], sub.body.id);
      const sig = String(hit.headers['x-webhook-signature']);
      assert.match(sig, /^t=\d+,v1=[0-9a-f]{64}$/);
      assert.ok(verifyWebhook(secret, sig, hit.body), 'the README snippet accepts the delivery');
      assert.ok(!verifyWebhook(secret, sig, hit.body.replace('cancelled', 'succeeded')), 'and refuses a changed body');
      assert.ok(!verifyWebhook(secret, sig, hit.body, 300, Math.floor(Date.now() / 1000) + 3600), 'and a stale signature');
      const record = JSON.parse(hit.body) as { id: string; state: string };
      assert.equal(record.id, sub.body.id);
      assert.equal(record.state, 'cancelled');
    }
    assert.match(String(first.headers['x-webhook-id']), /^[0-9a-f-]{36}$/);
    assert.equal(second.headers['x-webhook-id'], first.headers['x-webhook-id']);
  });

  test('redirects are not followed', async () => {
    const target = await receiver();
    const redirector = await receiver((_n, res) => {
      res.statusCode = 307;
      res.setHeader('location', `http://localhost:${target.port}/stolen`);
      res.end();
    });
    const failedBefore = c.journal.events(1000).filter((e) => e.type === 'webhook_failed').length;
    const sub = await api('/v1/tasks', { method: 'POST', json: { kind: 'agent', payload: { agent: 'hello' }, webhook: `http://localhost:${redirector.port}/hook` } });
    await api(`/v1/tasks/${sub.body.id}/cancel`, { method: 'POST', json: {} });
    await until('the delivery to fail', () => c.journal.events(1000).filter((e) => e.type === 'webhook_failed').length > failedBefore);
    target.server.close();
    redirector.server.close();
    assert.equal(redirector.hits.length, 3, 'each attempt stopped at the redirect');
    assert.equal(target.hits.length, 0);
    const ev = c.journal.events(1000).find((e) => e.type === 'webhook_failed' && e.taskId === sub.body.id);
    assert.match((ev?.data as { error: string }).error, /HTTP 307 \(redirects are not followed\)/);
  });
});
