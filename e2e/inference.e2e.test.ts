/**
 * Text generation through the pool, for real: the built page in headless Chromium (its inference
 * worker, the IndexedDB weight store, WebGPU on SwiftShader and onnxruntime-web's WASM EP), a
 * coordinator on a temp SQLite file serving tiny model folders, tasks over HTTP. Greedy tokens are
 * compared with transformers.js in Node (onnxruntime-node), an independent implementation.
 */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AutoModelForCausalLM, AutoTokenizer, env, type Tensor } from '@huggingface/transformers';
import OpenAI from 'openai';
import { createCoordinator, type Coordinator } from '../server';
import type { GenerateResult, TaskRecord } from '../shared';
import { launchNodes, type LaunchedNodes } from '../scripts/nodes';
import { DIST, ensurePageBuilt } from '../scripts/page-build';
import { until } from '../server/testing';
import { makeTinyModel } from '../tools/tiny-model';

let dir = '';
let modelsDir = '';
let coordinator: Coordinator;
let url = '';

before(async () => {
  await ensurePageBuilt();
  dir = mkdtempSync(join(tmpdir(), 'e2e-inference-'));
  modelsDir = join(dir, 'models');
  await makeTinyModel({ seed: 11, dir: join(modelsDir, 'tiny-llama') });
  await makeTinyModel({ seed: 12, arch: 'qwen2', dir: join(modelsDir, 'tiny-qwen2') });
  await makeTinyModel({ seed: 13, arch: 'gemma', dir: join(modelsDir, 'tiny-gemma') });
  await makeTinyModel({ seed: 14, dir: join(modelsDir, 'no-tokenizer') });
  await rm(join(modelsDir, 'no-tokenizer', 'tokenizer.json'));
  await rm(join(modelsDir, 'no-tokenizer', 'manifest.json'));
  coordinator = await createCoordinator({ dbPath: join(dir, 'coordinator.db'), port: 0, staticDir: DIST, modelsDir });
  url = coordinator.url.replace(/\/$/, '');
});

