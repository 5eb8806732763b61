/**
 * The images and manifests operators deploy with (deploy/docker, deploy/k8s), checked against the code they run:
 * every manifest parses and has the kind and apiVersion it should; the kustomizations render (by a small renderer
 * here, and by `kubectl kustomize` where kubectl is installed); the coordinator's container args are flags
 * server/main.ts declares, and started for real with them (from the repository root, as the image's WORKDIR)
 * its probes' paths answer 200 on the port the Services and probes name; the tokens generate.sh writes are
 * what the pods and the ServiceMonitor refer to and what the coordinator accepts; a headless Chromium node
 * reaches it by the Service's name as the node Deployment says; the Dockerfiles copy what exists and hold
 * every file their command imports.
 */
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { build } from 'esbuild';
import { parseAllDocuments } from 'yaml';
import { Auth } from '../server/auth';
import { TestNode } from '../server/testing';
import { launchNodes } from '../scripts/nodes';
import { ensurePageBuilt } from '../scripts/page-build';
import { declaredFlags, freePort, parseFlags, ROOT, startCoordinator, withFlags, type RunningCoordinator } from './testing';

const K8S = join(ROOT, 'deploy', 'k8s');
const DOCKER = join(ROOT, 'deploy', 'docker');

// ---------------------------------------------------------------------------------------------------------
// Manifests

interface Resource {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: Record<string, unknown>;
  /** Secrets only: the keys (data or stringData). */
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  /** The file it came from (relative to the repository). */
  file: string;
}

const EXPECTED_KINDS: Record<string, string> = {
  Namespace: 'v1',
  Service: 'v1',
  Secret: 'v1',
  ConfigMap: 'v1',
  StatefulSet: 'apps/v1',
  Deployment: 'apps/v1',
  PodDisruptionBudget: 'policy/v1',
  HorizontalPodAutoscaler: 'autoscaling/v2',
  ServiceMonitor: 'monitoring.coreos.com/v1',
  Kustomization: 'kustomize.config.k8s.io/v1beta1',
};

function yamlFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) return yamlFiles(p);
    return /\.ya?ml$/.test(name) ? [p] : [];
  });
}

function parseYamlFile(path: string): Array<Record<string, unknown>> {
  return parseAllDocuments(readFileSync(path, 'utf8')).map((doc, i) => {
    assert.deepEqual(doc.errors.map(String), [], `${relative(ROOT, path)} document ${i}`);
    return doc.toJS() as Record<string, unknown>;
  }).filter((d) => d !== null);
}

interface Kustomization {
  namespace?: string;
  resources?: string[];
  secretGenerator?: Array<{ name: string; type?: string; files?: string[]; literals?: string[] }>;
  generatorOptions?: { disableNameSuffixHash?: boolean };
}

/**
 * What `kubectl kustomize DIR` gives for the features these kustomizations use: resources (files and
 * directories), namespace, secretGenerator (keys only; `secretsDir` supplies the generator's files).
 */
function render(dir: string, secretsDir?: string): Resource[] {
  const k = parseYamlFile(join(dir, 'kustomization.yaml'))[0] as unknown as Kustomization;
  const out: Resource[] = [];
  for (const r of k.resources ?? []) {
    const p = join(dir, r);
    assert.ok(existsSync(p), `${relative(ROOT, dir)}/kustomization.yaml lists ${r}, which does not exist`);
    if (statSync(p).isDirectory()) out.push(...render(p, secretsDir));
    else for (const d of parseYamlFile(p)) out.push({ ...(d as unknown as Resource), file: relative(ROOT, p) });
  }
  for (const g of k.secretGenerator ?? []) {
    const data: Record<string, string> = {};
    for (const f of g.files ?? []) {
      const [key, path] = f.includes('=') ? f.split('=', 2) as [string, string] : [f.split('/').pop()!, f];
      const source = secretsDir && path.startsWith('secrets/') ? join(secretsDir, path.slice('secrets/'.length)) : join(dir, path);
      data[key] = existsSync(source) ? readFileSync(source, 'utf8') : '';
    }
    for (const l of g.literals ?? []) data[l.split('=')[0]!] = l.slice(l.indexOf('=') + 1);
    out.push({ apiVersion: 'v1', kind: 'Secret', metadata: { name: g.name }, data, file: `${relative(ROOT, dir)}/kustomization.yaml` });
  }
  if (k.namespace) for (const r of out) if (r.kind !== 'Namespace') r.metadata.namespace = k.namespace;
  return out;
}

