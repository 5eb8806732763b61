export type { AgentMount, AgentRunRequest, AgentRunOutcome, AgentEvent, AgentRuntime, AgentRuntimeStats, ModelAnswer, ModelBridge, ModelCall } from './types';
export { runAgent, runAgentInThread, wallClock, type RunOptions } from './run';
export { hasJspi } from './model-import';
export {
  ModuleCache,
  prepareAgentModule,
  sha256Hex,
  moduleKey,
  DEFAULT_MAX_MODULES,
  DEFAULT_MAX_MODULE_BYTES,
  type ModuleCacheOptions,
  type PreparedModule,
} from './module-cache';
export { AgentPool, type AgentPoolOptions, type WorkerLike } from './pool';
export { createAgentWorkerApi, exposeAgentWorker, isAgentStartNotice, type AgentWorkerApi, type AgentStartNotice } from './worker-api';
export { CappedOutput } from './output';
