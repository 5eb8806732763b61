/**
 * train leases: the dataset (inline JSON lines, or `sha256:<hex>` fetched from the coordinator's
 * `GET /v1/datasets/:sha256/content` with the node's token and checked against its digest), then the
 * node's inference runtime trains a LoRA adapter on the engine (worker/inference/train.ts). Each optimizer
 * step goes to the coordinator as `loss` progress; the result carries the summary and the adapter's PEFT
 * files (safetensors in base64), which the coordinator puts in its adapter registry before the task ends.
 * One run at a time: the node advertises room for one train lease.
 */
import { LIMITS, PART_BYTES, bytesToBase64, checkpointInterval, errorFromAnswer, serializeError, AppError, type Assignment, type PartMessage, type PartRef, type TrainPayload } from '../../shared';
import { sha256Hex } from '../../worker/agents/module-cache';
import type { InferenceRuntime, TrainRunRequest } from '../../worker/inference';
import type { CheckpointStore } from './checkpoints';
import type { TrainingCurve } from './events';
import type { Lease, RunnerHost, TaskRunner } from './runner';

export type DatasetFetch = (url: string, init: RequestInit) => Promise<Response>;

const REF = /^sha256:([0-9a-fA-F]{64})$/;
/** Runs whose curves the page keeps, and points per curve. */
const KEPT_RUNS = 4;
export const MAX_CURVE_POINTS = 2000;

export class TrainRunner implements TaskRunner {
  readonly kind = 'train' as const;
  readonly #runtime: InferenceRuntime;
  readonly #host: RunnerHost;
  #base: string;
  readonly #token: string | undefined;
  readonly #fetch: DatasetFetch;
  #running = 0;
  #waiting = 0;
  readonly #curves: TrainingCurve[] = [];
  readonly #store: CheckpointStore | null;
  readonly #counts = { saved: 0, fromStore: 0, fetched: 0 };

  /** Fetches datasets from another coordinator of the pool from now on (the node moved to it). */
  setBase(baseUrl: string): void {
    this.#base = baseUrl.replace(/\/$/, '');
  }

  /** Raw bytes of one task.part (and the most sent inline in a result): half the connection's message limit, at most PART_BYTES. */
  readonly #partBytes: number;

  constructor(runtime: InferenceRuntime, host: RunnerHost, opts: { baseUrl: string; token?: string; fetch?: DatasetFetch; maxMessageBytes?: number; checkpoints?: CheckpointStore | null }) {
    this.#runtime = runtime;
    this.#store = opts.checkpoints ?? null;
    this.#host = host;
    this.#partBytes = Math.max(1024, Math.min(PART_BYTES, Math.floor((opts.maxMessageBytes ?? LIMITS.maxSocketMessageBytes) / 2)));
    this.#base = opts.baseUrl.replace(/\/$/, '');
    this.#token = opts.token || undefined;
    this.#fetch = opts.fetch ?? ((url, init) => globalThis.fetch(url, init));
  }

  get running(): number {
    return this.#running;
  }

  get waiting(): number {
    return this.#waiting;
  }

  start(a: Assignment, lease: Lease): void {
    void this.#run(a, lease);
  }

  /** Checkpoints written to the node's store, and resumed from it or fetched from the coordinator. */
  get checkpointCounts(): { saved: number; fromStore: number; fetched: number } {
    return { ...this.#counts };
  }

  /** The loss curves of the runs in progress and the last few ended, newest first. */
  curves(): readonly TrainingCurve[] {
    return this.#curves;
  }

  cancel(lease: Lease): void {
    this.#runtime.cancel(lease.taskId, lease.cancelled ?? 'cancelled');
  }

  async #run(a: Assignment, lease: Lease): Promise<void> {
    const p = a.payload as TrainPayload;
    this.#waiting++;
    let started = false;
    try {
      const jsonl = await this.#dataset(p.dataset);
      const resume = a.checkpoint ? await this.#checkpointOf(a) : null;
      if (lease.cancelled !== null) throw new AppError('CANCELLED', lease.cancelled);
      // The payload's fields are the run's (TrainPayloadSchema checked them at submit), the dataset as its text.
      const { dataset: _ref, ...settings } = p;
      const req: TrainRunRequest = { ...settings, taskId: a.taskId, jsonl, deadline: a.deadline, checkpointEvery: checkpointInterval(p), ...(resume ? { resume } : {}) };
      let sending: Promise<void> = Promise.resolve();
      this.#waiting--;
      this.#running++;
      started = true;
      lease.running = true;
      const curve: TrainingCurve = { taskId: a.taskId, model: p.model, adapterName: p.adapterName, total: p.steps, steps: [], loss: [], evalSteps: [], evalLoss: [], tokensPerSec: 0, state: 'running' };
      this.#curves.unshift(curve);
      if (this.#curves.length > KEPT_RUNS) this.#curves.length = KEPT_RUNS;
      const outcome = await this.#runtime.train!(req, (s) => {
        if (s.checkpoint) {
          const bytes = s.checkpoint;
          sending = sending.then(() => this.#sendCheckpoint(lease, s.step, bytes)).catch(() => undefined);
          return;
        }
        addPoint(curve, s.step, s.loss, s.evaluated ? s.evalLoss : undefined);
        curve.tokensPerSec = s.tokensPerSec;
        this.#host.progress(lease, { kind: 'loss', step: s.step, total: s.total, loss: s.loss, tokensPerSec: s.tokensPerSec, ...(s.evalLoss !== undefined ? { evalLoss: s.evalLoss } : {}) });
      });
      curve.state = outcome.ok ? 'OK' : outcome.error.code;
      if (!outcome.ok) return this.#host.finish(lease, { ok: false, error: outcome.error });
      const { adapter, ...summary } = outcome.result;
      // A finished run needs no checkpoint (the coordinator drops its copy too); failed and cancelled ones keep theirs.
      await this.#store?.delete(a.taskId).catch(() => undefined);
      this.#host.finish(lease, {
        ok: true,
        result: { ...summary, adapter: { config: adapter.config, safetensors: await this.#weights(lease, adapter.safetensors) } },
        durationMs: summary.durationMs,
      });
    } catch (err) {
      this.#host.finish(lease, { ok: false, error: serializeError(err) });
    } finally {
      if (started) this.#running--;
      else this.#waiting--;
      lease.running = false;
    }
  }