const one = (rs: readonly Resource[], kind: string, name?: string): Resource => {
  const found = rs.filter((r) => r.kind === kind && (name === undefined || r.metadata.name === name));
  assert.equal(found.length, 1, `exactly one ${kind}${name ? ` ${name}` : ''}`);
  return found[0]!;
};

interface Probe { httpGet: { path: string; port: number | string } }
interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  ports?: Array<{ name?: string; containerPort: number }>;
  env?: Array<{ name: string; value?: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }>;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: { allowPrivilegeEscalation?: boolean; runAsNonRoot?: boolean };
  volumeMounts?: Array<{ name: string; mountPath: string }>;
}
interface PodSpec {
  containers: Container[];
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
  volumes?: Array<{ name: string; secret?: { secretName: string; items?: Array<{ key: string; path: string }> } }>;
}
interface Template { metadata: { labels: Record<string, string>; annotations?: Record<string, string> }; spec: PodSpec }

const podTemplate = (r: Resource): Template => (r.spec as { template: Template }).template;
const container = (r: Resource): Container => {
  const cs = podTemplate(r).spec.containers;
  assert.equal(cs.length, 1, `${r.kind} ${r.metadata.name}: one container`);
  return cs[0]!;
};
const selects = (selector: Record<string, string>, labels: Record<string, string> = {}): boolean =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);

/** The container port a probe or a Service's targetPort names (a number or a port name). */
function resolvePort(c: Container, port: number | string): number {
  if (typeof port === 'number') return port;
  const p = c.ports?.find((x) => x.name === port);
  assert.ok(p, `${c.name}: no container port named ${port}`);
  return p.containerPort;
}

// ---------------------------------------------------------------------------------------------------------
// Dockerfiles

interface Instruction { op: string; args: string; stage: number }

function dockerfile(name: string): Instruction[] {
  const text = readFileSync(join(DOCKER, name), 'utf8').replace(/\\\n/g, ' ');
  const out: Instruction[] = [];
  let stage = -1;
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(line);
    if (!m || line.trimStart().startsWith('#')) continue;
    if (m[1] === 'FROM') stage++;
    out.push({ op: m[1]!, args: m[2]!.trim(), stage });
  }
  return out;
}

/** An exec-form instruction's argument list (`CMD ["a", "b"]`). */
function execForm(ins: Instruction | undefined): string[] {
  assert.ok(ins, 'instruction present');
  const list = JSON.parse(ins.args) as unknown;
  assert.ok(Array.isArray(list) && list.every((x) => typeof x === 'string'), `${ins.op} is in exec form: ${ins.args}`);
  return list as string[];
}

const last = (ins: Instruction[], op: string): Instruction | undefined => ins.filter((i) => i.op === op).pop();
const finalStage = (ins: Instruction[]): Instruction[] => ins.filter((i) => i.stage === Math.max(...ins.map((x) => x.stage)));

/** The image's command after `node --import tsx`: the script and its default flags. */
function imageCommand(ins: Instruction[]): { script: string; flags: string[] } {
  const entry = execForm(last(ins, 'ENTRYPOINT'));
  const cmd = execForm(last(ins, 'CMD'));
  const at = entry.indexOf('node');
  assert.deepEqual(entry.slice(at, at + 3), ['node', '--import', 'tsx'], `ENTRYPOINT runs node with tsx: ${entry.join(' ')}`);
  assert.equal(entry.length, at + 4, 'ENTRYPOINT ends with the script; flags are in CMD');
  return { script: entry[at + 3]!, flags: cmd };
}

