/**
 * What a pooled agent worker serves over comlink: a thin wrapper over
 * runAgentInThread that holds the compiled modules the pool posts to it.
 * The Web Worker entry is ./agent-worker.ts; Node's is ./testing/node-worker-entry.ts.
 */
import { expose, releaseProxy, type Endpoint, type Remote } from 'comlink';
import { AppError, serializeError, type HostMemoryDescriptor } from '../../shared';
import { HostMemories } from './memories';
import { runAgent, wallClock } from './run';
import type { AgentRunOutcome, AgentRunRequest, ModelBridge } from './types';

/** Posted by the worker, outside comlink's request/response, right before `_start`. */
export interface AgentStartNotice {
  type: 'agent.start';
  taskId: string;
  spawnMs: number;
}

export function isAgentStartNotice(data: unknown): data is AgentStartNotice {
  return typeof data === 'object' && data !== null && (data as { type?: unknown }).type === 'agent.start';
}

/** A run's answer: its outcome and the worker's Wasm memory garbage afterwards. */
export interface WorkerRunAnswer {
  outcome: AgentRunOutcome;
  /** Memories this worker let go that are not collected yet: each still reserves ~8 GiB of address space. */
  uncollected: number;
}

/** What a pooled worker offers (called through comlink). */
export interface AgentWorkerApi {
  /** Answers the worker's wall clock once it is up. */
  ping(): number;
  /** Keeps a compiled module under `key` (`hash:memoryMB`). */
  loadModule(key: string, module: WebAssembly.Module, capPages: number, memory?: HostMemoryDescriptor | null): void;
  /** Forgets modules the pool evicted; a later run of one is AGENT_MODULE_MISSING unless it is posted again. */
  dropModules(keys: string[]): void;
  /**
   * Runs one agent; `requestedAt` is the caller's wallClock() at run(). `model` (a comlink proxy): the node's
   * model for a module importing agent_model, whose run is suspendable and answers a promise.
   */
  run(key: string, req: AgentRunRequest, requestedAt: number, model?: ModelBridge): WorkerRunAnswer | Promise<WorkerRunAnswer>;
}

export function createAgentWorkerApi(notify: (notice: AgentStartNotice) => void): AgentWorkerApi {
  const modules = new Map<string, { module: WebAssembly.Module; capPages: number; memory: HostMemoryDescriptor | null }>();
  const memories = new HostMemories();
  return {
    ping: () => wallClock(),
    loadModule(key, module, capPages, memory = null) {
      modules.set(key, { module, capPages, memory });
    },
    dropModules(keys) {
      for (const key of keys) modules.delete(key);
      memories.drop(keys);
    },
    run(key, req, requestedAt, model) {
      const loaded = modules.get(key);
      if (!loaded) {
        return {
          outcome: {
            ok: false,
            error: serializeError(new AppError('AGENT_MODULE_MISSING', `The worker has no module ${key}; the pool must post it before the run.`)),
          },
          uncollected: memories.uncollected,
        };
      }
      const outcome = runAgent(loaded.module, req, {
        requestedAt,
        capPages: loaded.capPages,
        memory: loaded.memory,
        memories,
        memoryKey: key,
        onStart: (spawnMs) => notify({ type: 'agent.start', taskId: req.taskId, spawnMs }),
        ...(model ? { model } : {}),
      });
      const answer = (o: AgentRunOutcome): WorkerRunAnswer => {
        // Out of address space: the kept memories are the ones this worker can give back now.
        if (!o.ok && o.error.code === 'NODE_RESOURCE_EXHAUSTED') memories.drop();
        return { outcome: o, uncollected: memories.uncollected };
      };
      // The proxied model's channel goes once the run has ended.
      const release = (): void => (model as Remote<ModelBridge> | undefined)?.[releaseProxy]?.();
      if (outcome instanceof Promise) return outcome.then(answer).finally(release);
      release();
      return answer(outcome);
    },
  };
}

/** Serves the worker API on an endpoint (the worker's global scope, a MessagePort, a Node port). */
export function exposeAgentWorker(endpoint: Endpoint): void {
  expose(
    createAgentWorkerApi((notice) => endpoint.postMessage(notice)),
    endpoint,
  );
}
