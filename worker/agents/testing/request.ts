/** A run request for the runtime tests: no input, no args, no env, no files, default limits unless given. */
import { DEFAULT_AGENT_LIMITS, type AgentLimits } from '../../../shared';
import type { AgentRunRequest } from '../types';

export function runRequest(agentName: string, over: Partial<AgentRunRequest> = {}, limits: Partial<AgentLimits> = {}): AgentRunRequest {
  return {
    taskId: 'task-1',
    agentName,
    moduleHash: 'x',
    stdin: new Uint8Array(),
    args: [],
    env: {},
    files: {},
    ...over,
    limits: { ...DEFAULT_AGENT_LIMITS, ...limits },
  };
}
