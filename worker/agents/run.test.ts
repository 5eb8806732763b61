import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_AGENT_LIMITS, type AgentLimits } from '../../shared';
import { prepareAgentModule, type PreparedModule } from './module-cache';
import { runAgentInThread } from './run';
import { runRequest } from './testing/request';
import { buildWatAgents, type WatAgentName } from './testing/wat-agents';
import type { AgentRunOutcome, AgentRunRequest } from './types';

const bytes = await buildWatAgents();
const compiled = new Map<string, PreparedModule>();

async function run(name: WatAgentName, over: Partial<AgentRunRequest> = {}, limits: Partial<AgentLimits> = {}): Promise<AgentRunOutcome> {
  const lim = { ...DEFAULT_AGENT_LIMITS, ...limits };
  const key = `${name}:${lim.memoryMB}`;
  let prepared = compiled.get(key);
  if (!prepared) {
    prepared = await prepareAgentModule(bytes[name], lim.memoryMB);
    compiled.set(key, prepared);
  }
  const req = runRequest(name, over, lim);
  return runAgentInThread(prepared.module, req, { capPages: prepared.capPages, memory: prepared.memory });
}

const utf8 = (s: string) => new TextEncoder().encode(s);
const errorCode = (o: AgentRunOutcome) => (o.ok ? 'ok' : o.error.code);

test('echo: stdin JSON comes back as the result, with fuel, time and memory', async () => {
  const input = { hello: 'world', n: [1, 2, 3] };
  const out = await run('echo', { stdin: utf8(JSON.stringify(input)) });
  assert.ok(out.ok, JSON.stringify(out));
  assert.deepEqual(out.result.output, input);
  assert.equal(out.result.exitCode, 0);
  assert.ok(out.result.fuelUsed > 0 && out.result.fuelUsed < 100);
  assert.ok(out.result.durationMs >= 0);
  assert.equal(out.result.memoryBytes, 2 * 65536);
});

test('args, env and the /input preopen reach the agent', async () => {
  const out = await run('argsenv', {
    taskId: 'abc-123',
    agentName: 'argsenv',
    args: ['--mode', 'fast'],
    env: { FOO: 'bar baz' },
    files: { 'data.json': utf8('{"from":"file"}') },
  });
  assert.ok(out.ok, JSON.stringify(out));
  assert.deepEqual(out.result.output, { from: 'file' });
  const [argv, environ] = [out.result.stderr.split('AGENT_TASK_ID')[0], out.result.stderr];
  assert.equal(argv, 'argsenv\0--mode\0fast\0');
  assert.ok(environ.includes('AGENT_TASK_ID=abc-123\0AGENT_NAME=argsenv\0FOO=bar baz\0'));
});

test('a missing input file is the agent exiting non-zero, not a runtime fault', async () => {
  const out = await run('argsenv');
  assert.equal(errorCode(out), 'AGENT_EXIT_NONZERO');
  assert.equal((out as any).error.details.exitCode, 9);
});

test('NUL in args or env, or = in an env name, is refused before the agent runs; UTF-8 and tabs are not', async () => {
  assert.equal(errorCode(await run('echo', { args: ['nul\0here'] })), 'AGENT_BAD_ARGS');
  assert.equal(errorCode(await run('echo', { env: { K: 'ü\0' } })), 'AGENT_BAD_ARGS');
  assert.equal(errorCode(await run('echo', { env: { 'A=B': 'x' } })), 'AGENT_BAD_ARGS');
  const stdin = utf8('{}');
  assert.equal(errorCode(await run('echo', { stdin, args: ['héllo', 'tab\there'], env: { K: 'ünï\nline' } })), 'ok');
});

test('an endless loop runs out of fuel', async () => {
  const out = await run('spin', {}, { fuel: 100_000 });
  assert.equal(errorCode(out), 'AGENT_FUEL_EXHAUSTED');
  assert.ok(!out.ok && out.fuelUsed === 100_000);
});

test('a memory bomb stops at the cap', async () => {
  const out = await run('bomb', {}, { memoryMB: 4 });
  assert.equal(errorCode(out), 'AGENT_MEMORY_LIMIT');
  // 16-page steps from 2 pages never land on the 64-page cap exactly: the refused grow tells.
  const details = (out as any).error.details;
  assert.equal(details.capBytes, 4 << 20);
  assert.ok(details.memoryBytes < details.capBytes);
});

test('an output flood stops at the stdout cap', async () => {
  const out = await run('flood', {}, { maxStdoutBytes: 10_000 });
  assert.equal(errorCode(out), 'AGENT_OUTPUT_LIMIT');
});

test('a trap is AGENT_TRAP with the engine message', async () => {
  const out = await run('trap');
  assert.equal(errorCode(out), 'AGENT_TRAP');
  assert.match((out as { error: { message: string } }).error.message, /divi/i);
});

test('exit 3 is AGENT_EXIT_NONZERO with the stderr tail', async () => {
  const out = await run('exit3');
  assert.equal(errorCode(out), 'AGENT_EXIT_NONZERO');
  assert.ok(!out.ok);
  assert.equal(out.stderr, 'oops, exiting with 3\n');
  assert.deepEqual(out.error.details, {
    exitCode: 3,
    stderrTail: 'oops, exiting with 3\n',
    stdout: { text: '', bytes: 0, truncated: false },
    stderr: { text: 'oops, exiting with 3\n', bytes: 21, truncated: false },
  });
});

test('a stderr flood past its cap is AGENT_OUTPUT_LIMIT too', async () => {
  const out = await run('exit3', {}, { maxStderrBytes: 5 });
  assert.equal(errorCode(out), 'AGENT_OUTPUT_LIMIT');
  assert.equal(!out.ok && out.stderr, 'oops,');
});

test('stdout that is not JSON is AGENT_BAD_OUTPUT; empty stdout too', async () => {
  assert.equal(errorCode(await run('notjson')), 'AGENT_BAD_OUTPUT');
  assert.equal(errorCode(await run('echo')), 'AGENT_BAD_OUTPUT');
});

test('every run gets a fresh instance of the reused module', async () => {
  for (let i = 0; i < 3; i++) {
    const out = await run('counter');
    assert.ok(out.ok);
    assert.equal(out.result.output, 1);
  }
});

test('an initial memory above the cap is refused at compile time', async () => {
  await assert.rejects(prepareAgentModule(bytes.echo, 0.0625 / 2), (e: { code: string }) => e.code === 'AGENT_MEMORY_LIMIT');
});
