/**
 * The shipped alert rules, their promtool unit tests, the sample scrape config and the
 * Grafana dashboard: promtool checks them (Debian's prometheus, installed by
 * scripts/install.sh), and every metric a rule or a panel queries is one a real
 * in-process coordinator exports on /metrics.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { parse, stringify } from 'yaml';
import { createCoordinator, type Coordinator } from '../server/index';
import { HELLO_WAT, TestNode, apiClient, tempDir, until, wat } from '../server/testing';

const PROM = join(import.meta.dirname, 'prometheus');
const GRAFANA = join(import.meta.dirname, 'grafana');
const RULES = join(PROM, 'rules.yml');
const tmp = tempDir('observability-');

// ------------------------------------------------------------------ a small PromQL identifier extractor

/** Words of PromQL that look like identifiers: modifiers, set operators, number literals. */
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'and', 'or', 'unless', 'offset', 'bool', 'atan2', 'inf', 'nan']);

/**
 * The metric names an expression selects: identifiers that are not function calls (a name
 * followed by `(`), keywords, label names (inside `{…}`, or the label list of by/without/on/
 * ignoring/group_left/group_right), string contents, durations or Grafana variables.
 */
export function promqlMetrics(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
    .replace(/\{[^}]*\}/g, '{}')
    .replace(/\[[^\]]*\]/g, '[]')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ')
    .replace(/#.*$/gm, '');
  const out = new Set<string>();
  for (const m of s.matchAll(/(?<![\w.:$])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()/g)) {
    const name = m[1]!;
    if (!KEYWORDS.has(name.toLowerCase())) out.add(name);
  }
  return [...out];
}

// ------------------------------------------------------------------ the files

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface AlertTest {
  eval_time: string;
  alertname: string;
  exp_alerts?: Array<{ exp_labels?: Record<string, string> }>;
}
interface TestCase {
  name: string;
  input_series: Array<{ series: string; values: string }>;
  alert_rule_test?: AlertTest[];
}
interface Target {
  expr?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}

