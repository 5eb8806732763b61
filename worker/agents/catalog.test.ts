/**
 * The sample agents (C, Rust, AssemblyScript, WAT, built by agents/build.sh)
 * through this runtime: each ends as its catalog entry says.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AGENTS, readAgent, type AgentSpec } from '../../agents';
import { AppError, DEFAULT_AGENT_LIMITS, validateAgentModule } from '../../shared';
import { prepareAgentModule, sha256Hex } from './module-cache';
import { AgentPool } from './pool';
import { runAgentInThread } from './run';
import { NodeThreadWorker } from './testing/node-workers';
import type { AgentRunOutcome, AgentRunRequest } from './types';

const root = fileURLToPath(new URL('../../', import.meta.url));
const built = AGENTS.filter((a) => existsSync(root + a.file));

function request(spec: AgentSpec): AgentRunRequest {
  const enc = new TextEncoder();
  return {
    taskId: `catalog-${spec.name}`,
    agentName: spec.name,
    moduleHash: '',
    stdin: enc.encode(JSON.stringify(spec.input)),
    args: [],
    env: {},
    files: Object.fromEntries(Object.entries(spec.files ?? {}).map(([k, v]) => [k, enc.encode(v)])),
    limits: { ...DEFAULT_AGENT_LIMITS, ...spec.limits },
  };
}

function check(spec: AgentSpec, out: AgentRunOutcome): void {
  const exp = spec.expected;
  if (exp.ok) {
    assert.ok(out.ok, `${spec.name}: ${JSON.stringify(!out.ok && out.error)} stderr=${!out.ok ? out.stderr : ''}`);
    assert.deepStrictEqual(out.result.output, exp.output);
    return;
  }
  assert.equal(out.ok ? 'ok' : out.error.code, exp.errorCode, `${spec.name}: ${JSON.stringify(out)}`);
  if (!out.ok && exp.exitCode !== undefined) assert.equal(out.error.details?.exitCode, exp.exitCode);
  if (!out.ok && exp.stderrIncludes) assert.ok(out.stderr?.includes(exp.stderrIncludes), `${spec.name} stderr: ${out.stderr}`);
}

for (const spec of built) {
  const exp = spec.expected;
  if (!exp.ok && exp.stage === 'register') {
    test(`${spec.name} (${spec.language}) is refused: ${exp.errorCode}`, () => {
      assert.throws(() => validateAgentModule(readAgent(spec.name)), (e: AppError) => e.code === exp.errorCode);
    });
  } else if (!exp.ok && exp.errorCode === 'AGENT_TIMEOUT') {
    test(`${spec.name} (${spec.language}) in a pooled worker thread ends with AGENT_TIMEOUT`, async () => {
      const pool = new AgentPool({ size: 1, createWorker: () => new NodeThreadWorker() });
      try {
        const bytes = readAgent(spec.name);
        const hash = await sha256Hex(bytes);
        await pool.addModule(hash, bytes);
        check(spec, await pool.run({ ...request(spec), moduleHash: hash }));
      } finally {
        await pool.close();
      }
    });
  } else {
    test(`${spec.name} (${spec.language}) ends ${exp.ok ? 'with its output' : `with ${exp.errorCode}`}`, async () => {
      const req = request(spec);
      const prepared = await prepareAgentModule(readAgent(spec.name), req.limits.memoryMB);
      check(spec, runAgentInThread(prepared.module, req, { capPages: prepared.capPages, memory: prepared.memory }));
    });
  }
}
