export {
  AGENTS,
  USEFUL_AGENTS,
  HOSTILE_AGENTS,
  findAgent,
  type AgentSpec,
  type AgentLanguage,
  type AgentExpectation,
  type HostileErrorCode,
} from './catalog';
export { readAgent, AGENTS_DIST_DIR } from './read';