/** The repository paths the final stage holds (from the build context or copied from a build stage). */
function copiedPaths(ins: Instruction[], all: Instruction[] = ins): { fromContext: string[]; fromStage: string[] } {
  const fromContext: string[] = [];
  const fromStage: string[] = [];
  for (const i of ins.filter((x) => x.op === 'COPY')) {
    const words = i.args.split(/\s+/);
    const from = words.find((w) => w.startsWith('--from='));
    const paths = words.filter((w) => !w.startsWith('--'));
    paths.pop(); // the destination
    for (const p of paths) (from ? fromStage : fromContext).push(p.replace(/^\/app\/?/, '') || '.');
    if (from) assert.ok(all.some((x) => x.op === 'FROM' && x.args.endsWith(` AS ${from.slice(7)}`)), `COPY ${from}: no such stage`);
  }
  return { fromContext, fromStage };
}

/** Repository files the script imports (esbuild's view; packages excluded). */
async function importClosure(script: string): Promise<string[]> {
  const res = await build({
    entryPoints: [join(ROOT, script)],
    bundle: true,
    write: false,
    platform: 'node',
    format: 'esm',
    packages: 'external',
    metafile: true,
    logLevel: 'silent',
    absWorkingDir: ROOT,
  });
  return Object.keys(res.metafile.inputs);
}

// ---------------------------------------------------------------------------------------------------------

const base = render(join(K8S, 'base'));
const statefulSet = one(base, 'StatefulSet', 'coordinator');
const coordinatorContainer = container(statefulSet);
const nodesDeployment = one(base, 'Deployment', 'nodes');
const mainFlags = declaredFlags('server/main.ts');
const coordinatorArgs = coordinatorContainer.args ?? [];
const coordinatorFlags = parseFlags(coordinatorArgs, mainFlags);
const flag = (name: string): string => {
  const v = coordinatorFlags.get(name);
  assert.ok(v?.length === 1, `the coordinator's args give --${name} once`);
  return v[0]!;
};

