/**
 * Agent leases: fetch the module once (cached by hash), queue the lease on the node until a worker
 * is free, run it in the agent runtime, and turn its outcome into the wire result.
 */
import {
  AppError,
  DEFAULT_AGENT_LIMITS,
  base64ToBytes,
  checkAgentPayload,
  inlineBytes,
  serializeError,
  type AgentLimits,
  type AgentPayload,
  type Assignment,
  type ErrorCode,
  type ErrorInfo,
  type MountPlan,
} from '../../shared';
import type { AgentMount, AgentRunOutcome, AgentRunRequest, AgentRuntime, ModelBridge } from '../../worker';
import { hasJspi } from '../../worker/agents/model-import';
import type { InferenceRuntime } from '../../worker/inference';
import { fetchBlob } from './blobs';
import { ModuleLoader, type FetchLike } from './modules';
import { addSpan, type Lease, type RunnerHost, type RunOutcome, type TaskRunner } from './runner';

const STDERR_TAIL = 1024;
// Shared by every request that has none of these (the runtime only reads them).
const EMPTY = new Uint8Array(0);
const NO_ARGS: string[] = [];
const NO_ENV: Record<string, string> = {};
const NO_FILES: Record<string, Uint8Array> = {};

/** Bytes of a blob named in a mount (`sha256:<hex>`), verified; web/node/blobs.ts `fetchBlob` by default. */
export type BlobResolver = (sha256: string) => Promise<Uint8Array>;

/** A leased agent task waiting for a free worker. */
interface Pending {
  a: Assignment;
  lease: Lease;
  hash: string;
  /** Set once the module was fetched again after the runtime evicted it. */
  refetched?: boolean;
  /** performance.now() when the run was handed to the runtime (traced leases only). */
  runAt?: number;
  /** The payload's blobs, fetched before the run (null: none named). */
  blobs?: Map<string, Uint8Array> | null;
}

/** The node's model as one agent run calls it, and the end of its calls. */
interface RunModel {
  bridge: ModelBridge;
  /** The run ended: calls still in flight are cancelled (a run stopped at its deadline leaves no sequence decoding). */
  close(): void;
}

export class AgentRunner implements TaskRunner {
  readonly kind = 'agent' as const;
  readonly #runtime: AgentRuntime;
  readonly #host: RunnerHost;
  readonly #loader: ModuleLoader;
  readonly #blob: BlobResolver;
  readonly #inference: InferenceRuntime | null;
  readonly #encoder = new TextEncoder();
  /** Runs handed to the runtime at once: one per worker, so its spawn times are not queue waits. */
  readonly slots: number;
  #queue: Pending[] = [];
  #queueHead = 0;
  #inFlight = 0;

  /** Fetches modules from another coordinator of the pool from now on (the node moved to it). */
  setBase(httpBase: string): void {
    this.#loader.setBase(httpBase);
  }

  constructor(runtime: AgentRuntime, host: RunnerHost, httpBase: string, fetch?: FetchLike, blob: BlobResolver = fetchBlob, inference: InferenceRuntime | null = null) {
    this.#runtime = runtime;
    this.#host = host;
    this.#loader = new ModuleLoader(runtime, httpBase, fetch);
    this.#blob = blob;
    this.#inference = inference;
    this.slots = Math.max(1, runtime.stats().workers);
  }

  get running(): number {
    return this.#inFlight;
  }

  get waiting(): number {
    return this.#queue.length - this.#queueHead;
  }

  /** Module hashes the runtime still holds (advertised so the router can prefer this node). */
  get moduleHashes(): string[] {
    return this.#loader.hashes;
  }

  get moduleFetches(): number {
    return this.#loader.fetches;
  }

  /** Whether agents that call the node's model run here: JSPI in this engine and an inference runtime (advertised as `jspi`). */
  get modelAgents(): boolean {
    return this.#inference !== null && hasJspi();
  }

