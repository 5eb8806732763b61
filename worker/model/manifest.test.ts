import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '../../shared';
import { parseManifest } from './manifest';

const digest = 'a'.repeat(64);

test('manifest parses good entries and refuses bad ones as MODEL_CORRUPT', () => {
  const m = parseManifest(JSON.stringify({ files: [{ path: 'onnx/model.onnx', size: 10, sha256: digest }] }));
  assert.deepEqual(m.files, [{ path: 'onnx/model.onnx', size: 10, sha256: digest }]);
  const bad = [
    '{',
    { nope: 1 },
    { files: [{ path: '../x', size: 1, sha256: digest }] },
    { files: [{ path: '/abs', size: 1, sha256: digest }] },
    { files: [{ path: 'a', size: -1, sha256: digest }] },
    { files: [{ path: 'a', size: 1, sha256: 'XYZ' }] },
    { files: [{ path: 'a', size: 1, sha256: digest }, { path: 'a', size: 1, sha256: digest }] },
  ];
  for (const b of bad) {
    assert.throws(
      () => parseManifest(typeof b === 'string' ? b : JSON.stringify(b)),
      (e: unknown) => e instanceof AppError && e.code === 'MODEL_CORRUPT',
    );
  }
});
