/**
 * The small read-only handle the page puts on `window.__execNode`, so e2e tests,
 * the headless launcher and the benchmark can wait on signals instead of time.
 */
import { AppError } from '../shared';
import type { AgentRuntime } from '../worker';
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
): ExecNodeHandle {
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
  });
}
