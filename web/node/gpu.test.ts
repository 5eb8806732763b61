import assert from 'node:assert/strict';
import { test } from 'node:test';
import { create, globals } from 'webgpu';
import { probeWebGpu } from './gpu';

test('without navigator.gpu the probe says why and how to fix it', async () => {
  const p = await probeWebGpu(undefined);
  assert.equal(p.info, null);
  assert.match(p.reason ?? '', /--enable-unsafe-webgpu/);
});

test('a real adapter (Dawn on SwiftShader here) is described for the coordinator', async () => {
  Object.assign(globalThis, globals);
  const p = await probeWebGpu(create([]));
  assert.equal(p.reason, null, p.reason ?? '');
  assert.ok(p.info);
  assert.equal(typeof p.info.isFallbackAdapter, 'boolean');
  assert.ok(p.info.maxStorageBufferBindingSize >= 128 << 20);
  assert.equal(p.limits.maxStorageBufferBindingSize, p.info.maxStorageBufferBindingSize);
  assert.deepEqual(p.info.features, [...p.info.features].sort());
});