  start(a: Assignment, lease: Lease): void {
    const hash = a.module?.sha256;
    if (!hash) return this.#fail(lease, 'PROTOCOL_ERROR', 'An agent assignment came without its module hash.');
    if ((a.payload as AgentPayload).model !== undefined && !this.modelAgents) {
      // Retryable: the coordinator sends it to a node that advertises `jspi` (this one does not).
      return this.#fail(lease, 'AGENT_JSPI_UNSUPPORTED', this.#inference
        ? 'The agent calls the node\'s model, and this engine has no JavaScript Promise Integration (WebAssembly.Suspending) to suspend it; the task goes to a node that has it.'
        : 'The agent calls the node\'s model, and this node has no inference runtime; the task goes to a node that has one.');
    }
    const refs = blobRefs(a.payload as AgentPayload);
    if (refs) {
      // Blobs first (cached by the node like modules), then the module; either failing ends the lease.
      Promise.all([...refs].map(async (ref) => [ref, await this.#blob(ref)] as const))
        .then(async (got) => {
          if (!this.#loader.has(hash)) await this.#loader.ensure(hash);
          this.#enqueue({ a, lease, hash, blobs: new Map(got) });
        })
        .catch((err: unknown) => this.#host.finish(lease, { ok: false, error: serializeError(err) }));
      return;
    }
    if (this.#loader.has(hash)) {
      this.#enqueue({ a, lease, hash });
    } else {
      this.#loader.ensure(hash).then(
        () => this.#enqueue({ a, lease, hash }),
        (err: unknown) => this.#host.finish(lease, { ok: false, error: serializeError(err) }),
      );
    }
  }

  cancel(lease: Lease): void {
    const reason = lease.cancelled ?? 'cancelled by the coordinator';
    if (lease.running) this.#runtime.stop(lease.taskId, reason);
    else this.#fail(lease, 'CANCELLED', reason); // still queued (or fetching its module): end it now
  }

  #enqueue(p: Pending): void {
    this.#queue.push(p);
    this.#pump();
  }

  /** Starts queued runs while a worker is free. */
  #pump(): void {
    while (this.#inFlight < this.slots && this.#queueHead < this.#queue.length) {
      const p = this.#queue[this.#queueHead]!;
      this.#queue[this.#queueHead++] = undefined as unknown as Pending;
      if (p.lease.cancelled !== null || p.lease.ended) continue; // ended while it waited
      this.#start(p);
    }
    if (this.#queueHead === this.#queue.length) {
      this.#queue = [];
      this.#queueHead = 0;
    } else if (this.#queueHead > 1024 && this.#queueHead * 2 > this.#queue.length) {
      this.#queue = this.#queue.slice(this.#queueHead);
      this.#queueHead = 0;
    }
  }

  #start(p: Pending): void {
    const { a, lease, hash } = p;
    if (a.deadline !== null && a.deadline <= Date.now()) {
      return this.#fail(lease, 'DEADLINE_EXCEEDED', 'The task passed its deadline while it waited for a worker.');
    }
    // The runtime's module cache is bounded: a module can be evicted while its task waits here.
    if (!this.#loader.has(hash)) return this.#refetch(p);
    let req: AgentRunRequest;
    try {
      req = this.#request(a, hash, p.blobs ?? null);
    } catch (err) {
      return this.#host.finish(lease, { ok: false, error: serializeError(err) });
    }
    const payload = a.payload as AgentPayload;
    const model = payload.model !== undefined ? this.#model(a, payload, req.limits.timeoutMs) : null;
    lease.running = true;
    this.#inFlight++;
    if (lease.trace) p.runAt = performance.now();
    this.#runtime.run(req, model?.bridge).then(
      (outcome) => {
        model?.close();
        this.#ran(p, outcome);
      },
      (err: unknown) => {
        model?.close();
        this.#ran(p, { ok: false, error: serializeError(err) });
      },
    );
  }