describe('manifests', () => {
  test('every YAML file under deploy/k8s parses and each kind has its expected apiVersion', () => {
    const files = yamlFiles(K8S);
    assert.ok(files.length >= 8, `manifests found: ${files.length}`);
    for (const f of files) {
      for (const d of parseYamlFile(f)) {
        const kind = String(d.kind);
        assert.ok(kind in EXPECTED_KINDS, `${relative(ROOT, f)}: unexpected kind ${kind}`);
        assert.equal(d.apiVersion, EXPECTED_KINDS[kind], `${relative(ROOT, f)}: ${kind} apiVersion`);
        assert.ok(kind === 'Kustomization' || (d.metadata as { name?: string } | undefined)?.name, `${relative(ROOT, f)}: ${kind} has a name`);
      }
    }
  });

  test('the kustomizations render the pool: deploy/k8s without CRDs, prometheus-operator/ adds the ServiceMonitor', () => {
    const kinds = (rs: Resource[]): string[] => rs.map((r) => `${r.kind}/${r.metadata.name}`).sort();
    const plain = render(K8S);
    assert.deepEqual(kinds(plain), [
      'Deployment/nodes', 'HorizontalPodAutoscaler/nodes', 'Namespace/execution-node', 'PodDisruptionBudget/coordinator',
      'PodDisruptionBudget/nodes', 'Secret/execution-node-tokens', 'Service/coordinator', 'Service/coordinator-headless',
      'StatefulSet/coordinator',
    ]);
    for (const r of plain) if (r.kind !== 'Namespace') assert.equal(r.metadata.namespace, 'execution-node', `${r.kind}/${r.metadata.name} namespace`);
    const withOperator = render(join(K8S, 'prometheus-operator'));
    assert.deepEqual(kinds(withOperator), [...kinds(plain), 'ServiceMonitor/coordinator'].sort());
  });

  test('the coordinator is one StatefulSet replica with a journal volume, probes, resources and no root', () => {
    const spec = statefulSet.spec as { replicas: number; serviceName: string; volumeClaimTemplates: Array<{ metadata: { name: string }; spec: { accessModes: string[] } }> };
    assert.equal(spec.replicas, 1, 'one coordinator: one SQLite journal');
    assert.equal(one(base, 'Service', spec.serviceName).spec?.clusterIP, 'None', 'serviceName is the headless Service');
    const db = flag('db');
    const claim = spec.volumeClaimTemplates.find((v) => coordinatorContainer.volumeMounts?.some((m) => m.name === v.metadata.name && db.startsWith(`${m.mountPath}/`)));
    assert.ok(claim, `--db ${db} lies on a volumeClaimTemplate's mount`);
    assert.deepEqual(claim.spec.accessModes, ['ReadWriteOnce']);
    assert.equal(coordinatorContainer.livenessProbe?.httpGet.path, '/healthz');
    assert.equal(coordinatorContainer.readinessProbe?.httpGet.path, '/readyz');
    assert.ok(coordinatorContainer.resources?.requests?.cpu && coordinatorContainer.resources.limits?.memory, 'requests and a memory limit');
    for (const r of [statefulSet, nodesDeployment]) {
      assert.equal(podTemplate(r).spec.securityContext?.runAsNonRoot, true, `${r.metadata.name}: runAsNonRoot`);
      assert.notEqual(podTemplate(r).spec.securityContext?.runAsUser, 0);
      assert.equal(container(r).securityContext?.allowPrivilegeEscalation, false);
    }
  });

  test("ports agree: --port, the containerPort, the Services' targetPort, the probes and the scrape annotations", () => {
    const port = Number(flag('port'));
    assert.equal(flag('host'), '0.0.0.0', 'listens beyond loopback in the pod');
    assert.deepEqual(coordinatorContainer.ports?.map((p) => p.containerPort), [port]);
    for (const probe of [coordinatorContainer.livenessProbe, coordinatorContainer.readinessProbe, coordinatorContainer.startupProbe]) {
      assert.ok(probe);
      assert.equal(resolvePort(coordinatorContainer, probe.httpGet.port), port);
    }
    const labels = podTemplate(statefulSet).metadata.labels;
    const services = base.filter((r) => r.kind === 'Service');
    assert.equal(services.length, 2);
    for (const s of services) {
      const spec = s.spec as { selector: Record<string, string>; ports: Array<{ port: number; targetPort: number | string }> };
      assert.ok(selects(spec.selector, labels), `Service ${s.metadata.name} selects the coordinator pod`);
      assert.ok(!selects(spec.selector, podTemplate(nodesDeployment).metadata.labels), `Service ${s.metadata.name} does not select node pods`);
      for (const p of spec.ports) assert.equal(resolvePort(coordinatorContainer, p.targetPort), port, `Service ${s.metadata.name} targetPort`);
    }
    const annotations = podTemplate(statefulSet).metadata.annotations ?? {};
    assert.equal(annotations['prometheus.io/scrape'], 'true');
    assert.equal(Number(annotations['prometheus.io/port']), port);
    assert.equal(annotations['prometheus.io/path'], '/metrics');
  });

  test("the nodes' COORDINATOR_URL is the ClusterIP Service's name and port, and the coordinator allows that origin", () => {
    const env = container(nodesDeployment).env ?? [];
    const url = new URL(env.find((e) => e.name === 'COORDINATOR_URL')?.value ?? '');
    const svc = one(base, 'Service', url.hostname);
    const spec = svc.spec as { clusterIP?: string; ports: Array<{ port: number }> };
    assert.notEqual(spec.clusterIP, 'None', 'not the headless Service');
    assert.ok(spec.ports.some((p) => p.port === Number(url.port)), `Service ${svc.metadata.name} has port ${url.port}`);
    assert.deepEqual(coordinatorFlags.get('allow-origin'), [url.origin]);
    assert.equal((nodesDeployment.spec as { replicas: number }).replicas, 2);
    const hpa = one(base, 'HorizontalPodAutoscaler', 'nodes').spec as { scaleTargetRef: { kind: string; name: string } };
    assert.deepEqual(hpa.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: 'nodes' });
    for (const pdb of base.filter((r) => r.kind === 'PodDisruptionBudget')) {
      const sel = (pdb.spec as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels;
      const targets = [statefulSet, nodesDeployment].filter((w) => selects(sel, podTemplate(w).metadata.labels));
      assert.equal(targets.length, 1, `PodDisruptionBudget ${pdb.metadata.name} covers one workload`);
    }
  });

  test('the ServiceMonitor selects only the ClusterIP Service and scrapes /metrics with the refiner token', () => {
    const all = render(join(K8S, 'prometheus-operator'));
    const sm = one(all, 'ServiceMonitor').spec as {
      selector: { matchLabels: Record<string, string> };
      endpoints: Array<{ port: string; path: string; authorization: { type: string; credentials: { name: string; key: string } } }>;
    };
    const selected = all.filter((r) => r.kind === 'Service' && selects(sm.selector.matchLabels, r.metadata.labels));
    assert.deepEqual(selected.map((s) => s.metadata.name), ['coordinator']);
    const ports = (selected[0]!.spec as { ports: Array<{ name: string }> }).ports.map((p) => p.name);
    for (const e of sm.endpoints) {
      assert.ok(ports.includes(e.port), `endpoint port ${e.port} is a port name of the Service`);
      assert.equal(e.path, '/metrics');
      assert.equal(e.authorization.type, 'Bearer');
      assert.deepEqual(e.authorization.credentials, { name: 'execution-node-tokens', key: 'refiner-token' });
    }
  });
});

