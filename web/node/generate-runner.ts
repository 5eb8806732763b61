/**
 * generate leases: handed to the node's inference runtime (continuous batching there), tokens
 * streamed to the coordinator as `task.progress` (coalesced per lease so a fast decoder does not
 * send one socket message per token), the result sent when the sequence ends.
 */
import { MAX_MEMORY_BUDGET_BYTES, MAX_NODE_SEQUENCES, serializeError, type Assignment, type GeneratePayload, type GenerateResult, type InferenceCapabilities, type ModelCapability, type TokenLogprob } from '../../shared';
import type { GenerateRunRequest, GenerationProgress, InferenceRuntime } from '../../worker/inference';
import { addSpan, type Lease, type RunnerHost, type TaskRunner } from './runner';

/** generate leases held per decoding slot (running plus waiting in the batcher). */
const HELD_PER_SLOT = 2;
/** Longest a streamed token waits for others to share its message. */
const FLUSH_MS = 4;
/** How long after a load, unload or adapter event the node reads its models again (one read for a burst). */
const REFRESH_DELAY_MS = 100;
/** Download progress goes to the coordinator at most this often per model (and always at the end). */
const DOWNLOAD_EVERY_MS = 250;

interface Stream {
  text: string;
  ids: number[];
  logprobs: TokenLogprob[];
  tokens: number;
  timer: ReturnType<typeof setTimeout> | null;
}

export class GenerateRunner implements TaskRunner {
  readonly kind = 'generate' as const;
  readonly #runtime: InferenceRuntime;
  readonly #host: RunnerHost;
  readonly #streams = new Map<string, Stream>();
  /** Leases running now, by task id (download progress goes to those waiting on the model). */
  readonly #active = new Map<string, Lease>();
  readonly #downloadSent = new Map<string, number>();
  #running = 0;
  #models: ModelCapability[] = [];
  #refreshTimer: ReturnType<typeof setTimeout> | null = null;
  readonly #off: () => void;