  /**
   * The model calls of one run: greedy generations of the payload's model (and adapter) in the node's inference
   * runtime, batched there with every other sequence, each stopped at the run's deadline (AGENT_TIMEOUT then).
   */
  #model(a: Assignment, p: AgentPayload, timeoutMs: number): RunModel {
    const inference = this.#inference!;
    const deadline = Math.min(a.deadline ?? Infinity, Date.now() + timeoutMs);
    const live = new Set<string>();
    let n = 0;
    let closed = false;
    const timeout = (): { ok: false; error: ErrorInfo } => ({
      ok: false,
      error: serializeError(new AppError('AGENT_TIMEOUT', 'The agent\'s run passed its wall-clock deadline while the model worked; raise limits.timeoutMs or ask the model less.')),
    });
    const bridge: ModelBridge = {
      generate: async ({ prompt, maxTokens }) => {
        if (closed || Date.now() >= deadline) return timeout();
        const id = `${a.taskId}~model${n++}`;
        live.add(id);
        try {
          const out = await inference.generate({ taskId: id, model: p.model!, ...(p.adapter !== undefined ? { adapter: p.adapter } : {}), prompt, maxNewTokens: maxTokens, temperature: 0, deadline });
          if (!out.ok) return out.error.code === 'DEADLINE_EXCEEDED' ? timeout() : { ok: false, error: out.error };
          return { ok: true, text: out.result.text, promptTokens: out.result.usage.promptTokens, completionTokens: out.result.usage.completionTokens };
        } catch (err) {
          return { ok: false, error: serializeError(err) };
        } finally {
          live.delete(id);
        }
      },
    };
    return {
      bridge,
      close: () => {
        closed = true;
        for (const id of live) inference.cancel(id, 'the agent run that made this model call ended');
      },
    };
  }

  #ran(p: Pending, outcome: AgentRunOutcome): void {
    this.#inFlight--;
    p.lease.running = false;
    if (!outcome.ok && outcome.error.code === 'AGENT_MODULE_MISSING' && !p.refetched) {
      // Evicted between the check in #start and the run: fetch it once more rather than spend an attempt.
      this.#pump();
      return this.#refetch(p);
    }
    this.#pump();
    if (p.lease.trace && p.runAt !== undefined) traceRun(p.lease, p.runAt, outcome);
    this.#host.finish(p.lease, toOutcome(outcome, p.lease));
  }

  #refetch(p: Pending): void {
    p.refetched = true;
    this.#loader.ensure(p.hash).then(
      () => this.#enqueue(p),
      (err: unknown) => this.#host.finish(p.lease, { ok: false, error: serializeError(err) }),
    );
  }

  /**
   * The run request of an assignment. A plain payload (input, args, env, files) takes the short
   * path it always took; one with the issue-8 fields is checked again here (checkAgentPayload: a
   * coordinator is not trusted with mount paths, base64 or sizes) and its mounts decoded.
   */
  #request(a: Assignment, hash: string, blobs: Map<string, Uint8Array> | null): AgentRunRequest {
    const p = a.payload as AgentPayload;
    const limits: AgentLimits = p.limits ? { ...DEFAULT_AGENT_LIMITS, ...p.limits } : DEFAULT_AGENT_LIMITS;
    const plain = p.stdin === undefined && p.stdout === undefined && p.mounts === undefined && p.okExitCodes === undefined
      && p.injectEnv === undefined && p.argv0 === undefined && p.modelCalls === undefined;
    if (plain) {
      let files = NO_FILES;
      if (p.files) {
        files = {};
        for (const k of Object.keys(p.files)) files[k] = this.#encoder.encode(p.files[k]);
      }
      return {
        taskId: a.taskId,
        agentName: p.agent,
        moduleHash: hash,
        stdin: p.input === undefined ? EMPTY : this.#encoder.encode(JSON.stringify(p.input)),
        args: p.args ?? NO_ARGS,
        env: p.env ?? NO_ENV,
        files,
        limits,
      };
    }
    const plans = checkAgentPayload(p);
    let stdin: Uint8Array = EMPTY;
    if (p.input !== undefined) stdin = this.#encoder.encode(JSON.stringify(p.input));
    else if (p.stdin) stdin = 'text' in p.stdin ? this.#encoder.encode(p.stdin.text) : base64ToBytes(p.stdin.base64)!;
    const files: Record<string, Uint8Array> = {};
    const mounts: AgentMount[] = [];
    for (const plan of plans) {
      if (plan.path === '/input' && p.files) {
        for (const [name, content] of plan.files) files[name] = inlineBytes(content)!;
        continue;
      }
      mounts.push(toMount(plan, blobs));
    }
    return {
      taskId: a.taskId,
      agentName: p.agent,
      moduleHash: hash,
      stdin,
      args: p.args ?? NO_ARGS,
      ...(p.argv0 !== undefined ? { argv0: p.argv0 } : {}),
      env: p.env ?? NO_ENV,
      ...(p.injectEnv !== undefined ? { injectEnv: p.injectEnv } : {}),
      files,
      mounts,
      ...(p.stdout !== undefined ? { stdout: p.stdout } : {}),
      ...(p.okExitCodes !== undefined ? { okExitCodes: p.okExitCodes } : {}),
      ...(p.modelCalls !== undefined ? { modelCalls: p.modelCalls } : {}),
      limits,
    };
  }

  #fail(lease: Lease, code: ErrorCode, message: string): void {
    this.#host.finish(lease, { ok: false, error: { code, name: 'AppError', message } });
  }
}