describe('the coordinator as the manifests run it', () => {
  let secrets: string;
  let secretsCleanup: () => void;
  let coordinator: RunningCoordinator;
  let port: number;
  const token = (name: string): string => readFileSync(join(secrets, name), 'utf8');

  before(async () => {
    secrets = mkdtempSync(join(tmpdir(), 'deploy-secrets-'));
    const work = mkdtempSync(join(tmpdir(), 'deploy-data-'));
    secretsCleanup = () => {
      rmSync(secrets, { recursive: true, force: true });
      rmSync(work, { recursive: true, force: true });
    };
    const gen = spawnSync('bash', [join(K8S, 'base', 'secrets', 'generate.sh'), secrets], { encoding: 'utf8' });
    assert.equal(gen.status, 0, gen.stderr);
    await ensurePageBuilt(); // a fresh clone has no dist/ yet (the e2e tests build it too, under one lock)
    port = await freePort();
    // The StatefulSet's args, with the paths of the pod's volumes moved into a temp dir and the port made free
    // (also in --allow-origin, which names the Service's port); run from the repository root as from WORKDIR.
    const origin = new URL(flag('allow-origin'));
    origin.port = String(port);
    const args = withFlags(coordinatorArgs, {
      host: '127.0.0.1',
      port: String(port),
      db: join(work, 'coordinator.db'),
      auth: join(secrets, 'auth.json'),
      'allow-origin': origin.origin,
    });
    coordinator = await startCoordinator(args);
  });
  after(async () => {
    const code = await coordinator?.stop();
    secretsCleanup?.();
    assert.equal(code, 0, 'stops cleanly on SIGTERM');
  });

  test('every probe path answers 200 on the probed port', async () => {
    for (const probe of [coordinatorContainer.livenessProbe, coordinatorContainer.readinessProbe, coordinatorContainer.startupProbe]) {
      const res = await fetch(`http://127.0.0.1:${port}${probe!.httpGet.path}`);
      assert.equal(res.status, 200, `${probe!.httpGet.path}`);
      await res.body?.cancel();
    }
    const page = await fetch(`${coordinator.url}/`);
    assert.equal(page.status, 200, '--static dist (relative) serves the page');
    assert.match(await page.text(), /<html/i);
  });

  test("generate.sh's tokens: auth.json is valid, the Secret has every key the pods and the ServiceMonitor name", async () => {
    const auth = Auth.fromFile(join(secrets, 'auth.json'));
    assert.equal(auth.isOpen, false);
    assert.ok(Auth.has(auth.verify(token('admin-token')), 'admin'), 'admin-token is the admin');
    assert.ok(Auth.has(auth.verify(token('refiner-token')), 'refiner') && !Auth.has(auth.verify(token('refiner-token')), 'admin'));
    assert.doesNotMatch(readFileSync(join(secrets, 'auth.json'), 'utf8'), new RegExp(token('admin-token')), 'auth.json holds digests only');
    const secret = one(render(join(K8S, 'base'), secrets), 'Secret', 'execution-node-tokens');
    const keys = Object.keys(secret.data ?? {});
    const referenced: Array<{ name: string; key: string }> = [];
    for (const w of [statefulSet, nodesDeployment]) {
      for (const v of podTemplate(w).spec.volumes ?? []) for (const item of v.secret?.items ?? []) referenced.push({ name: v.secret!.secretName, key: item.key });
      for (const e of container(w).env ?? []) if (e.valueFrom?.secretKeyRef) referenced.push(e.valueFrom.secretKeyRef);
    }
    referenced.push({ name: 'execution-node-tokens', key: 'refiner-token' });
    assert.ok(referenced.length >= 3);
    for (const r of referenced) {
      assert.equal(r.name, secret.metadata.name);
      assert.ok(keys.includes(r.key), `Secret key ${r.key}`);
      assert.ok(secret.data![r.key]!.length > 0, `generate.sh wrote ${r.key}`);
    }
    // The refiner token scrapes, the node token does not; none at all is refused.
    const metrics = (t?: string): Promise<Response> => fetch(`${coordinator.url}/metrics`, t ? { headers: { authorization: `Bearer ${t}` } } : {});
    const scraped = await metrics(token('refiner-token'));
    const text = await scraped.text();
    assert.equal(scraped.status, 200, `GET /metrics with the refiner token: ${text.slice(0, 300)}`);
    assert.match(text, /^coordinator_/m);
    assert.equal((await metrics(token('node-token'))).status, 403);
    assert.equal((await metrics()).status, 401);
    // The node token joins (NODE_TOKEN of the node pods).
    const node = await TestNode.connect(coordinator.url, { token: token('node-token') });
    assert.ok(node.id);
    node.ws.close();
  });

  test("a headless Chromium node joins through the Service's name, as the node Deployment runs it", async () => {
    const url = new URL(container(nodesDeployment).env!.find((e) => e.name === 'COORDINATOR_URL')!.value!);
    url.port = String(port);
    // The cluster's DNS, here: the Service's name resolves to the coordinator.
    const nodes = await launchNodes({
      url: url.origin,
      count: 1,
      token: token('node-token'),
      args: [`--host-resolver-rules=MAP ${url.hostname} 127.0.0.1`],
      log: () => undefined,
      timeoutMs: 60_000,
    });
    try {
      const [secure, gpu] = await nodes.pages[0]!.evaluate(() => [window.isSecureContext, 'gpu' in navigator]);
      assert.equal(secure, true, 'the page is a secure context over plain http by the Service name');
      assert.equal(gpu, true, 'WebGPU is offered');
      assert.equal(nodes.nodeIds.length, 1);
    } finally {
      await nodes.close();
    }
  });
});

