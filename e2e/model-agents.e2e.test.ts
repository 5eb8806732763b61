/**
 * Agents that call the node's model (issue 7 item 6), for real: the built page in headless Chromium (its
 * agent workers, JSPI, the inference runtime on WebGPU/SwiftShader with the tiny Llama), a coordinator on a temp
 * SQLite file serving the model folder, tasks over HTTP. The sample program `classify` (C, built from source by
 * agents/build.sh) asks the model about each line of its stdin through the agent_model import and is suspended
 * while the model works. Its answers equal `generate` tasks for the same prompts (greedy); a prompt too long for
 * the model's context fails the task with PROMPT_TOO_LONG; a deadline that passes while the model works ends the
 * run with AGENT_TIMEOUT (and the node keeps serving); fuel counts the agent's own instructions only (the same
 * input costs the same fuel however long the model took, and one unit less ends it with AGENT_FUEL_EXHAUSTED);
 * a run past its modelCalls fails AGENT_MODEL_CALLS_EXHAUSTED.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createCoordinator, type Coordinator } from '../server';
import type { AgentResult, GenerateResult, TaskRecord } from '../shared';
import { launchNodes, type LaunchedNodes } from '../scripts/nodes';
import { DIST, ensurePageBuilt } from '../scripts/page-build';
import { makeTinyModel } from '../tools/tiny-model';
import { postTasks, waitAll, waitTask } from './tasks';

const ROOT = join(import.meta.dirname, '..');
const MODEL = 'tiny-llama';
const TEMPLATE = 'Text: {line}\nCategory:';
const LINES = ['the cat sat on the mat', 'stocks fell sharply today', 'a goal in the last minute', 'rain falls on the hills'];

let dir = '';
let coordinator: Coordinator;
let url = '';
let nodes: LaunchedNodes;

before(async () => {
  await ensurePageBuilt();
  dir = mkdtempSync(join(tmpdir(), 'e2e-model-agents-'));
  await makeTinyModel({ seed: 11, dir: join(dir, 'models', MODEL) });
  coordinator = await createCoordinator({ dbPath: join(dir, 'coordinator.db'), port: 0, staticDir: DIST, modelsDir: join(dir, 'models') });
  url = coordinator.url.replace(/\/$/, '');
  const config = encodeURIComponent(JSON.stringify({ imports: ['agent_model'] }));
  const res = await fetch(`${url}/v1/agents/classify/versions/1?config=${config}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/wasm' },
    body: readFileSync(join(ROOT, 'agents/dist/programs/classify.wasm')),
  });
  assert.equal(res.status, 201, await res.text());
  nodes = await launchNodes({ url, count: 1, userDataRoot: dir, query: { backends: 'engine', sequences: '8', workers: '2' }, log: (l) => process.stderr.write(`${l}\n`) });
});

after(async () => {
  await nodes?.close();
  coordinator?.app.server.closeAllConnections();
  await coordinator?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const classify = (lines: readonly string[], extra: { args?: string[]; limits?: Record<string, number>; modelCalls?: number } = {}) => ({
  kind: 'agent',
  maxAttempts: 1,
  payload: {
    agent: 'classify',
    model: MODEL,
    stdin: { text: lines.join('\n') + '\n' },
    args: extra.args ?? ['--max-tokens', '6'],
    ...(extra.limits ? { limits: extra.limits } : {}),
    ...(extra.modelCalls !== undefined ? { modelCalls: extra.modelCalls } : {}),
  },
});

async function one(spec: unknown): Promise<TaskRecord> {
  const [id] = await postTasks(url, [spec]);
  return waitTask(url, id!);
}

interface Classified {
  results: { line: string; label: string; answer: string }[];
  calls: number;
}

describe('an agent that calls the node model (JSPI in Chromium)', () => {
  test('the node advertises it runs them', async () => {
    const list = (await (await fetch(`${url}/v1/nodes`)).json()) as { nodes: { capabilities: { jspi?: boolean } }[] };
    assert.equal(list.nodes.length, 1);
    assert.equal(list.nodes[0]!.capabilities.jspi, true);
  });

  test('classify: each answer is what a generate task gives for the same prompt; the result counts calls and tokens', async () => {
    const direct = await waitAll(url, await postTasks(url, LINES.map((line) => ({
      kind: 'generate',
      payload: { model: MODEL, prompt: TEMPLATE.replace('{line}', line), maxNewTokens: 6, temperature: 0, stream: false },
    }))));
    for (const r of direct) assert.equal(r.state, 'succeeded', JSON.stringify(r.error));
    assert.ok(direct.some((d) => (d.result as GenerateResult).text.trim() !== ''), 'the model says something');
    // Three runs at once: their calls share the node's batches with one another.
    const runs = await waitAll(url, await postTasks(url, [classify(LINES), classify(LINES), classify(LINES)]));
    for (const rec of runs) {
      assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
      const result = rec.result as AgentResult;
      const out = result.output as Classified;
      assert.equal(out.calls, LINES.length);
      assert.deepEqual(out.results.map((r) => r.line), LINES);
      assert.deepEqual(out.results.map((r) => r.answer), direct.map((d) => (d.result as GenerateResult).text));
      assert.equal(result.model?.calls, LINES.length);
      assert.equal(result.model?.failed, 0);
      assert.equal(result.model?.completionTokens, direct.reduce((n, d) => n + (d.result as GenerateResult).usage.completionTokens, 0));
      assert.equal(result.model?.promptTokens, direct.reduce((n, d) => n + (d.result as GenerateResult).usage.promptTokens, 0));
      assert.ok(result.model!.waitMs > 0, 'it waited for the model');
    }
    // Fuel counts the agent's instructions only: the same input costs the same whatever the waits were.
    const fuel = runs.map((r) => (r.result as AgentResult).fuelUsed);
    assert.equal(new Set(fuel).size, 1, `fuel ${fuel.join(', ')}`);
    const exact = await one(classify(LINES, { limits: { fuel: fuel[0]! } }));
    assert.equal(exact.state, 'succeeded', JSON.stringify(exact.error));
    const short = await one(classify(LINES, { limits: { fuel: fuel[0]! - 1 } }));
    assert.equal(short.error?.code, 'AGENT_FUEL_EXHAUSTED', JSON.stringify(short.error));
    assert.equal((short.error?.details as { model?: { calls: number } }).model?.calls, LINES.length, 'it ran out after its last call');
  });

  test('a prompt too long for the model: the agent is told, and the task fails PROMPT_TOO_LONG', async () => {
    const long = Array.from({ length: 400 }, (_, i) => `word${i}`).join(' ');
    const rec = await one(classify(['short line', long]));
    assert.equal(rec.state, 'failed');
    assert.equal(rec.error?.code, 'PROMPT_TOO_LONG', JSON.stringify(rec.error));
    const details = rec.error?.details as { exitCode: number; modelError: { code: string }; model: { calls: number; failed: number }; stderr: { text: string } };
    assert.equal(details.exitCode, 3);
    assert.equal(details.modelError.code, 'PROMPT_TOO_LONG');
    assert.deepEqual([details.model.calls, details.model.failed], [2, 1]);
    assert.match(details.stderr.text, /refused line 2 \(-1\): PROMPT_TOO_LONG/);
  });

  test('more calls than modelCalls: AGENT_MODEL_CALLS_EXHAUSTED', async () => {
    const rec = await one(classify(LINES, { modelCalls: 2 }));
    assert.equal(rec.error?.code, 'AGENT_MODEL_CALLS_EXHAUSTED', JSON.stringify(rec.error));
    assert.match((rec.error?.details as { stderr: { text: string } }).stderr.text, /refused line 3 \(-3\)/);
  });

  test('the deadline passes while the model works: AGENT_TIMEOUT, the calls are cancelled and the node keeps serving', async () => {
    const many = Array.from({ length: 64 }, (_, i) => `line number ${i}`);
    const t0 = Date.now();
    const rec = await one(classify(many, { args: ['--max-tokens', '200'], limits: { timeoutMs: 400 } }));
    assert.equal(rec.error?.code, 'AGENT_TIMEOUT', JSON.stringify(rec.error));
    assert.ok(Date.now() - t0 < 20_000, 'ended at its deadline, not after 64 generations');
    // Nothing of it is left decoding: the node's next run gets its answers as before.
    const next = await one(classify(LINES.slice(0, 1)));
    assert.equal(next.state, 'succeeded', JSON.stringify(next.error));
    const active = await nodes.pages[0]!.evaluate(() => window.__execNode!.stats().inference!.active);
    assert.equal(active, 0, 'no sequence left decoding');
  });
});
