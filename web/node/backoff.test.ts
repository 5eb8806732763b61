import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffDelay } from './backoff';
import { coordinatorUrls } from './url';

test('backoff grows exponentially, stays within [exp/2, exp] and is capped', () => {
  const opts = { baseMs: 100, maxMs: 1000 };
  assert.equal(backoffDelay(1, opts, () => 0), 50);
  assert.equal(backoffDelay(1, opts, () => 1), 100);
  assert.equal(backoffDelay(3, opts, () => 1), 400);
  assert.equal(backoffDelay(10, opts, () => 1), 1000);
  assert.equal(backoffDelay(1000, opts, () => 0.5), 750);
});

test('coordinator URLs come from the page origin unless overridden', () => {
  assert.deepEqual(coordinatorUrls('http://127.0.0.1:8080/?x=1'), {
    httpBase: 'http://127.0.0.1:8080',
    wsUrl: 'ws://127.0.0.1:8080/v1/nodes/ws',
  });
  assert.deepEqual(coordinatorUrls('https://a.example/', null), {
    httpBase: 'https://a.example',
    wsUrl: 'wss://a.example/v1/nodes/ws',
  });
  assert.equal(coordinatorUrls('http://x/', 'ws://127.0.0.1:9/whatever').httpBase, 'http://127.0.0.1:9');
  assert.equal(coordinatorUrls('http://x/', '127.0.0.1:7').wsUrl, 'ws://127.0.0.1:7/v1/nodes/ws');
  assert.throws(() => coordinatorUrls('http://x/', 'ftp://h'), { code: 'SCHEMA_VIOLATION' });
});