after(async () => {
  // An aborted stream can leave an idle keep-alive connection that close() would wait out.
  coordinator?.app.server.closeAllConnections();
  await coordinator?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

async function submit(spec: unknown): Promise<string> {
  const res = await fetch(`${url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(spec) });
  const body = (await res.json()) as { id?: string };
  assert.equal(res.status, 202, JSON.stringify(body));
  return body.id!;
}

async function wait(id: string): Promise<TaskRecord> {
  for (let i = 0; i < 6; i++) {
    const rec = (await (await fetch(`${url}/v1/tasks/${id}/wait?timeoutMs=30000`)).json()) as TaskRecord;
    if (['succeeded', 'failed', 'dead', 'cancelled'].includes(rec.state)) return rec;
  }
  throw new Error(`task ${id} did not end within 3 minutes`);
}

async function generate(payload: Record<string, unknown>, extra: Record<string, unknown> = {}): Promise<TaskRecord> {
  return wait(await submit({ kind: 'generate', payload, ...extra }));
}

function result(rec: TaskRecord): GenerateResult {
  assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
  return rec.result as GenerateResult;
}

/** transformers.js' own greedy generate in Node. */
async function reference(model: string, prompt: string, maxNew: number): Promise<number[]> {
  env.allowLocalModels = true;
  env.localModelPath = modelsDir + '/';
  env.allowRemoteModels = false;
  env.cacheDir = join(dir, '.tjs');
  const tok = await AutoTokenizer.from_pretrained(model);
  const m = await AutoModelForCausalLM.from_pretrained(model, { dtype: 'fp32' });
  const inputs = tok(prompt);
  const out = (await m.generate({ ...inputs, max_new_tokens: maxNew, do_sample: false })) as Tensor;
  await m.dispose();
  return Array.from(out.data as BigInt64Array, Number).slice((inputs.input_ids as Tensor).dims[1]!);
}

const PROMPTS = ['the cat', 'a dog and a bird went', 'once upon a time there was', 'hello', 'the quick brown fox jumps over', 'we', 'light and dark', 'rain falls on the'];

function fileRequests(model: string): Promise<number> {
  return coordinator.metrics.value('coordinator_model_file_requests_total', { model });
}

async function launch(backends: string): Promise<LaunchedNodes> {
  return launchNodes({ url, count: 1, userDataRoot: dir, query: { backends, sequences: '8', workers: '1' }, log: (l) => process.stderr.write(`${l}\n`) });
}

describe('transformers.js on onnxruntime-web WebGPU EP (the architecture the engine does not run)', () => {
  let nodes: LaunchedNodes;
  before(async () => {
    nodes = await launch('webgpu');
  });
  after(async () => {
    await nodes?.close();
  });
  test('tiny-gemma: greedy tokens equal transformers.js in Node', async () => {
    const prompt = PROMPTS[0]!;
    const r = result(await generate({ model: 'tiny-gemma', prompt, maxNewTokens: 6 }));
    assert.deepEqual(r.tokens, (await reference('tiny-gemma', prompt, 6)).slice(0, r.tokens.length));
    assert.equal(r.backend, 'transformers');
    assert.equal(r.device, 'webgpu');
  });
});

for (const [label, backends, models, want] of [
  ['the engine on WebGPU (SwiftShader)', 'engine', ['tiny-llama', 'tiny-qwen2'], { backend: 'engine', device: 'webgpu' }],
  ['transformers.js on the WASM EP', 'wasm', ['tiny-llama', 'tiny-qwen2', 'tiny-gemma'], { backend: 'transformers', device: 'wasm' }],
] as const) {
  describe(`a headless node serving generate with ${label}`, () => {
    let nodes: LaunchedNodes;
    before(async () => {
      nodes = await launch(backends);
    });
    after(async () => {
      await nodes?.close();
    });

    for (const model of models) {
      test(`${model}: greedy tokens equal transformers.js in Node`, async () => {
        const prompt = PROMPTS[2]!;
        const rec = await generate({ model, prompt, maxNewTokens: 12 });
        const r = result(rec);
        const ref = await reference(model, prompt, 12);
        assert.deepEqual(r.tokens, ref.slice(0, r.tokens.length));
        assert.ok(r.tokens.length === 12 || r.finishReason === 'stop');
        assert.equal(r.backend, want.backend);
        assert.equal(r.device, want.device);
        assert.equal(r.usage.completionTokens, r.tokens.length);
      });
    }

    test('eight concurrent requests share the batch and give the tokens each gives alone', async () => {
      const alone: number[][] = [];
      for (const p of PROMPTS) alone.push(result(await generate({ model: 'tiny-llama', prompt: p, maxNewTokens: 10 })).tokens);
      const ids = await Promise.all(PROMPTS.map((p) => submit({ kind: 'generate', payload: { model: 'tiny-llama', prompt: p, maxNewTokens: 10 } })));
      const together = await Promise.all(ids.map(wait));
      assert.deepEqual(together.map((t) => result(t).tokens), alone);
      // The coordinator leased several of them to the node at once (its advertised sequences).
      const node = [...coordinator.scheduler.nodes.values()].find((n) => n.connected);
      assert.equal(node?.capabilities.inference?.maxSequences, 16, '8 decoding at once plus 8 waiting in its batcher');
    });

    test('tokens stream as progress over server-sent events, and the stream adds up to the result', async () => {
      const id = await submit({ kind: 'generate', payload: { model: 'tiny-llama', messages: [{ role: 'user', content: 'tell me a story' }], maxNewTokens: 24, temperature: 0.9, seed: 7 } });
      const res = await fetch(`${url}/v1/tasks/${id}/events`);
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      let buf = '';
      let text = '';
      let final: TaskRecord | null = null;
      for (let i = 0; i < 10_000 && !final; i++) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let cut: number;
        while ((cut = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const event = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (!data) continue;
          const parsed = JSON.parse(data) as { progress?: { kind: string; text: string }; state?: string };
          if (event === 'progress' && parsed.progress?.kind === 'tokens') text += parsed.progress.text;
          if (event === 'record') final = parsed as TaskRecord;
        }
      }
      await reader.cancel().catch(() => undefined);
      const rec = final ?? (await wait(id));
      const r = result(rec);
      assert.ok(r.tokens.length > 0);
      assert.equal(text, r.text);
      const again = result(await generate({ model: 'tiny-llama', messages: [{ role: 'user', content: 'tell me a story' }], maxNewTokens: 24, temperature: 0.9, seed: 7 }));
      assert.equal(again.text, r.text, 'the same seed gives the same text');
    });

    test('weights come from IndexedDB after a reload: no model file request reaches the coordinator', async () => {
      assert.ok(result(await generate({ model: 'tiny-llama', prompt: 'warm', maxNewTokens: 2 })).tokens.length > 0);
      const before = await fileRequests('tiny-llama');
      assert.ok(before > 0, 'the first load fetched the files');
      const page = nodes.pages[0]!;
      await page.reload();
      await page.waitForFunction(() => window.__execNode?.state === 'connected', null, { timeout: 60_000 });
      assert.ok(result(await generate({ model: 'tiny-llama', prompt: 'after the reload', maxNewTokens: 3 })).tokens.length > 0);
      assert.equal(await fileRequests('tiny-llama'), before);
    });

    test('the official openai client: chat and completions, whole and streamed, JSON mode; an abort mid-stream cancels the task', async () => {
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
      const models = await client.models.list();
      assert.ok(models.data.some((m) => m.id === 'tiny-llama'));
      const chat = await client.chat.completions.create({ model: 'tiny-llama', messages: [{ role: 'user', content: 'hello' }], max_tokens: 12, temperature: 0 });
      assert.equal(chat.object, 'chat.completion');
      assert.ok(chat.usage && chat.usage.completion_tokens > 0);
      const alone = result(await generate({ model: 'tiny-llama', messages: [{ role: 'user', content: 'hello' }], maxNewTokens: 12 }));
      assert.equal(chat.choices[0]!.message.content, alone.text, 'the OpenAI route and a plain task give the same greedy text');

      const stream = await client.chat.completions.create({
        model: 'tiny-llama',
        messages: [{ role: 'user', content: 'hello' }],
        max_tokens: 12,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      });
      let text = '';
      let usage: OpenAI.CompletionUsage | null | undefined = null;
      for await (const chunk of stream) {
        text += chunk.choices[0]?.delta.content ?? '';
        if (chunk.usage) usage = chunk.usage;
      }
      assert.equal(text, alone.text);
      assert.equal(usage?.completion_tokens, chat.usage.completion_tokens);

      const done = await client.completions.create({ model: 'tiny-llama', prompt: PROMPTS[2]!, max_tokens: 12, temperature: 0 });
      const plain = result(await generate({ model: 'tiny-llama', prompt: PROMPTS[2]!, maxNewTokens: 12 }));
      assert.equal(done.choices[0]!.text, plain.text);

      const json = await client.chat.completions.create({
        model: 'tiny-llama',
        messages: [{ role: 'user', content: 'describe a cat' }],
        max_tokens: 60,
        temperature: 0.8,
        seed: 4,
        response_format: {
          type: 'json_schema',
          json_schema: { name: 'cat', schema: { type: 'object', properties: { name: { type: 'string', maxLength: 8 }, age: { type: 'integer' } }, required: ['name', 'age'], additionalProperties: false } },
        },
      });
      const parsed = JSON.parse(json.choices[0]!.message.content ?? '') as { name: unknown; age: unknown };
      assert.equal(typeof parsed.name, 'string');
      assert.ok(Number.isInteger(parsed.age), 'random tiny weights, yet the output validates: constrained decoding');

      // Leaving the loop aborts the request: the coordinator cancels the task and the node frees its slot. The abort
      // must come while the task still runs: on the WASM EP the 200 tokens take a few hundred ms, and under load the
      // first chunks can reach the client after the generation ended (then there is nothing to cancel: a new try).
      let rec: TaskRecord | null = null;
      for (let attempt = 0; attempt < 3 && rec === null; attempt++) {
        const { data: long, response } = await client.chat.completions
          .create({ model: 'tiny-llama', messages: [{ role: 'user', content: 'go on' }], max_tokens: 200, temperature: 1, seed: 1 + attempt, stream: true })
          .withResponse();
        const id = (response.headers.get('x-task-ids') ?? '').split(',')[0]!;
        for await (const chunk of long) {
          if (chunk.choices[0]?.delta.content) break;
        }
        const atAbort = (await (await fetch(`${url}/v1/tasks/${id}`)).json()) as TaskRecord;
        if (['succeeded', 'failed', 'dead'].includes(atAbort.state)) continue; // it ended before the client left
        rec = await wait(id);
      }
      assert.ok(rec, 'in one of three tries the client left while the task ran');
      assert.equal(rec.state, 'cancelled');
      const page = nodes.pages[0]!;
      await page.waitForFunction(() => (window.__execNode?.stats().inference?.active ?? 1) === 0, null, { timeout: 30_000 });
    });

    test('bad input ends with its code and the node keeps serving', async () => {
      const unknown = await fetch(`${url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ kind: 'generate', payload: { model: 'no-such-model', prompt: 'hi' } }) });
      assert.equal(unknown.status, 404, 'refused at submit, before it is journaled');
      assert.equal(((await unknown.json()) as { error: { code: string } }).error.code, 'MODEL_NOT_FOUND');
      const schema = await fetch(`${url}/v1/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ kind: 'generate', payload: { model: 'tiny-llama', prompt: 'hi', responseFormat: { type: 'json_schema', schema: { type: 'string', pattern: '^a+$' } } } }),
      });
      assert.equal(((await schema.json()) as { error: { code: string } }).error.code, 'RESPONSE_FORMAT_UNSUPPORTED');
      const long = await generate({ model: 'tiny-llama', prompt: 'the cat sat on the mat '.repeat(200) });
      assert.equal(long.error?.code, 'PROMPT_TOO_LONG');
      const missing = await generate({ model: 'no-tokenizer', prompt: 'hi' }, { maxAttempts: 1 });
      assert.equal(missing.error?.code, 'MODEL_FILE_MISSING');
      if (backends === 'engine') {
        const gemma = await generate({ model: 'tiny-gemma', prompt: 'hi' });
        assert.equal(gemma.error?.code, 'MODEL_UNSUPPORTED', 'the engine does not run Gemma');
      }
      assert.ok(result(await generate({ model: 'tiny-llama', prompt: 'still here', maxNewTokens: 2 })).tokens.length > 0);
    });

    if (backends === 'engine') {
      test('the GPU process crashes mid-generation: the attempt fails GPU_DEVICE_LOST, the retry reloads the model from IndexedDB on a new device', async () => {
        const before = await fileRequests('tiny-llama');
        const id = await submit({ kind: 'generate', payload: { model: 'tiny-llama', prompt: 'the cat', maxNewTokens: 200 } });
        // Wait until it is generating, then crash Chromium's GPU process (a real device loss, every worker's).
        await until(() => coordinator.watch.backlog(id).some((e) => e.type === 'progress'), 60_000, 'first tokens');
        const cdp = await nodes.context.newCDPSession(nodes.pages[0]!);
        await cdp.send('Browser.crashGpuProcess' as never);
        const rec = await wait(id);
        assert.equal(rec.state, 'succeeded', JSON.stringify(rec.error));
        assert.equal(rec.attempts, 2, 'one attempt lost with the device, the retry succeeded');
        assert.equal(await fileRequests('tiny-llama'), before, 'the reload came from IndexedDB');
        assert.ok((await coordinator.metrics.value('coordinator_task_attempt_errors_total', { code: 'GPU_DEVICE_LOST' })) >= 1, 'the lost attempt was counted as GPU_DEVICE_LOST');
      });
    }
  });
}

describe('a node whose inference budget is smaller than the model', () => {
  let nodes: LaunchedNodes;
  before(async () => {
    nodes = await launchNodes({ url, count: 1, userDataRoot: dir, query: { backends: 'engine', workers: '1', inferenceMemoryMB: '0.1' }, log: (l) => process.stderr.write(`${l}\n`) });
  });
  after(async () => {
    await nodes?.close();
  });
  test('is sent no task for that model: the task waits no_capable_node with the sizes, then fails NO_CAPABLE_NODE at its deadline', async () => {
    // The node advertises its budget (inference.memoryBudgetBytes); the coordinator knows the model's weight files.
    const id = await submit({ kind: 'generate', payload: { model: 'tiny-llama', prompt: 'hi' }, deadline: Date.now() + 4_000 });
    let waiting: TaskRecord['waiting'] = null;
    for (let i = 0; i < 30 && !/needs about/.test(waiting?.message ?? ''); i++) {
      waiting = ((await (await fetch(`${url}/v1/tasks/${id}`)).json()) as TaskRecord).waiting;
      if (!/needs about/.test(waiting?.message ?? '')) await new Promise((res) => setTimeout(res, 100));
    }
    assert.equal(waiting?.reason, 'no_capable_node');
    assert.match(waiting!.message, /^Model tiny-llama needs about [\d.]+ MiB for inference; the largest memory budget of the 1 connected node that could run it is 0\.1 MiB\.$/);
    const rec = await wait(id);
    assert.equal(rec.state, 'failed');
    assert.equal(rec.error?.code, 'NO_CAPABLE_NODE');
    assert.equal(rec.error?.details?.waited, 'no_capable_node');
  });
});
