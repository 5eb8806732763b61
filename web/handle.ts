/**
 * The small read-only handle the page puts on `window.__execNode`, so e2e tests,
 * the headless launcher and the benchmark can wait on signals instead of time.
 */
import { AppError } from '../shared';
import type { AgentRuntime } from '../worker';
import type { InferenceRuntime } from '../worker/inference';
import { benchVariant, loadTime, streams, type BenchBackend, type InferenceBenchRequest, type StreamsResult, type VariantResult } from './inference-bench';
import { benchPool, type ConnectionState, type GpuProbe, type NodeClient, type NodeStats, type PoolBenchResult, type TaskEntry } from './node';

export interface BenchRequest {
  agentName: string;
  moduleHash: string;
  input?: unknown;
  warmRuns?: number;
  rawTasks?: number;
  coldRuns?: number;
  memoryWorkers?: number;
}

export interface ExecNodeHandle {
  readonly state: ConnectionState;
  readonly nodeId: string | null;
  readonly gpu: GpuProbe | null;
  readonly crossOriginIsolated: boolean;
  stats(): NodeStats;
  recent(): TaskEntry[];
  /** Measures this node's agent pool (see web/node/pool-bench.ts); the module is fetched from the coordinator. */
  benchmark(req: BenchRequest): Promise<PoolBenchResult>;
  /** Inference measurements (web/inference-bench.ts); null when the node runs no inference. */
  readonly inference: {
    /** `n` concurrent generations on this node's own runtime, called directly (no coordinator). */
    streams(req: InferenceBenchRequest, n: number): Promise<StreamsResult>;
    /** One backend in a fresh worker: load, one stream, req.sequences streams. */
    variant(label: string, backends: BenchBackend[], req: InferenceBenchRequest): Promise<VariantResult>;
    /** Load time of a model into a fresh worker on the weight store `dbName`. */
    loadTime(backends: BenchBackend[], model: string, dbName: string): Promise<{ ms: number; backend: string; filesMs: number | null; runtimeLoadMs: number | null; workerStartMs: number }>;
  } | null;
}

declare global {
  interface Window {
    __execNode?: ExecNodeHandle;
  }
}

export function createHandle(
  client: NodeClient,
  runtime: AgentRuntime,
  createRuntime: (size: number) => AgentRuntime,
  inference: InferenceRuntime | null = null,
): ExecNodeHandle {
  const base = client.coordinator;
  return Object.freeze({
    get state() {
      return client.state;
    },
    get nodeId() {
      return client.nodeId;
    },
    get gpu() {
      return client.gpu;
    },
    get crossOriginIsolated() {
      return globalThis.crossOriginIsolated === true;
    },
    stats: () => client.stats(),
    recent: () => client.recent(),
    benchmark: async (req: BenchRequest) => {
      const res = await fetch(`${client.coordinator}/v1/modules/${req.moduleHash}`);
      if (!res.ok) throw new AppError('NOT_FOUND', `Module ${req.moduleHash} is not on the coordinator (HTTP ${res.status}); register the agent first.`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      return benchPool(runtime, { ...req, bytes, createRuntime });
    },
    inference: inference
      ? Object.freeze({
          streams: (req: InferenceBenchRequest, n: number) => streams(inference, req, n, 'bare'),
          variant: (label: string, backends: BenchBackend[], req: InferenceBenchRequest) => benchVariant(base, label, backends, req),
          loadTime: (backends: BenchBackend[], model: string, dbName: string) => loadTime(base, backends, model, dbName),
        })
      : null,
  });
}
