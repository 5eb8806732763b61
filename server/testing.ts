/**
 * Test kit for the coordinator's tests: a node that speaks the real WebSocket
 * protocol (the `ws` package, as a browser node would), WASM modules built from
 * WAT, and a temp directory per test file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import wabtInit from 'wabt';
import { WebSocket } from 'ws';
import { newTaskId, type Assignment, type Capabilities, type CoordinatorMessage, type ModelCapability, type NodeId, type NodeMetrics } from '../shared';
import type { NewTask } from './journal';
import { linearShape } from '../worker/model/config';
import { loadModelFolder } from '../worker/model/folder';
import { loraKey, saveAdapter, type LoraPair } from '../worker/model/peft';

export function tempDir(prefix = 'coord-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

let wabt: Awaited<ReturnType<typeof wabtInit>> | null = null;
export async function wat(source: string): Promise<Uint8Array<ArrayBuffer>> {
  wabt ??= await wabtInit();
  const mod = wabt.parseWat('agent.wat', source);
  try {
    return Uint8Array.from(mod.toBinary({}).buffer);
  } finally {
    mod.destroy();
  }
}

/** A minimal WASI command: exports memory and _start, imports one WASI function. */
export const HELLO_WAT = `(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")))`;

export const FORBIDDEN_WAT = `(module
  (import "env" "fetch" (func $f))
  (memory (export "memory") 1)
  (func (export "_start")))`;

export const NO_START_WAT = `(module (memory (export "memory") 1))`;

export interface NodeOptions {
  name?: string;
  kinds?: Capabilities['kinds'];
  maxConcurrent?: number;
  /** Advertised `queueDepth`; absent by default (the coordinator's prefetch applies). */
  queueDepth?: number;
  models?: string[];
  webgpu?: boolean;
  nodeId?: string;
  /** The resume secret of `nodeId` (a TestNode's `secret`); without it the coordinator gives a new id. */
  secret?: string;
  /** Join token sent in hello (`token`). */
  token?: string;
  /** Headers of the upgrade request (`origin`, `authorization`). */
  headers?: Record<string, string>;
  /** Advertised `inference.maxSequences` (generate tasks held at once); absent: no inference (no generate tasks). */
  sequences?: number;
  /** Advertised `inference.models` (with `sequences`): what the node has loaded, with which adapters. */
  inferenceModels?: ModelCapability[];
  /** Advertised `inference.memoryBudgetBytes` (with `sequences`). */
  memoryBudgetBytes?: number;
  /** Advertised `jspi` (runs agents that call its model). */
  jspi?: boolean;
}

export const IDLE_METRICS: NodeMetrics = { running: 0, workers: 1, tasksDone: 0, tasksFailed: 0 };

/** A node over a real socket. Messages are queued; `next` waits for one of a type. */
export class TestNode {
  readonly ws: WebSocket;
  id = '' as NodeId;
  /** The resume secret from welcome. */
  secret = '';
  readonly inbox: CoordinatorMessage[] = [];
  readonly #waiters: Array<{ type: string; resolve(m: CoordinatorMessage): void }> = [];
  readonly closed: Promise<{ code: number; reason: string }>;

