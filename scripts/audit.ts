/**
 * CI's dependency audit: `npm audit --omit=dev --json` over the production dependencies, failing on any
 * advisory of severity high or critical that .ci/audit-allow.json does not accept.
 *
 *   npx tsx scripts/audit.ts [--allow FILE]
 *
 * Exit 0: nothing blocking. Exit 1: a high or critical advisory not accepted (each is listed).
 * Exit 2: the audit could not run (registry unreachable or refusing the audit endpoint, a bad allow file).
 *
 * Accepting an advisory that does not apply: add an entry to .ci/audit-allow.json,
 *   { "id": "GHSA-xxxx-xxxx-xxxx" (or its advisory URL, or npm's numeric id), "package": "name",
 *     "reason": "why it does not apply here", "expires": "YYYY-MM-DD" }
 * An entry counts through its expiry day, then no longer: the advisory blocks again until someone looks again.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

export type Severity = 'info' | 'low' | 'moderate' | 'high' | 'critical';
const BLOCKING: ReadonlySet<Severity> = new Set(['high', 'critical']);
const SEVERITIES: readonly Severity[] = ['critical', 'high', 'moderate', 'low', 'info'];

/** One advisory as `npm audit --json` (report version 2) gives it in a vulnerability's `via`. */
export interface Advisory {
  source: number;
  name: string;
  title: string;
  url: string;
  severity: Severity;
  range: string;
}

export interface AllowEntry {
  id: string;
  package: string;
  reason: string;
  expires: string;
}

export interface Verdict {
  /** Every distinct advisory, by severity. */
  counts: Record<Severity, number>;
  blocking: Advisory[];
  accepted: Array<{ advisory: Advisory; entry: AllowEntry }>;
  /** Entries past their expiry date (they accept nothing). */
  expired: AllowEntry[];
  /** Entries that matched no advisory in this report (the advisory is gone: remove the entry). */
  unused: AllowEntry[];
}

/** The GHSA id of an advisory URL (`https://github.com/advisories/GHSA-…`), else null. */
function ghsa(url: string): string | null {
  return /\b(GHSA(?:-[23456789cfghjmpqrvwx]{4}){3})\b/i.exec(url)?.[1]?.toUpperCase() ?? null;
}

function matches(entry: AllowEntry, a: Advisory): boolean {
  if (entry.package !== a.name) return false;
  const id = entry.id.trim();
  return id === a.url || id === String(a.source) || (ghsa(id) !== null && ghsa(id) === ghsa(a.url));
}