/** The blob refs a payload's mounts name, or null (most payloads: no allocation). */
function blobRefs(p: AgentPayload): Set<string> | null {
  if (!p.mounts) return null;
  let refs: Set<string> | null = null;
  for (const m of Object.values(p.mounts)) {
    for (const c of Object.values(m.files ?? {})) if ('blob' in c) (refs ??= new Set()).add(c.blob);
  }
  return refs;
}

function toMount(plan: MountPlan, blobs: Map<string, Uint8Array> | null): AgentMount {
  const files: Record<string, Uint8Array> = {};
  for (const [rel, content] of plan.files) {
    const bytes = 'blob' in content ? blobs?.get(content.blob) : inlineBytes(content);
    if (!bytes) throw new AppError('BLOB_NOT_FOUND', `The blob ${'blob' in content ? content.blob : '?'} of ${plan.path}/${rel} was not fetched before the run.`);
    files[rel] = bytes;
  }
  return { path: plan.path, files, ...(plan.writable ? { writable: true, maxBytes: plan.maxBytes } : {}) };
}

/**
 * A traced agent run as one span, from taking the lease to the result, with its phases as attributes:
 * waiting on the node (module fetch, a free worker), the worker's spawn (compile, instantiate) and the
 * agent's own run (its durationMs). One span rather than three: each span costs the coordinator its
 * record and export, and the phases need no parents of their own.
 */
function traceRun(lease: Lease, runAt: number, outcome: AgentRunOutcome): void {
  const end = performance.now();
  const t0 = lease.trace!.t0;
  const execMs = outcome.ok ? outcome.result.durationMs : outcome.durationMs;
  const attributes: Record<string, number> = { 'node.queue_ms': round(runAt - t0) };
  if (execMs !== undefined && execMs >= 0 && execMs <= end - runAt) {
    attributes['agent.spawn_ms'] = round(end - execMs - runAt);
    attributes['agent.exec_ms'] = round(execMs);
  }
  addSpan(lease, 'agent.run', t0, end, attributes);
}

function round(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

function toOutcome(outcome: AgentRunOutcome, lease: Lease): RunOutcome {
  if (outcome.ok) return { ok: true, result: outcome.result, durationMs: outcome.result.durationMs };
  return { ok: false, error: failureInfo(outcome, lease.cancelled) };
}

function failureInfo(outcome: Extract<AgentRunOutcome, { ok: false }>, cancelled: string | null): ErrorInfo {
  const base = cancelled !== null ? { code: 'CANCELLED' as const, name: 'AppError', message: cancelled } : outcome.error;
  const details: Record<string, unknown> = { ...(outcome.error.details ?? {}) };
  if (cancelled !== null) details.cause = outcome.error.code;
  if (outcome.stderr) details.stderrTail = outcome.stderr.slice(-STDERR_TAIL);
  if (outcome.fuelUsed !== undefined) details.fuelUsed = outcome.fuelUsed;
  if (outcome.durationMs !== undefined) details.durationMs = outcome.durationMs;
  const info: ErrorInfo = { code: base.code, name: base.name, message: base.message };
  if (Object.keys(details).length > 0) info.details = details;
  return info;
}