describe('images', () => {
  const coordinatorImage = dockerfile('coordinator.Dockerfile');
  const nodeImage = dockerfile('node.Dockerfile');
  const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));

  test('both build on Debian bookworm; the node image installs Debian\'s chromium; neither runs as root', () => {
    for (const ins of [coordinatorImage, nodeImage]) {
      for (const f of ins.filter((i) => i.op === 'FROM')) assert.match(f.args, /^node:20-bookworm-slim\b/);
      assert.equal(last(finalStage(ins), 'USER')?.args, 'node');
    }
    assert.ok(finalStage(nodeImage).some((i) => i.op === 'RUN' && /apt-get install[^&]*\bchromium\b/.test(i.args)));
    assert.ok(finalStage(coordinatorImage).some((i) => i.op === 'VOLUME' && i.args === '/data'));
    assert.ok(coordinatorImage.some((i) => i.op === 'RUN' && /npm run build/.test(i.args)), 'the page is built in the image');
  });

  test('COPY sources exist in the repository (or are the build outputs) and are not dockerignored', () => {
    for (const ins of [coordinatorImage, nodeImage]) {
      const { fromContext, fromStage } = copiedPaths(ins);
      for (const p of fromContext) {
        assert.ok(existsSync(join(ROOT, p)), `COPY ${p}: exists`);
        assert.ok(!ignored.includes(p), `COPY ${p}: not in .dockerignore`);
      }
      for (const p of fromStage) assert.ok(existsSync(join(ROOT, p)) || ['node_modules', 'dist'].includes(p), `COPY --from … ${p}: exists or is built`);
    }
    for (const secret of ['deploy/k8s/base/secrets/*']) assert.ok(ignored.includes(secret), 'tokens never enter the build context');
  });

  test("the coordinator image's command is the StatefulSet's: same script, flags it declares, HEALTHCHECK on /healthz", () => {
    const { script, flags } = imageCommand(coordinatorImage);
    assert.equal(script, 'server/main.ts');
    const image = parseFlags(flags, mainFlags);
    for (const [name, values] of image) assert.deepEqual(coordinatorFlags.get(name), values, `--${name}: the StatefulSet's args keep the image's`);
    assert.equal(image.get('db')?.[0], flag('db'));
    const health = last(coordinatorImage, 'HEALTHCHECK')!.args;
    assert.ok(health.includes(`http://127.0.0.1:${image.get('port')![0]}/healthz`), health);
    assert.ok(finalStage(coordinatorImage).some((i) => i.op === 'EXPOSE' && i.args === image.get('port')![0]));
  });

  test("the node image's command is scripts/nodes.ts with flags it declares, as the Deployment runs it", () => {
    const { script, flags } = imageCommand(nodeImage);
    assert.equal(script, 'scripts/nodes.ts');
    const declared = declaredFlags('scripts/nodes.ts');
    parseFlags(flags, declared);
    parseFlags(container(nodesDeployment).args ?? [], declared);
    const env = (container(nodesDeployment).env ?? []).map((e) => e.name);
    const src = readFileSync(join(ROOT, 'scripts', 'nodes.ts'), 'utf8');
    for (const name of env) assert.ok(src.includes(`process.env.${name}`), `scripts/nodes.ts reads ${name}`);
  });

  test('each image holds every repository file its command imports', async () => {
    for (const [ins, script] of [[coordinatorImage, 'server/main.ts'], [nodeImage, 'scripts/nodes.ts']] as const) {
      const { fromContext, fromStage } = copiedPaths(finalStage(ins), ins);
      const held = [...fromContext, ...fromStage];
      for (const file of await importClosure(script)) {
        assert.ok(held.some((p) => p === '.' || file === p || file.startsWith(`${p}/`)), `${script} imports ${file}; the image copies ${held.join(', ')}`);
      }
      // tsconfig.json beside the sources: tsx reads it.
      assert.ok(held.includes('tsconfig.json'), 'tsconfig.json is copied');
      assert.ok(existsSync(join(ROOT, dirname(script))));
    }
  });
});

