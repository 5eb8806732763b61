import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { AppError } from '../shared';
import { Auth, ensureLocalTokens, type AuthFileConfig } from './auth';
import { tempDir } from './testing';

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