const rules = (parse(readFileSync(RULES, 'utf8')) as { groups: Array<{ name: string; rules: Rule[] }> }).groups.flatMap((g) => g.rules);
const ruleTests = (parse(readFileSync(join(PROM, 'rules.test.yml'), 'utf8')) as { tests: TestCase[] }).tests;
const runbook = readFileSync(join(PROM, 'RUNBOOK.md'), 'utf8');
const dashboard = JSON.parse(readFileSync(join(GRAFANA, 'dashboards', 'pool.json'), 'utf8')) as {
  uid: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query?: string | { query: string } }> };
  annotations: { list: Target[] };
};
const panels = dashboard.panels.flatMap((p) => [p, ...(p.panels ?? [])]).filter((p) => p.type !== 'row');
const panelExprs = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr ?? '' })));
const templateMetrics = dashboard.templating.list.flatMap((v) => {
  const q = typeof v.query === 'string' ? v.query : v.query?.query;
  const m = v.type === 'query' && q ? /label_values\(\s*([A-Za-z_:][\w:]*)\s*,/.exec(q) : null;
  return m ? [m[1]!] : [];
});

const MAINTENANCE = 'unless on() (max(last_over_time(coordinator_maintenance[10m])) == 1)';

function promtool(args: string[], cwd = PROM): { status: number | null; out: string } {
  const res = spawnSync('promtool', args, { cwd, encoding: 'utf8', timeout: 30_000 });
  if (res.error) throw new Error(`promtool did not run (${res.error.message}); scripts/install.sh installs Debian's prometheus`);
  return { status: res.status, out: `${res.stdout}${res.stderr}` };
}

after(() => tmp.cleanup());

describe('PromQL identifier extractor', () => {
  test('keeps metric names, drops functions, keywords, labels, strings, durations and variables', () => {
    assert.deepEqual(
      promqlMetrics('histogram_quantile(0.99, sum by (le, kind) (rate(coordinator_task_latency_seconds_bucket{kind=~"agent|x"}[$__rate_interval])))'),
      ['coordinator_task_latency_seconds_bucket'],
    );
    assert.deepEqual(
      promqlMetrics('sum(rate(a_total[5m] offset 1h)) / on() group_left(node) b > 1e3 unless on() (max(c) == 1) or vector(0) + inf'),
      ['a_total', 'b', 'c'],
    );
    assert.deepEqual(promqlMetrics('label_replace(up, "x", "$1", "job", "(.*)") and sum without (instance) (d{node_name=~"$node"})'), ['up', 'd']);
  });
});

describe('alert rules', () => {
  test('promtool check rules passes', () => {
    const res = promtool(['check', 'rules', 'rules.yml']);
    assert.equal(res.status, 0, res.out);
    assert.match(res.out, /SUCCESS: \d+ rules found/);
  });

  test('promtool test rules passes', () => {
    const res = promtool(['test', 'rules', 'rules.test.yml']);
    assert.equal(res.status, 0, res.out);
    assert.match(res.out, /SUCCESS/);
  });

  test('there is an alert for every KPI and for the pool health the issue names', () => {
    const names = new Set(rules.map((r) => r.alert));
    for (const a of [
      'AgentSpawnSlow', 'TaskLatencyHigh', 'AvailabilityLow', 'AgentMemoryHigh', 'SuccessRateLow', 'PoolSaturated', 'KpiTargetMissed',
      'ThroughputLow', 'ErrorRateHigh', 'NoNodeConnected', 'NodeLost', 'QueueGrowing', 'CircuitOpen', 'DeadLettersGrowing', 'WebhooksFailing',
    ]) {
      assert.ok(names.has(a), `${a} in rules.yml`);
    }
  });

  test('each alert has for, a severity, summary/description/runbook, a runbook section, and is silenced by maintenance', () => {
    for (const r of rules) {
      assert.ok(r.for, `${r.alert}: for`);
      assert.match(r.labels?.severity ?? '', /^(critical|warning|info)$/, `${r.alert}: severity`);
      for (const a of ['summary', 'description', 'runbook']) assert.ok(r.annotations?.[a], `${r.alert}: annotation ${a}`);
      const anchor = /RUNBOOK\.md#([a-z0-9-]+)$/.exec(r.annotations!.runbook!)?.[1];
      assert.equal(anchor, r.alert.toLowerCase(), `${r.alert}: runbook link`);
      assert.match(runbook, new RegExp(`^## ${r.alert}$`, 'm'), `${r.alert}: a section in RUNBOOK.md`);
      if (r.alert === 'PoolInMaintenance') continue;
      assert.ok(r.expr.trim().endsWith(MAINTENANCE), `${r.alert}: ends with ${MAINTENANCE}`);
    }
  });

  test('rules.test.yml shows every alert firing and then resolving, and maintenance silencing one', () => {
    const minutes = (t: string) => {
      const m = /^(\d+)m$/.exec(t);
      assert.ok(m, `eval_time ${t} in minutes`);
      return Number(m[1]);
    };
    for (const r of rules) {
      const shown = ruleTests.some((tc) => {
        const checks = (tc.alert_rule_test ?? []).filter((a) => a.alertname === r.alert);
        const fired = checks.filter((a) => (a.exp_alerts ?? []).length > 0).map((a) => minutes(a.eval_time));
        const quiet = checks.filter((a) => (a.exp_alerts ?? []).length === 0).map((a) => minutes(a.eval_time));
        return fired.some((f) => quiet.some((q) => q > f));
      });
      assert.ok(shown, `${r.alert}: a test case where it fires and a later eval_time where it no longer does`);
    }
    const silenced = ruleTests.filter(
      (tc) =>
        tc.input_series.some((s) => s.series.startsWith('coordinator_maintenance') && /^1/.test(s.values)) &&
        (tc.alert_rule_test ?? []).some((a) => a.alertname !== 'PoolInMaintenance' && (a.exp_alerts ?? []).length === 0),
    );
    assert.ok(silenced.length > 0, 'a maintenance test');
  });
});

describe('scrape config', () => {
  test('prometheus.yml loads rules.yml, scrapes /metrics with a bearer token file, and promtool check config passes', () => {
    const config = parse(readFileSync(join(PROM, 'prometheus.yml'), 'utf8')) as {
      rule_files: string[];
      scrape_configs: Array<{ job_name: string; metrics_path?: string; authorization?: { type?: string; credentials_file?: string } }>;
    };
    assert.deepEqual(config.rule_files, ['rules.yml']);
    const job = config.scrape_configs.find((s) => s.job_name === 'coordinator');
    assert.ok(job, 'a coordinator job (CoordinatorDown matches up{job="coordinator"})');
    assert.equal(job.metrics_path, '/metrics');
    assert.equal(job.authorization?.type, 'Bearer');
    assert.ok(job.authorization?.credentials_file);
    // The check stats the credentials file: check a copy that names a temporary one, with rules.yml by absolute path.
    const token = join(tmp.dir, 'refiner-token');
    writeFileSync(token, 'a-refiner-token\n');
    job.authorization.credentials_file = token;
    config.rule_files = [RULES];
    const copy = join(tmp.dir, 'prometheus.yml');
    writeFileSync(copy, stringify(config));
    const res = promtool(['check', 'config', copy]);
    assert.equal(res.status, 0, res.out);
    assert.match(res.out, /SUCCESS: 1 rule files found/);
  });
});

describe('Grafana dashboard', () => {
  test('every panel queries Prometheus through the DS_PROMETHEUS variable; provisioning points at the dashboard', () => {
    assert.ok(panels.length >= 20, `${panels.length} panels`);
    assert.ok(dashboard.templating.list.some((v) => v.name === 'DS_PROMETHEUS' && v.type === 'datasource'));
    for (const p of panels) {
      assert.ok((p.targets ?? []).length > 0, `${p.title}: targets`);
      assert.equal(p.datasource?.uid, '${DS_PROMETHEUS}', `${p.title}: datasource`);
      for (const t of p.targets!) {
        assert.equal(t.datasource?.uid, '${DS_PROMETHEUS}', `${p.title}: target datasource`);
        assert.ok(t.expr && promqlMetrics(t.expr).length > 0, `${p.title}: an expression that selects a metric`);
      }
    }
    const titles = panels.map((p) => p.title).join('\n');
    for (const want of [/Queue by state/, /Queued by priority/, /Throughput/, /Task latency/, /Utilisation per node/, /Leases per node/, /GPU memory/, /Tokens per second/, /Time to first token/, /errors by code/i, /Circuits open/, /Maintenance/, /Agent spawn \(< 50 ms\)/, /Error rate \(< 1 %\)/]) {
      assert.match(titles, want);
    }
    const provider = parse(readFileSync(join(GRAFANA, 'provisioning', 'dashboards', 'pool.yml'), 'utf8')) as { providers: Array<{ type: string; options: { path: string } }> };
    assert.equal(provider.providers[0]?.type, 'file');
    const ds = parse(readFileSync(join(GRAFANA, 'provisioning', 'datasources', 'prometheus.yml'), 'utf8')) as { datasources: Array<{ type: string; uid: string }> };
    assert.equal(ds.datasources[0]?.type, 'prometheus');
  });

  test('every panel expression is valid PromQL (promtool checks them as recording rules)', () => {
    const exprs = [...panelExprs.map((e) => e.expr), ...dashboard.annotations.list.map((a) => a.expr ?? '')];
    const asRules = {
      groups: [{ name: 'dashboard', rules: exprs.map((e, i) => ({ record: `dashboard:panel_${i}`, expr: e.replaceAll('$__rate_interval', '1m').replaceAll('$node', '.*') })) }],
    };
    const file = join(tmp.dir, 'dashboard-rules.yml');
    writeFileSync(file, stringify(asRules));
    const res = promtool(['check', 'rules', file]);
    assert.equal(res.status, 0, res.out);
  });
});

describe('every metric a rule or a panel queries is exported by the coordinator', () => {
  let c: Coordinator;
  let node: TestNode;
  let types: Map<string, string>;
  /** Label names seen on each sample name of the scrape. */
  const sampleLabels = new Map<string, Set<string>>();
  let scrape = '';

  before(async () => {
    c = await createCoordinator({ dbPath: join(tmp.dir, 'c.db'), retryBaseMs: 1 });
    const api = apiClient(c.url);
    const put = await api('/v1/agents/hello/versions/1.0.0', { method: 'PUT', headers: { 'content-type': 'application/wasm' }, body: await wat(HELLO_WAT) });
    assert.equal(put.status, 201, JSON.stringify(put.body));
    node = await TestNode.connect(c.url, { name: 'metrics-node', maxConcurrent: 2 });
    const sub = await api('/v1/tasks', { method: 'POST', json: { tasks: [1, 2, 3].map((n) => ({ kind: 'agent', payload: { agent: 'hello', input: { n } } })) } });
    assert.equal(sub.status, 202, JSON.stringify(sub.body));
    const tasks = await node.assignments(3);
    node.heartbeat(tasks.map((t) => t.leaseId), { running: 2, workers: 2, spawnP50Ms: 3, spawnP99Ms: 9, memoryBytes: 50_000_000, gpuMemoryBytes: 1_000_000 });
    const result = () => ({ exitCode: 0, output: 'ok', stderr: '', fuelUsed: 10, durationMs: 4, memoryBytes: 65_536, spawnMs: 3 });
    // One attempt ends in an infrastructure error (the error-rate series), its retry succeeds.
    node.fail(tasks.slice(0, 1), 'WORKER_CRASHED');
    node.succeed(tasks.slice(1), result);
    node.succeed(await node.assignments(1), result);
    const ids = sub.body.ids as string[];
    await until(async () => {
      for (const id of ids) if ((await api(`/v1/tasks/${id}`)).body.state !== 'succeeded') return false;
      return true;
    }, 5_000, 'three tasks succeeded');
    const res = await fetch(`${c.url}/metrics`);
    assert.equal(res.status, 200);
    const text = await res.text();
    scrape = text;
    types = new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
    for (const m of text.matchAll(/^([A-Za-z_:][\w:]*)(?:\{([^}]*)\})? /gm)) {
      const names = sampleLabels.get(m[1]!) ?? new Set<string>();
      for (const l of (m[2] ?? '').matchAll(/([A-Za-z_]\w*)="/g)) names.add(l[1]!);
      sampleLabels.set(m[1]!, names);
    }
  });

  after(async () => {
    await node?.close();
    await c?.close();
  });

  const missing = (names: Iterable<string>): string[] =>
    [...new Set(names)].filter((n) => {
      if (types.has(n)) return false;
      const base = n.replace(/_(bucket|sum|count)$/, '');
      return !(base !== n && ['histogram', 'summary'].includes(types.get(base) ?? ''));
    });

  /** Label names an expression's selectors match on, where the scrape has samples of that metric but no such label. */
  const unknownLabels = (expr: string): string[] => {
    const out: string[] = [];
    for (const sel of expr.matchAll(/([A-Za-z_:][\w:]*)\{([^}]*)\}/g)) {
      const seen = sampleLabels.get(sel[1]!);
      if (!seen) continue;
      const matchers = sel[2]!.replace(/"(?:[^"\\]|\\.)*"/g, '""');
      for (const l of matchers.matchAll(/([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)/g)) if (!seen.has(l[1]!)) out.push(`${sel[1]}{${l[1]}}`);
    }
    return out;
  };

  test('the checker finds a name that is not exported', () => {
    assert.deepEqual(missing(['coordinator_task_latency_seconds_bucket', 'coordinator_not_exported_total', 'coordinator_tasks_bucket']), [
      'coordinator_not_exported_total',
      'coordinator_tasks_bucket',
    ]);
    assert.deepEqual(unknownLabels('coordinator_tasks{state="queued",nope=~"a"}'), ['coordinator_tasks{nope}']);
  });

  test('the dashboard', () => {
    const exprs = [...panelExprs.map((e) => e.expr), ...dashboard.annotations.list.map((a) => a.expr ?? '')];
    const used = [...exprs.flatMap((e) => promqlMetrics(e)), ...templateMetrics];
    assert.ok(new Set(used).size > 30, `${new Set(used).size} metric names`);
    assert.deepEqual(missing(used), [], 'dashboard metrics not in /metrics');
    assert.deepEqual(exprs.flatMap(unknownLabels), [], 'labels the scrape does not have');
  });

  test("the alert rules (up is Prometheus's own)", () => {
    const used = rules.flatMap((r) => promqlMetrics(r.expr)).filter((n) => n !== 'up');
    assert.deepEqual(missing(used), [], 'rule metrics not in /metrics');
    assert.deepEqual(rules.flatMap((r) => unknownLabels(r.expr)), [], 'labels the scrape does not have');
    // The label values the rules select on are ones the coordinator writes.
    for (const want of ['coordinator_tasks{state="queued"}', 'coordinator_nodes{condition="connected"}', 'coordinator_node_disconnects_total{reason="lost"}', 'coordinator_webhooks_total{outcome="failed"}', 'coordinator_task_attempt_errors_total{code="WORKER_CRASHED",infra="true"}']) {
      assert.ok(scrape.includes(want), `${want} in the scrape`);
    }
  });
});