const kubectl = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0;

test('kubectl kustomize renders the same resources as the checks above', { skip: kubectl ? false : 'kubectl is not installed' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'deploy-kustomize-'));
  try {
    cpSync(K8S, join(dir, 'k8s'), { recursive: true });
    // Fresh tokens in the copy (never the checkout's own, which may be an operator's real ones).
    rmSync(join(dir, 'k8s', 'base', 'secrets'), { recursive: true, force: true });
    cpSync(join(K8S, 'base', 'secrets', 'generate.sh'), join(dir, 'k8s', 'base', 'secrets', 'generate.sh'));
    assert.equal(spawnSync('bash', [join(dir, 'k8s', 'base', 'secrets', 'generate.sh')], { encoding: 'utf8' }).status, 0);
    for (const target of ['', 'prometheus-operator']) {
      const res = spawnSync('kubectl', ['kustomize', join(dir, 'k8s', target)], { encoding: 'utf8' });
      assert.equal(res.status, 0, res.stderr);
      const rendered = parseAllDocuments(res.stdout).map((d) => d.toJS() as Resource);
      const ids = (rs: Resource[]): string[] => rs.map((r) => `${r.apiVersion} ${r.kind} ${r.metadata.namespace ?? ''}/${r.metadata.name}`).sort();
      assert.deepEqual(ids(rendered), ids(render(join(K8S, target), join(dir, 'k8s', 'base', 'secrets'))), target || 'deploy/k8s');
      const secret = rendered.find((r) => r.kind === 'Secret')!;
      assert.deepEqual(Object.keys(secret.data ?? {}).sort(), ['auth.json', 'node-token', 'refiner-token']);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
