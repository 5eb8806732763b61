export type { AgentMount, AgentRunRequest, AgentRunOutcome, AgentEvent, AgentRuntime, AgentRuntimeStats } from './types';
export { runAgentInThread, wallClock, type RunOptions } from './run';
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