  private constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data)) as CoordinatorMessage;
      const i = this.#waiters.findIndex((w) => w.type === msg.type);
      if (i >= 0) this.#waiters.splice(i, 1)[0]!.resolve(msg);
      else this.inbox.push(msg);
    });
    this.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: String(reason) })));
  }

  static async open(baseUrl: string, headers: Record<string, string> = {}): Promise<TestNode> {
    const ws = new WebSocket(`${baseUrl.replace(/^http/, 'ws')}/v1/nodes/ws`, { headers });
    const node = new TestNode(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return node;
  }

  static async connect(baseUrl: string, opts: NodeOptions = {}): Promise<TestNode> {
    const node = await TestNode.open(baseUrl, opts.headers);
    node.send({
      type: 'hello',
      protocol: 1,
      ...(opts.nodeId ? { nodeId: opts.nodeId } : {}),
      ...(opts.secret ? { secret: opts.secret } : {}),
      ...(opts.token ? { token: opts.token } : {}),
      name: opts.name ?? 'test-node',
      capabilities: capabilities(opts),
    });
    const welcome = await node.next('welcome');
    node.id = welcome.nodeId;
    node.secret = welcome.secret;
    return node;
  }

  send(msg: unknown): void {
    this.ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  }

  /** The next message of this type (already received or still to come), or an error after timeoutMs. */
  next<T extends CoordinatorMessage['type']>(type: T, timeoutMs = 5_000): Promise<Extract<CoordinatorMessage, { type: T }>> {
    const i = this.inbox.findIndex((m) => m.type === type);
    if (i >= 0) return Promise.resolve(this.inbox.splice(i, 1)[0] as Extract<CoordinatorMessage, { type: T }>);
    return new Promise((resolve, reject) => {
      const waiter = {
        type,
        resolve: (m: CoordinatorMessage) => {
          clearTimeout(timer);
          resolve(m as Extract<CoordinatorMessage, { type: T }>);
        },
      };
      const timer = setTimeout(() => {
        const k = this.#waiters.indexOf(waiter);
        if (k >= 0) this.#waiters.splice(k, 1);
        reject(new Error(`no ${type} message within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  /** Collects assignments until there are `n` of them. */
  async assignments(n: number, timeoutMs = 5_000): Promise<Assignment[]> {
    const out: Assignment[] = [];
    const until = Date.now() + timeoutMs;
    while (out.length < n) {
      const left = until - Date.now();
      if (left <= 0) throw new Error(`got ${out.length} of ${n} assignments within ${timeoutMs} ms`);
      const msg = await this.next('task.assign', left);
      out.push(...msg.tasks);
    }
    return out;
  }

  succeed(tasks: readonly Assignment[], result: (a: Assignment) => unknown = () => ({ exitCode: 0, output: 'ok' })): void {
    this.send({ type: 'task.result', results: tasks.map((a) => ({ taskId: a.taskId, leaseId: a.leaseId, ok: true, result: result(a) })) });
  }

  fail(tasks: readonly Assignment[], code: string, message = 'failed in test'): void {
    this.send({
      type: 'task.result',
      results: tasks.map((a) => ({ taskId: a.taskId, leaseId: a.leaseId, ok: false, error: { code, name: 'AppError', message } })),
    });
  }

  heartbeat(leases: readonly string[], metrics: Partial<NodeMetrics> = {}): void {
    this.send({ type: 'heartbeat', leases, metrics: { ...IDLE_METRICS, ...metrics } });
  }

  async close(): Promise<void> {
    if (this.ws.readyState === this.ws.CLOSED) return;
    this.ws.close();
    await this.closed;
  }
}

export function capabilities(opts: NodeOptions = {}): Capabilities {
  return {
    kinds: opts.kinds ?? ['agent'],
    maxConcurrent: opts.maxConcurrent ?? 4,
    ...(opts.queueDepth !== undefined ? { queueDepth: opts.queueDepth } : {}),
    webgpu: opts.webgpu
      ? {
          vendor: 'test',
          architecture: 'swiftshader',
          description: 'test adapter',
          isFallbackAdapter: true,
          features: [],
          maxBufferSize: 1 << 30,
          maxStorageBufferBindingSize: 1 << 30,
        }
      : null,
    models: opts.models ?? [],
    adapters: [],
    ...(opts.jspi !== undefined ? { jspi: opts.jspi } : {}),
    ...(opts.sequences !== undefined
      ? { inference: { maxSequences: opts.sequences, models: opts.inferenceModels ?? [], ...(opts.memoryBudgetBytes !== undefined ? { memoryBudgetBytes: opts.memoryBudgetBytes } : {}) } }
      : {}),
  };
}

/**
 * The coordinators a test file starts and the test nodes opened on each: `track` one as it starts (its
 * `connect` and `open` open nodes that are tracked too), `closeAll` in the file's `after` closes every node,
 * then its coordinator.
 */
export class OpenCoordinators {
  readonly #open: Array<{ c: { close(): Promise<void> }; nodes: TestNode[] }> = [];

  track(c: { url: string; close(): Promise<void> }) {
    const nodes: TestNode[] = [];
    this.#open.push({ c, nodes });
    const keep = (n: TestNode): TestNode => {
      nodes.push(n);
      return n;
    };
    return {
      nodes,
      /** A node that sent hello and got its welcome. */
      connect: async (o: NodeOptions = {}) => keep(await TestNode.connect(c.url, o)),
      /** A socket that sent nothing yet (upgrade `headers` as given). */
      open: async (headers: Record<string, string> = {}) => keep(await TestNode.open(c.url, headers)),
    };
  }

  async closeAll(): Promise<void> {
    for (const o of this.#open) {
      for (const n of o.nodes) await n.close();
      await o.c.close();
    }
  }
}

/** Polls `check` until it answers a value other than undefined/false (bounded). */
export async function until<T>(check: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 5_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export interface ApiAnswer {
  status: number;
  // Tests read answers loosely.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  headers: Headers;
}

/** A request a `receiver` recorded. */
export interface ReceivedRequest {
  url: string;
  headers: IncomingMessage['headers'];
  body: string;
}

/**
 * A real HTTP server on 127.0.0.1 (a webhook target, an OTLP collector) that records each request, its
 * body read whole, and answers with `answer(n, res)` (n from 1; default 200 `ok`).
 */
export async function receiver(
  answer: (n: number, res: ServerResponse) => void = (_n, res) => res.end('ok'),
): Promise<{ server: Server; port: number; url: string; hits: ReceivedRequest[]; close(): Promise<void> }> {
  const hits: ReceivedRequest[] = [];
  const server = createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => (body += d));
    req.on('end', () => {
      hits.push({ url: req.url ?? '', headers: req.headers, body });
      answer(hits.length, res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { server, port, url: `http://127.0.0.1:${port}`, hits, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** A small fetch wrapper for tests: JSON in (`json`), JSON out when the body parses; `token`: sent as a bearer token. */
export function apiClient(baseUrl: string, token?: string): (path: string, init?: RequestInit & { json?: unknown }) => Promise<ApiAnswer> {
  return async (path, init = {}) => {
    const headers = new Headers(init.headers);
    if (token !== undefined && !headers.has('authorization')) headers.set('authorization', `Bearer ${token}`);
    let body = init.body;
    if (init.json !== undefined) {
      headers.set('content-type', 'application/json');
      body = JSON.stringify(init.json);
    }
    const res = await fetch(baseUrl + path, { ...init, headers, body });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // not JSON
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
}

/** A clock tests move by hand. */
export class ManualClock {
  t: number;
  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }
  now(): number {
    return this.t;
  }
  advance(ms: number): void {
    this.t += ms;
  }
}

/**
 * A small adapter for the model folder at `baseDir` (rank 2 on q_proj, constant weights; `r` makes it as large as
 * a test needs), written by the project's trainer's writer (saveAdapter: the engine's fingerprint of the base in
 * its metadata).
 */
export async function trainedAdapterFiles(baseDir: string, base: string, r = 2): Promise<{ configJson: string; safetensors: Uint8Array; fingerprint: string }> {
  const folder = await loadModelFolder((p) => readFile(join(baseDir, ...p.split('/'))).then((b) => new Uint8Array(b)));
  const weights = new Map<string, LoraPair>();
  for (let i = 0; i < folder.config.numLayers; i++) {
    const s = linearShape(folder.config, 'q_proj');
    weights.set(loraKey(i, 'q_proj'), { a: new Float32Array(r * s.in).fill(0.01), b: new Float32Array(s.out * r).fill(0.02) });
  }
  const files = saveAdapter({ settings: { r, alpha: 4, dropout: 0, targetModules: ['q_proj'] }, baseModel: base, baseFingerprint: folder.fingerprint, weights }, folder.config);
  return { ...files, fingerprint: folder.fingerprint };
}

/** A coordinator process (server/main.ts with `args`), answered once it printed the URL it listens on. */
export async function spawnCoordinator(args: readonly string[]): Promise<{ child: ChildProcess; url: string; exited: Promise<unknown> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'main.ts'), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((resolve) => child.once('exit', resolve));
  const url = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      const m = /listening on (\S+)/.exec(line);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (code) => reject(new Error(`coordinator exited early (${code})`)));
  });
  return { child, url, exited };
}

/** The admin token and the node join token that main.ts (run without --auth) wrote to auth.json in `dataDir`. */
export function localTokens(dataDir: string): { admin: string; join: string } {
  const list = (JSON.parse(readFileSync(join(dataDir, 'auth.json'), 'utf8')) as { tokens: { token: string; roles: string[] }[] }).tokens;
  return { admin: list.find((t) => t.roles.includes('admin'))!.token, join: list.find((t) => t.roles.includes('node'))!.token };
}

/** A task as the journal takes it (server/journal.ts NewTask): an agent task, `extra` over it. */
export function journalTask(extra: Partial<NewTask> = {}): NewTask {
  return {
    id: newTaskId(),
    kind: 'agent',
    priority: 5,
    maxAttempts: 3,
    deadline: null,
    idempotencyKey: null,
    specHash: null,
    tenant: null,
    webhook: null,
    moduleHash: 'a'.repeat(64),
    moduleSize: 10,
    model: null,
    payload: { agent: 'x' },
    labels: null,
    ...extra,
  };
}
