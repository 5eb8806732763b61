import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { renderErrorsDoc } from '../scripts/errors-doc';
import { AppError, deserializeError, ERROR_CODES, ERRORS, isErrorCode, serializeError } from './errors';

test('docs/errors.md lists exactly the codes of shared/errors.ts', () => {
  const doc = readFileSync(join(import.meta.dirname, '..', 'docs', 'errors.md'), 'utf8');
  assert.equal(doc, renderErrorsDoc(), 'docs/errors.md is stale: run `npx tsx scripts/errors-doc.ts`');
  const documented = [...doc.matchAll(/^\| `([A-Z0-9_]+)` \|/gm)].map((m) => m[1]);
  assert.deepEqual(documented, ERROR_CODES);
});

test('every code has an HTTP error status and a message that is a sentence', () => {
  for (const code of ERROR_CODES) {
    const e = ERRORS[code];
    assert.ok(e.status >= 400 && e.status < 600, code);
    assert.match(e.message, /\.$/, code);
    assert.match(code, /^[A-Z][A-Z0-9_]+$/);
  }
});

test('errors cross a boundary as { code, name, message } and come back with their code', () => {
  const err = new AppError('AGENT_TRAP', 'unreachable executed', { exitCode: 1 });
  const wire = JSON.parse(JSON.stringify(serializeError(err, true)));
  assert.equal(wire.code, 'AGENT_TRAP');
  assert.ok(typeof wire.stack === 'string');
  const back = deserializeError(wire);
  assert.ok(back instanceof AppError);
  assert.equal(back.code, 'AGENT_TRAP');
  assert.equal(back.message, 'unreachable executed');
  assert.deepEqual(back.details, { exitCode: 1 });
  assert.equal(back.status, 500);
});

test('unknown errors become INTERNAL and unknown codes are not trusted', () => {
  assert.equal(serializeError(new TypeError('boom')).code, 'INTERNAL');
  assert.equal(serializeError('text').code, 'INTERNAL');
  assert.equal(isErrorCode('NOT_A_CODE'), false);
  assert.equal(deserializeError({ code: 'NOT_A_CODE' as never, name: 'X', message: 'm' }).code, 'INTERNAL');
});