  constructor(runtime: InferenceRuntime, host: RunnerHost) {
    this.#runtime = runtime;
    this.#host = host;
    this.#off = runtime.on((e) => {
      if (e.type === 'download') this.#download(e.model, e.loadedBytes, e.totalBytes);
      if (e.type === 'load' || e.type === 'unload' || e.type === 'adapter' || (e.type === 'download' && e.loadedBytes === e.totalBytes)) this.#refreshSoon();
    });
  }

  get running(): number {
    return this.#running;
  }

  get waiting(): number {
    return this.#runtime.stats().waiting;
  }

  /**
   * What the node advertises for generate tasks: twice the sequences it decodes at once, so a
   * sequence that ends is replaced from the batcher's own queue at the next step rather than after
   * a round trip to the coordinator (the way agent workers keep a queue).
   */
  capabilities(): InferenceCapabilities {
    const stats = this.#runtime.stats();
    const slots = Math.max(1, stats.maxSequences);
    const caps: InferenceCapabilities = { maxSequences: Math.min(MAX_NODE_SEQUENCES, slots * HELD_PER_SLOT), models: this.#models };
    // The memory budget the runtime keeps to: the router sends no model (or training run) that cannot fit in it.
    if (stats.gpuBudgetBytes > 0) caps.memoryBudgetBytes = Math.min(stats.gpuBudgetBytes, MAX_MEMORY_BUDGET_BYTES);
    return caps;
  }

  /** Model names whose weights the node holds. */
  storedModels(): string[] {
    return this.#models.map((m) => m.name);
  }

  /** Reads the runtime's models again and tells the connection when they changed. */
  async refresh(): Promise<void> {
    let next: ModelCapability[];
    try {
      next = await this.#runtime.models();
    } catch {
      return;
    }
    if (JSON.stringify(next) === JSON.stringify(this.#models)) return;
    this.#models = next;
    this.#host.capabilitiesChanged();
  }

  /**
   * refresh() a little later, once for a burst of events: the event comes while the request that caused it (a model
   * or adapter just loaded) starts decoding, and reading the runtime's models then competes with its first steps.
   */
  #refreshSoon(): void {
    if (this.#refreshTimer !== null) return;
    this.#refreshTimer = setTimeout(() => {
      this.#refreshTimer = null;
      void this.refresh();
    }, REFRESH_DELAY_MS);
  }

  close(): void {
    this.#off();
    if (this.#refreshTimer !== null) clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
  }

  /** A model's download moved on: tell the coordinator, for every lease that waits on it. */
  #download(model: string, loadedBytes: number, totalBytes: number): void {
    const now = Date.now();
    const done = loadedBytes >= totalBytes;
    if (!done && now - (this.#downloadSent.get(model) ?? 0) < DOWNLOAD_EVERY_MS) return;
    this.#downloadSent.set(model, now);
    for (const lease of this.#active.values()) {
      if (lease.name === model) this.#host.progress(lease, { kind: 'download', model, loadedBytes, totalBytes });
    }
  }

  start(a: Assignment, lease: Lease): void {
    const p = a.payload as GeneratePayload;
    const req: GenerateRunRequest = { taskId: a.taskId, model: p.model, deadline: a.deadline };
    if (p.adapter !== undefined) req.adapter = p.adapter;
    if (p.prompt !== undefined) req.prompt = p.prompt;
    if (p.messages !== undefined) req.messages = p.messages;
    if (p.maxNewTokens !== undefined) req.maxNewTokens = p.maxNewTokens;
    if (p.temperature !== undefined) req.temperature = p.temperature;
    if (p.topK !== undefined) req.topK = p.topK;
    if (p.topP !== undefined) req.topP = p.topP;
    if (p.seed !== undefined) req.seed = p.seed;
    if (p.stop !== undefined) req.stop = p.stop;
    if (p.logprobs !== undefined) req.logprobs = p.logprobs;
    if (p.responseFormat !== undefined) req.responseFormat = p.responseFormat;
    const streamed = p.stream !== false;
    lease.running = true;
    this.#running++;
    this.#active.set(lease.taskId, lease);
    const onProgress = streamed ? (g: GenerationProgress) => this.#progress(lease, g) : undefined;
    this.#runtime.generate(req, onProgress).then(
      (outcome) => {
        this.#ended(lease, outcome.ok);
        if (outcome.ok && lease.trace) traceGeneration(lease, outcome.result);
        if (outcome.ok) this.#host.finish(lease, { ok: true, result: outcome.result, durationMs: outcome.result.durationMs });
        else this.#host.finish(lease, { ok: false, error: outcome.error });
      },
      (err: unknown) => {
        this.#ended(lease, false);
        this.#host.finish(lease, { ok: false, error: serializeError(err) });
      },
    );
  }

  cancel(lease: Lease): void {
    this.#runtime.cancel(lease.taskId, lease.cancelled ?? 'cancelled by the coordinator');
  }

  #ended(lease: Lease, ok: boolean): void {
    this.#running--;
    this.#active.delete(lease.taskId);
    lease.running = false;
    this.#flush(lease); // tokens still coalescing go before the result
    this.#streams.delete(lease.taskId);
    // A failure may have unloaded the model (a lost device); a success changes nothing advertised.
    if (!ok) void this.refresh();
  }

  #progress(lease: Lease, g: GenerationProgress): void {
    let s = this.#streams.get(lease.taskId);
    if (!s) this.#streams.set(lease.taskId, (s = { text: '', ids: [], logprobs: [], tokens: 0, timer: null }));
    s.text += g.text;
    for (const id of g.ids) s.ids.push(id);
    if (g.logprobs) for (const l of g.logprobs) s.logprobs.push(l);
    s.tokens = g.tokens;
    if (s.timer === null) s.timer = setTimeout(() => this.#flush(lease), FLUSH_MS);
  }

  #flush(lease: Lease): void {
    const s = this.#streams.get(lease.taskId);
    if (!s) return;
    if (s.timer !== null) clearTimeout(s.timer);
    s.timer = null;
    if (s.ids.length === 0 && s.text === '') return;
    const progress: { kind: 'tokens'; text: string; tokens: number; ids: number[]; logprobs?: TokenLogprob[] } = {
      kind: 'tokens',
      text: s.text,
      tokens: s.tokens,
      ids: s.ids,
    };
    if (s.logprobs.length) progress.logprobs = s.logprobs;
    s.text = '';
    s.ids = [];
    s.logprobs = [];
    this.#host.progress(lease, progress);
  }
}

/** The phases of a traced generation, from its timings: waiting (model load, a batch slot), prefill (to the first token), decode. */
function traceGeneration(lease: Lease, r: GenerateResult): void {
  const end = performance.now();
  const t0 = lease.trace!.t0;
  const start = Number.isFinite(r.durationMs) ? Math.max(t0, end - r.durationMs) : t0;
  const first = Number.isFinite(r.ttftMs) ? Math.min(end, start + Math.max(0, r.ttftMs)) : start;
  addSpan(lease, 'generate.wait', t0, start);
  addSpan(lease, 'generate.prefill', start, first);
  addSpan(lease, 'generate.decode', first, end);
}