/** Checks the allow file's shape; throws a message naming the entry. */
export function parseAllowList(text: string, file = '.ci/audit-allow.json'): AllowEntry[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`${file}: not JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  const list = (json as { accept?: unknown } | null)?.accept;
  if (!Array.isArray(list)) throw new Error(`${file}: expected { "accept": [ … ] }`);
  return list.map((e: unknown, i): AllowEntry => {
    const at = `${file}: accept[${i}]`;
    if (typeof e !== 'object' || e === null) throw new Error(`${at}: not an object`);
    const r = e as Record<string, unknown>;
    for (const k of Object.keys(r)) if (!['id', 'package', 'reason', 'expires'].includes(k)) throw new Error(`${at}: unknown key "${k}"`);
    for (const k of ['id', 'package', 'reason', 'expires'] as const) {
      if (typeof r[k] !== 'string' || (r[k] as string).trim() === '') throw new Error(`${at}: "${k}" must be a non-empty string`);
    }
    const expires = r.expires as string;
    if (!/^\d{4}-\d{2}-\d{2}$/.test(expires) || Number.isNaN(Date.parse(`${expires}T00:00:00Z`))) {
      throw new Error(`${at}: "expires" must be a date YYYY-MM-DD; got ${JSON.stringify(expires)}`);
    }
    return { id: r.id as string, package: r.package as string, reason: r.reason as string, expires };
  });
}

/** The distinct advisories of an `npm audit --json` report (version 2); throws when it is not one. */
export function advisories(report: unknown): Advisory[] {
  const vulns = (report as { vulnerabilities?: unknown } | null)?.vulnerabilities;
  if (typeof vulns !== 'object' || vulns === null) throw new Error('not an npm audit report (no "vulnerabilities")');
  const seen = new Map<string, Advisory>();
  for (const v of Object.values(vulns as Record<string, { via?: unknown }>)) {
    for (const via of Array.isArray(v.via) ? v.via : []) {
      // A string names another vulnerable package (the path to it); objects are the advisories themselves.
      if (typeof via !== 'object' || via === null) continue;
      const a = via as Partial<Advisory>;
      const adv: Advisory = {
        source: Number(a.source),
        name: String(a.name),
        title: String(a.title ?? ''),
        url: String(a.url ?? ''),
        severity: (SEVERITIES as readonly string[]).includes(String(a.severity)) ? (a.severity as Severity) : 'critical',
        range: String(a.range ?? ''),
      };
      seen.set(`${adv.source}:${adv.name}`, adv);
    }
  }
  return [...seen.values()];
}

/** What blocks, what is accepted and which entries are stale, on `today` (YYYY-MM-DD, UTC). */
export function judge(found: readonly Advisory[], allow: readonly AllowEntry[], today: string): Verdict {
  const live = allow.filter((e) => e.expires >= today);
  const expired = allow.filter((e) => e.expires < today);
  const counts = Object.fromEntries(SEVERITIES.map((s) => [s, 0])) as Record<Severity, number>;
  const blocking: Advisory[] = [];
  const accepted: Verdict['accepted'] = [];
  const used = new Set<AllowEntry>();
  for (const a of found) {
    counts[a.severity]++;
    if (!BLOCKING.has(a.severity)) continue;
    const entry = live.find((e) => matches(e, a));
    if (entry) {
      used.add(entry);
      accepted.push({ advisory: a, entry });
    } else {
      blocking.push(a);
    }
  }
  return { counts, blocking, accepted, expired, unused: live.filter((e) => !used.has(e)) };
}

export function summary(v: Verdict): string[] {
  const total = SEVERITIES.reduce((n, s) => n + v.counts[s], 0);
  const lines = [
    `audit: ${total} advisor${total === 1 ? 'y' : 'ies'} in the production dependencies (${SEVERITIES.map((s) => `${s} ${v.counts[s]}`).join(', ')}); ` +
      `${v.accepted.length} accepted, ${v.blocking.length} blocking (high or critical, not accepted)`,
  ];
  for (const a of v.blocking) lines.push(`  BLOCKING ${a.severity} ${a.name} ${a.range}: ${a.title} (${a.url || `npm advisory ${a.source}`})`);
  for (const { advisory: a, entry } of v.accepted) lines.push(`  accepted ${a.severity} ${a.name}: ${a.title} (${a.url}) until ${entry.expires}: ${entry.reason}`);
  for (const e of v.expired) lines.push(`  expired entry (counts no more): ${e.id} ${e.package}, expired ${e.expires}`);
  for (const e of v.unused) lines.push(`  unused entry (no such advisory now; remove it): ${e.id} ${e.package}`);
  if (v.blocking.length) {
    lines.push('  Fix: update the package (npm update NAME, or a newer pinned version), or, if it does not apply here, accept it in .ci/audit-allow.json with a reason and an expiry date (README.md "Operating a pool").');
  }
  return lines;
}

/** Runs npm audit; the parsed report, or a message saying why there is none. */
export function runNpmAudit(cwd: string, env: NodeJS.ProcessEnv = process.env): { report: unknown } | { error: string } {
  const res = spawnSync('npm', ['audit', '--omit=dev', '--json'], { cwd, env, encoding: 'utf8', maxBuffer: 64 << 20, timeout: 120_000 });
  if (res.error) return { error: `could not run npm: ${res.error.message}` };
  let report: unknown;
  try {
    report = JSON.parse(res.stdout);
  } catch {
    return { error: `npm audit printed no report (exit ${res.status}): ${(res.stderr || res.stdout).trim().split('\n').slice(-3).join(' | ')}` };
  }
  // npm exits non-zero when it finds advisories too; an error report has "error" or "message" and no vulnerabilities.
  const r = report as { vulnerabilities?: unknown; message?: unknown; error?: { summary?: unknown; code?: unknown } };
  if (r.vulnerabilities === undefined) {
    const why = [r.message, r.error?.code, r.error?.summary].filter((x) => typeof x === 'string' && x !== '').join(': ');
    return { error: `the registry did not answer the audit (${why || `exit ${res.status}`})` };
  }
  return { report };
}

function main(): number {
  const root = join(import.meta.dirname, '..');
  const { values } = parseArgs({ options: { allow: { type: 'string', default: join(root, '.ci', 'audit-allow.json') } } });
  let allow: AllowEntry[];
  try {
    allow = parseAllowList(readFileSync(values.allow, 'utf8'), values.allow);
  } catch (err) {
    console.error(`audit: ${err instanceof Error ? err.message : String(err)}`);
    // A broken allow list is a mistake to fix, not a registry that cannot answer: it fails CI.
    return 1;
  }
  const ran = runNpmAudit(root);
  if ('error' in ran) {
    console.error(`audit: could not run: ${ran.error}. It needs the npm registry's audit endpoint (a POST); ` +
      'a read-only mirror or a machine without network cannot answer it. Run it where the registry answers.');
    return 2;
  }
  const verdict = judge(advisories(ran.report), allow, new Date().toISOString().slice(0, 10));
  for (const line of summary(verdict)) (verdict.blocking.length ? console.error : console.log)(line);
  return verdict.blocking.length ? 1 : 0;
}

if (process.argv[1]?.endsWith('scripts/audit.ts')) process.exit(main());
