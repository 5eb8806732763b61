/**
 * scripts/audit.ts, CI's dependency audit: what blocks (high and critical advisories not accepted), what an
 * allow entry accepts (by GHSA id, URL or npm id, for its package, through its expiry day), the allow file's
 * checks, and the real script when the registry cannot answer (exit 2, saying so). The registry on this
 * project's machines refuses the audit endpoint, so the advisories here are a report in npm's own format
 * (`npm audit --json`, report version 2) rather than a live one.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { advisories, judge, parseAllowList, summary, type AllowEntry } from '../scripts/audit';
import { freePort, ROOT } from './testing';

const via = (source: number, name: string, severity: string, ghsa: string) => ({
  source, name, dependency: name, title: `${name} is vulnerable`, url: `https://github.com/advisories/${ghsa}`, severity, cwe: [], cvss: {}, range: '<9.9.9',
});

/** Shaped like `npm audit --omit=dev --json` output. */
const REPORT = {
  auditReportVersion: 2,
  vulnerabilities: {
    alpha: { name: 'alpha', severity: 'high', isDirect: true, via: [via(1001, 'alpha', 'high', 'GHSA-aaaa-bbbb-cccc')], effects: ['beta'], range: '<9.9.9', nodes: [], fixAvailable: true },
    // beta is vulnerable only through alpha (a string via): not an advisory of its own.
    beta: { name: 'beta', severity: 'high', isDirect: false, via: ['alpha'], effects: [], range: '*', nodes: [], fixAvailable: true },
    gamma: { name: 'gamma', severity: 'critical', isDirect: false, via: [via(1002, 'gamma', 'critical', 'GHSA-2222-3333-4444')], effects: [], range: '<9.9.9', nodes: [], fixAvailable: false },
    delta: { name: 'delta', severity: 'high', isDirect: false, via: [via(1003, 'delta', 'high', 'GHSA-5555-6666-7777')], effects: [], range: '<9.9.9', nodes: [], fixAvailable: false },
    eps: { name: 'eps', severity: 'moderate', isDirect: false, via: [via(1004, 'eps', 'moderate', 'GHSA-8888-9999-cccc'), via(1004, 'eps', 'moderate', 'GHSA-8888-9999-cccc')], effects: [], range: '<1', nodes: [], fixAvailable: true },
  },
  metadata: { vulnerabilities: { info: 0, low: 0, moderate: 1, high: 3, critical: 1, total: 5 } },
};

const entry = (id: string, pkg: string, expires: string): AllowEntry => ({ id, package: pkg, reason: 'does not apply: test', expires });

test('advisories: one per advisory, transitive mentions are not advisories', () => {
  const found = advisories(REPORT);
  assert.deepEqual(found.map((a) => `${a.name}:${a.severity}`).sort(), ['alpha:high', 'delta:high', 'eps:moderate', 'gamma:critical']);
  assert.throws(() => advisories({ error: { code: 'E405' } }), /not an npm audit report/);
});

test('high and critical block unless an unexpired entry for that package accepts them', () => {
  const found = advisories(REPORT);
  const allow = [
    entry('GHSA-2222-3333-4444', 'gamma', '2030-01-01'), // by GHSA id
    entry('https://github.com/advisories/GHSA-5555-6666-7777', 'delta', '2026-01-01'), // expired
    entry('1001', 'not-alpha', '2030-01-01'), // right id, wrong package: accepts nothing
    entry('GHSA-9999-9999-9999', 'zeta', '2030-01-01'), // matches nothing
  ];
  const v = judge(found, allow, '2026-06-01');
  assert.deepEqual(v.blocking.map((a) => a.name).sort(), ['alpha', 'delta']);
  assert.deepEqual(v.accepted.map((a) => a.advisory.name), ['gamma']);
  assert.deepEqual(v.expired.map((e) => e.package), ['delta']);
  assert.deepEqual(v.unused.map((e) => e.package).sort(), ['not-alpha', 'zeta']);
  assert.deepEqual(v.counts, { critical: 1, high: 2, moderate: 1, low: 0, info: 0 });
  const lines = summary(v);
  assert.match(lines[0]!, /4 advisories .* 1 accepted, 2 blocking/);
  assert.ok(lines.some((l) => /BLOCKING high alpha .*GHSA-aaaa-bbbb-cccc/.test(l)));
  assert.ok(lines.some((l) => /expired entry .*delta/.test(l)));
  // An entry counts through its expiry day; by URL and by npm's numeric id too.
  assert.equal(judge(found, [entry('https://github.com/advisories/GHSA-5555-6666-7777', 'delta', '2026-06-01'), entry('1001', 'alpha', '2026-06-01'), allow[0]!], '2026-06-01').blocking.length, 0);
  assert.equal(judge(found, [], '2026-06-01').blocking.length, 3);
});

test('the allow file: the shipped one parses; a bad entry is refused naming it', () => {
  assert.ok(Array.isArray(parseAllowList(readFileSync(join(ROOT, '.ci', 'audit-allow.json'), 'utf8'))));
  const bad = (accept: unknown[]): string => JSON.stringify({ accept });
  assert.throws(() => parseAllowList(bad([{ id: 'GHSA-x', package: 'p', expires: '2030-01-01' }])), /accept\[0\]: "reason" must be/);
  assert.throws(() => parseAllowList(bad([entry('1', 'p', '2030-01-01'), { ...entry('1', 'p', 'next year') }])), /accept\[1\]: "expires" must be a date/);
  assert.throws(() => parseAllowList(bad([{ ...entry('1', 'p', '2030-01-01'), severity: 'low' }])), /unknown key "severity"/);
  assert.throws(() => parseAllowList('{"accept": {}}'), /expected \{ "accept"/);
  assert.throws(() => parseAllowList('nope'), /not JSON/);
});

test('the script fails with exit 2 and says why when the registry cannot be reached', async () => {
  const port = await freePort(); // nothing listens there
  const res = spawnSync(process.execPath, ['--import', 'tsx', 'scripts/audit.ts'], {
    cwd: ROOT,
    encoding: 'utf8',
    timeout: 90_000,
    env: { ...process.env, npm_config_registry: `http://127.0.0.1:${port}/`, npm_config_fetch_retries: '0', npm_config_fetch_timeout: '5000', npm_config_offline: 'false' },
  });
  assert.equal(res.status, 2, `${res.stdout}\n${res.stderr}`);
  assert.match(res.stderr, /audit: could not run: /);
});