  /**
   * adapter_model.safetensors for the result: base64 inline when it fits a socket message, else sent first in
   * `task.part` messages and named in the result (an adapter of high rank on a larger model).
   */
  async #weights(lease: Lease, bytes: Uint8Array): Promise<string | PartRef> {
    if (bytes.length <= this.#partBytes) return bytesToBase64(bytes);
    const name = 'adapter_model.safetensors';
    if (!this.#sendParts(lease, name, bytes)) {
      throw new AppError('RESULT_PARTS_INCOMPLETE', `The connection closed while the adapter (${bytes.length} bytes) was being sent in parts; the attempt runs again.`);
    }
    return { part: name, bytes: bytes.length, sha256: await sha256Hex(bytes) };
  }

  /** `bytes` as `task.part` messages of #partBytes, in order; false when one could not be sent. */
  #sendParts(lease: Lease, name: PartMessage['name'], bytes: Uint8Array): boolean {
    const size = this.#partBytes;
    for (let offset = 0; offset < bytes.length; offset += size) {
      const data = bytesToBase64(bytes.subarray(offset, Math.min(bytes.length, offset + size)));
      if (!this.#host.part(lease, { name, total: bytes.length, offset, data })) return false;
    }
    return true;
  }

  /**
   * A checkpoint to the coordinator: its bytes in `task.part` messages, then `checkpoint` progress naming them (size
   * and SHA-256). One over the parts limit is not sent (the run goes on; a lost node then costs more steps).
   */
  async #sendCheckpoint(lease: Lease, step: number, bytes: Uint8Array): Promise<void> {
    if (bytes.length > LIMITS.maxResultPartsBytes || lease.ended) return;
    const sha256 = await sha256Hex(bytes);
    // The node's own copy first (IndexedDB in the page): a reload, or another page of this profile, resumes without a download.
    if (this.#store) {
      try {
        await this.#store.put({ taskId: lease.taskId, step, sha256, bytes, savedAt: Date.now() });
        this.#counts.saved++;
      } catch {
        // A full or unavailable store: the coordinator's copy is the one that counts.
      }
    }
    if (lease.ended) return;
    if (this.#sendParts(lease, 'checkpoint.safetensors', bytes)) this.#host.progress(lease, { kind: 'checkpoint', step, bytes: bytes.length, sha256 });
  }

  /**
   * The checkpoint an earlier attempt left: from the node's store when it holds the one named (same SHA-256), else
   * fetched and checked; null when it cannot be had: the run starts over.
   */
  async #checkpointOf(a: Assignment): Promise<Uint8Array | null> {
    const local = await this.#store?.get(a.taskId).catch(() => null);
    if (local && local.sha256 === a.checkpoint!.sha256 && (await sha256Hex(local.bytes)) === local.sha256) {
      this.#counts.fromStore++;
      return local.bytes;
    }
    try {
      const res = await this.#fetch(`${this.#base}/v1/tasks/${a.taskId}/checkpoint`, this.#token ? { headers: { authorization: `Bearer ${this.#token}` } } : {});
      if (!res.ok) return null;
      const bytes = new Uint8Array(await res.arrayBuffer());
      if ((await sha256Hex(bytes)) !== a.checkpoint!.sha256) return null;
      this.#counts.fetched++;
      return bytes;
    } catch {
      return null;
    }
  }

  /** The dataset's JSON lines: inline, or fetched by digest and checked. */
  async #dataset(dataset: string): Promise<string> {
    const m = REF.exec(dataset);
    if (!m) return dataset;
    const hex = m[1]!.toLowerCase();
    const res = await this.#fetch(`${this.#base}/v1/datasets/${hex}/content`, this.#token ? { headers: { authorization: `Bearer ${this.#token}` } } : {});
    if (!res.ok) {
      const body: unknown = await res.json().catch(() => null);
      throw errorFromAnswer(body, `The coordinator answered ${res.status} for dataset ${dataset}.`) ?? new AppError('DATASET_NOT_FOUND', `The coordinator answered ${res.status} for dataset ${dataset}.`);
    }
    const bytes = new Uint8Array(await res.arrayBuffer());
    const actual = await sha256Hex(bytes);
    if (actual !== hex) throw new AppError('DATASET_CORRUPT', `Dataset ${dataset} arrived with SHA-256 ${actual}; fetch it again.`, { expected: hex, actual });
    return new TextDecoder().decode(bytes);
  }
}

/** Adds a step to a curve, halving its points when it reaches MAX_CURVE_POINTS (the shape stays, the size is bounded). */
function addPoint(curve: TrainingCurve, step: number, loss: number, evalLoss: number | undefined): void {
  if (curve.steps.length >= MAX_CURVE_POINTS) {
    curve.steps = curve.steps.filter((_, i) => i % 2 === 1);
    curve.loss = curve.loss.filter((_, i) => i % 2 === 1);
  }
  curve.steps.push(step);
  curve.loss.push(loss);
  if (evalLoss !== undefined && curve.evalSteps.length < MAX_CURVE_POINTS) {
    curve.evalSteps.push(step);
    curve.evalLoss.push(evalLoss);
  }
}
