/**
 * The OpenAI-compatible routes, driven by the official `openai` client against a
 * real coordinator (SQLite file, models folder from the tiny-model generator) and a
 * node on a real WebSocket that speaks the node protocol and answers generate
 * tasks with a known script of tokens.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import OpenAI, { APIError, BadRequestError, NotFoundError } from 'openai';
import type { Assignment, GeneratePayload, GenerateResult, TaskId, TokenLogprob } from '../shared';
import { makeTinyModel } from '../tools/tiny-model';
import { createCoordinator, type Coordinator } from './index';
import { TestNode, apiClient, tempDir, until } from './testing';

const MODEL = 'tiny-llama';
/** What the scripted node generates, one progress message per token. */
const SCRIPT = [
  { id: 10, text: 'Hello' },
  { id: 11, text: ',' },
  { id: 12, text: ' world' },
  { id: 13, text: '!' },
  { id: 14, text: ' Bye' },
];

const tmp = tempDir('openai-');
let c: Coordinator;
let node: ScriptedNode;
let client: OpenAI;

/**
 * A node that runs generate tasks from SCRIPT: maxNewTokens cuts it (`length`), a
 * stop string cuts it (`stop`), logprobs come when asked. A prompt holding HOLD
 * streams two tokens and then waits for task.cancel; FAIL fails at once, FAILMID
 * after one token (MODEL_CORRUPT, which is not retried); RETRY fails its first
 * attempt after three tokens with INFERENCE_FAILED, which is retried.
 */
class ScriptedNode {
  readonly payloads = new Map<string, GeneratePayload>();
  readonly cancelled = new Set<string>();
  constructor(readonly test: TestNode) {
    test.ws.on('message', (data) => {
      const msg = JSON.parse(String(data)) as { type: string; tasks?: Assignment[]; taskId?: string };
      if (msg.type === 'task.assign') for (const a of msg.tasks!) this.#run(a);
      if (msg.type === 'task.cancel') this.cancelled.add(msg.taskId!);
    });
  }

  static async connect(url: string): Promise<ScriptedNode> {
    const t = await TestNode.open(url);
    const node = new ScriptedNode(t);
    t.send({
      type: 'hello',
      protocol: 1,
      name: 'scripted',
      capabilities: {
        kinds: ['generate'],
        maxConcurrent: 1,
        webgpu: null,
        models: [MODEL],
        inference: { maxSequences: 16, models: [{ name: MODEL, backend: 'engine', device: 'webgpu', loaded: true, tokensPerSec: 123 }] },
        adapters: [],
      },
    });
    t.id = (await t.next('welcome')).nodeId;
    return node;
  }

  #run(a: Assignment): void {
    const p = a.payload as GeneratePayload;
    this.payloads.set(a.taskId, p);
    const input = p.prompt ?? p.messages!.map((m) => m.content).join('');
    const send = (msg: unknown): void => this.test.send(msg);
    if (input.includes('FAIL') && !input.includes('FAILMID')) {
      this.test.fail([a], 'MODEL_CORRUPT', 'scripted failure');
      return;
    }
    const max = p.maxNewTokens ?? SCRIPT.length;
    let text = '';
    const ids: number[] = [];
    const logprobs: TokenLogprob[] = [];
    let finish: GenerateResult['finishReason'] = 'stop';
    for (let i = 0; i < SCRIPT.length; i++) {
      if (i === max) {
        finish = 'length';
        break;
      }
      const tok = SCRIPT[i]!;
      const stop = p.stop?.find((s) => (text + tok.text).includes(s));
      if (stop) break;
      const lp: TokenLogprob = { id: tok.id, token: tok.text, logprob: -0.1 * (i + 1) };
      if (p.logprobs) lp.top = Array.from({ length: p.logprobs }, (_, j) => ({ id: 100 + j, token: `alt${j}`, logprob: -1 - j }));
      text += tok.text;
      ids.push(tok.id);
      logprobs.push(lp);
      send({
        type: 'task.progress',
        taskId: a.taskId,
        leaseId: a.leaseId,
        progress: { kind: 'tokens', text: tok.text, tokens: i + 1, ids: [tok.id], ...(p.logprobs !== undefined ? { logprobs: [lp] } : {}) },
      });
      if (input.includes('FAILMID')) {
        this.test.fail([a], 'MODEL_CORRUPT', 'scripted failure mid-stream');
        return;
      }
      if (input.includes('HOLD') && i === 1) return;
      if (input.includes('RETRY') && a.attempt === 1 && i === 2) {
        this.test.fail([a], 'INFERENCE_FAILED', 'scripted failure, retried');
        return;
      }
    }
    const result: GenerateResult = {
      text,
      tokens: ids,
      finishReason: finish,
      usage: { promptTokens: input.length, completionTokens: ids.length },
      ...(p.logprobs !== undefined ? { logprobs } : {}),
      backend: 'engine',
      device: 'webgpu',
      ttftMs: 1,
      durationMs: 2,
      tokensPerSec: 100,
    };
    this.test.succeed([a], () => result);
  }
}

const taskIds = (headers: Headers): TaskId[] => (headers.get('x-task-ids') ?? '').split(',').filter(Boolean) as TaskId[];

before(async () => {
  await makeTinyModel({ seed: 1, dir: join(tmp.dir, 'models', MODEL) });
  // The adapter BASE:ADAPTER requests name must exist at submit (ADAPTER_NOT_FOUND otherwise); the scripted node never reads it.
  mkdirSync(join(tmp.dir, 'models', MODEL, 'adapters', 'my-lora'), { recursive: true });
  writeFileSync(join(tmp.dir, 'models', MODEL, 'adapters', 'my-lora', 'adapter_config.json'), '{"peft_type":"LORA"}');
  c = await createCoordinator({ dbPath: join(tmp.dir, 'c.db'), modelsDir: join(tmp.dir, 'models'), heartbeatIntervalMs: 60_000, retryBaseMs: 5 });
  node = await ScriptedNode.connect(c.url);
  client = new OpenAI({ baseURL: `${c.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});

after(async () => {
  await node.test.close();
  // After an aborted request, undici (fetch) can leave a connection it opened and never used;
  // Node's server.close() waits for such a connection until the keep-alive timeout (72 s).
  c.app.server.closeAllConnections();
  await c.close();
  tmp.cleanup();
});

describe('models', () => {
  test('lists the models folder with the nodes that hold each model; retrieve answers one or 404', async () => {
    const page = await client.models.list();
    const tiny = page.data.find((m) => m.id === MODEL) as unknown as Record<string, unknown>;
    assert.ok(tiny, JSON.stringify(page.data));
    assert.equal(tiny.object, 'model');
    assert.equal(tiny.owned_by, 'exec-node');
    assert.equal(typeof tiny.created, 'number');
    assert.equal(tiny.served, true);
    assert.deepEqual(tiny.nodes, [{ nodeId: node.test.id, nodeName: 'scripted', loaded: true, backend: 'engine', device: 'webgpu', tokensPerSec: 123 }]);
    const one = await client.models.retrieve(MODEL);
    assert.equal(one.id, MODEL);
    await assert.rejects(client.models.retrieve('nope'), (e: unknown) => {
      assert.ok(e instanceof NotFoundError);
      assert.equal(e.code, 'model_not_found');
      return true;
    });
  });
});

describe('chat completions', () => {
  test('non-streamed: the answer object, the journaled task and its payload', async () => {
    const { data, response } = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: 'developer', content: 'be brief' }, { role: 'user', content: 'hi' }], max_tokens: 3, seed: 7, temperature: 0.5, top_p: 0.9, user: 'ignored' })
      .withResponse();
    const [id] = taskIds(response.headers);
    assert.equal(data.id, `chatcmpl-${id}`);
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.model, MODEL);
    assert.equal(data.system_fingerprint, 'engine-webgpu');
    assert.equal(data.choices.length, 1);
    assert.deepEqual(data.choices[0]!.message, { role: 'assistant', content: 'Hello, world', refusal: null });
    assert.equal(data.choices[0]!.finish_reason, 'length');
    assert.equal(data.choices[0]!.logprobs, null);
    assert.deepEqual(data.usage, { prompt_tokens: 'be briefhi'.length, completion_tokens: 3, total_tokens: 13 });
    const record = c.journal.getTask(id!)!;
    assert.equal(record.state, 'succeeded');
    assert.equal(record.kind, 'generate');
    assert.deepEqual(record.payload, {
      model: MODEL,
      messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }],
      maxNewTokens: 3,
      temperature: 0.5,
      topP: 0.9,
      seed: 7,
    });
  });

  test('n=2 with a seed: two tasks, seeds seed and seed+1; stop passed through; BASE:ADAPTER', async () => {
    const { data, response } = await client.chat.completions
      .create({ model: `${MODEL}:my-lora`, messages: [{ role: 'user', content: 'hi' }], n: 2, seed: 41, stop: '!', max_completion_tokens: 10 })
      .withResponse();
    const ids = taskIds(response.headers);
    assert.equal(ids.length, 2);
    assert.equal(data.model, `${MODEL}:my-lora`);
    assert.deepEqual(data.choices.map((ch) => [ch.index, ch.message.content, ch.finish_reason]), [
      [0, 'Hello, world', 'stop'],
      [1, 'Hello, world', 'stop'],
    ]);
    assert.deepEqual(data.usage, { prompt_tokens: 2, completion_tokens: 6, total_tokens: 8 }, 'prompt tokens once, completions summed');
    const payloads = ids.map((id) => c.journal.getTask(id)!.payload as GeneratePayload);
    assert.deepEqual(payloads.map((p) => [p.model, p.adapter, p.seed, p.stop, p.maxNewTokens]), [
      [MODEL, 'my-lora', 41, ['!'], 10],
      [MODEL, 'my-lora', 42, ['!'], 10],
    ]);
  });

  test('logprobs and top_logprobs in the chat shape; response_format reaches the payload', async () => {
    const schema = { type: 'object', properties: { a: { type: 'string' } }, required: ['a'] };
    const { data, response } = await client.chat.completions
      .create({
        model: MODEL,
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 2,
        logprobs: true,
        top_logprobs: 2,
        response_format: { type: 'json_schema', json_schema: { name: 'thing', schema, strict: true } },
      })
      .withResponse();
    const content = data.choices[0]!.logprobs!.content!;
    assert.deepEqual(content[0], {
      token: 'Hello',
      logprob: -0.1,
      bytes: [...Buffer.from('Hello')],
      top_logprobs: [
        { token: 'alt0', logprob: -1, bytes: [...Buffer.from('alt0')] },
        { token: 'alt1', logprob: -2, bytes: [...Buffer.from('alt1')] },
      ],
    });
    assert.equal(content.length, 2);
    const payload = c.journal.getTask(taskIds(response.headers)[0]!)!.payload as GeneratePayload;
    assert.equal(payload.logprobs, 2);
    assert.deepEqual(payload.responseFormat, { type: 'json_schema', schema, name: 'thing' });
  });

  test('streamed with n=2 and include_usage: role first, content deltas by index, finish, usage, [DONE]', async () => {
    const stream = await client.chat.completions.create({
      model: MODEL,
      messages: [{ role: 'user', content: 'hey' }],
      n: 2,
      stream: true,
      stream_options: { include_usage: true },
      logprobs: true,
    });
    const text = ['', ''];
    const first: Array<Record<string, unknown> | undefined> = [undefined, undefined];
    const finish: Array<string | null> = [null, null];
    const lps: number[] = [0, 0];
    let usage: unknown = undefined;
    let ids = new Set<string>();
    for await (const ch of stream) {
      ids.add(ch.id);
      assert.equal(ch.object, 'chat.completion.chunk');
      if (ch.choices.length === 0) {
        usage = ch.usage;
        continue;
      }
      assert.equal(ch.usage, null, 'chunks before the last carry usage: null');
      assert.equal(ch.choices.length, 1);
      const choice = ch.choices[0]!;
      first[choice.index] ??= choice.delta as Record<string, unknown>;
      text[choice.index] += choice.delta.content ?? '';
      lps[choice.index]! += choice.logprobs?.content?.length ?? 0;
      if (choice.finish_reason) finish[choice.index] = choice.finish_reason;
    }
    assert.equal(ids.size, 1);
    ids = new Set();
    assert.deepEqual(first, [{ role: 'assistant', content: '' }, { role: 'assistant', content: '' }]);
    assert.deepEqual(text, ['Hello, world! Bye', 'Hello, world! Bye']);
    assert.deepEqual(finish, ['stop', 'stop']);
    assert.deepEqual(lps, [5, 5]);
    assert.deepEqual(usage, { prompt_tokens: 3, completion_tokens: 10, total_tokens: 13 });
  });

  test('a client that aborts mid-stream cancels the task, and the node is told', async () => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: 'user', content: 'HOLD' }], stream: true })
      .withResponse();
    const [id] = taskIds(response.headers);
    let got = '';
    for await (const ch of stream) {
      got += ch.choices[0]?.delta.content ?? '';
      if (got === 'Hello,') break; // leaving the loop aborts the request
    }
    const record = await until(() => {
      const r = c.journal.getTask(id!);
      return r?.state === 'cancelled' && r;
    }, 5_000, 'task cancelled');
    assert.equal(record.state, 'cancelled');
    await until(() => node.cancelled.has(id!), 5_000, 'node told to cancel');
  });

  test('a task retried after part of its text was streamed: the client sees each token once', async () => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: MODEL, messages: [{ role: 'user', content: 'RETRY' }], stream: true, seed: 3 })
      .withResponse();
    let text = '';
    for await (const ch of stream) text += ch.choices[0]?.delta.content ?? '';
    assert.equal(text, 'Hello, world! Bye');
    assert.equal(c.journal.getTask(taskIds(response.headers)[0]!)!.attempts, 2);
  });

  test('a task that fails: OpenAI error with our code, whole or mid-stream', async () => {
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'FAIL' }] }), (e: unknown) => {
      assert.ok(e instanceof APIError);
      assert.equal(e.status, 422);
      assert.equal(e.code, 'model_corrupt');
      assert.equal(e.type, 'invalid_request_error');
      return true;
    });
    const stream = await client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'FAILMID' }], stream: true });
    let got = '';
    await assert.rejects(
      (async () => {
        for await (const ch of stream) got += ch.choices[0]?.delta.content ?? '';
      })(),
      (e: unknown) => {
        assert.ok(e instanceof APIError);
        assert.equal(e.code, 'model_corrupt');
        assert.match(e.message, /scripted failure mid-stream/);
        return true;
      },
    );
    assert.equal(got, 'Hello');
  });
});

describe('completions', () => {
  test('non-streamed: prompts × n choices in order, logprobs in the legacy shape, default max_tokens', async () => {
    const { data, response } = await client.completions
      .create({ model: MODEL, prompt: ['a', 'bb'], n: 2, logprobs: 1, max_tokens: 2 })
      .withResponse();
    assert.match(data.id, /^cmpl-/);
    assert.equal(data.object, 'text_completion');
    assert.deepEqual(data.choices.map((ch) => [ch.index, ch.text, ch.finish_reason]), [
      [0, 'Hello,', 'length'],
      [1, 'Hello,', 'length'],
      [2, 'Hello,', 'length'],
      [3, 'Hello,', 'length'],
    ]);
    assert.deepEqual(data.choices[0]!.logprobs, {
      tokens: ['Hello', ','],
      token_logprobs: [-0.1, -0.2],
      top_logprobs: [{ alt0: -1 }, { alt0: -1 }],
      text_offset: [0, 5],
    });
    assert.deepEqual(data.usage, { prompt_tokens: 3, completion_tokens: 8, total_tokens: 11 });
    const payloads = taskIds(response.headers).map((id) => c.journal.getTask(id)!.payload as GeneratePayload);
    assert.deepEqual(payloads.map((p) => p.prompt), ['a', 'a', 'bb', 'bb']);
    const plain = await client.completions.create({ model: MODEL, prompt: 'x' });
    assert.equal(plain.choices[0]!.text, 'Hello, world! Bye', 'five tokens fit OpenAI’s default max_tokens of 16');
    assert.equal(plain.choices[0]!.logprobs, null);
  });

  test('streamed: text chunks, stop string cut, usage chunk', async () => {
    const stream = await client.completions.create({ model: MODEL, prompt: 'go', stream: true, stop: [' world'], stream_options: { include_usage: true } });
    let text = '';
    let finish: string | null = null;
    let usage: unknown;
    for await (const ch of stream) {
      assert.equal(ch.object, 'text_completion');
      if (ch.choices.length === 0) usage = ch.usage;
      for (const choice of ch.choices) {
        text += choice.text;
        finish = choice.finish_reason ?? finish;
      }
    }
    assert.equal(text, 'Hello,');
    assert.equal(finish, 'stop');
    assert.deepEqual(usage, { prompt_tokens: 2, completion_tokens: 2, total_tokens: 4 });
  });
});

describe('errors in OpenAI shape', () => {
  test('an unknown model is 404 model_not_found through the typed error', async () => {
    await assert.rejects(client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'hi' }] }), (e: unknown) => {
      assert.ok(e instanceof NotFoundError);
      assert.equal(e.status, 404);
      assert.equal(e.code, 'model_not_found');
      assert.equal(e.param, 'model');
      assert.equal(e.type, 'invalid_request_error');
      return true;
    });
    const before = c.journal.listTasks({ limit: 1000 }).length;
    await assert.rejects(client.completions.create({ model: 'bad name!', prompt: 'x' }), NotFoundError);
    assert.equal(c.journal.listTasks({ limit: 1000 }).length, before, 'nothing journaled for a refused request');
  });

  test('a bad request: 400 with message, type, param and code', async () => {
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: [] }), (e: unknown) => {
      assert.ok(e instanceof BadRequestError);
      assert.equal(e.code, 'schema_violation');
      assert.equal(e.param, 'messages');
      assert.equal(e.type, 'invalid_request_error');
      assert.ok(e.message.length > 0);
      return true;
    });
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], temperature: 3 }), (e: unknown) => {
      assert.ok(e instanceof BadRequestError);
      assert.equal(e.param, 'temperature');
      return true;
    });
    await assert.rejects(client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], frequency_penalty: 1 }), (e: unknown) => {
      assert.ok(e instanceof BadRequestError);
      assert.equal(e.param, 'frequency_penalty');
      return true;
    });
    const count = c.journal.listTasks({ limit: 1000 }).length;
    const unsupported = { name: 'x', schema: { type: 'string', pattern: '^a' } };
    await assert.rejects(
      client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'x' }], response_format: { type: 'json_schema', json_schema: unsupported } }),
      (e: unknown) => {
        assert.ok(e instanceof BadRequestError);
        assert.equal(e.code, 'response_format_unsupported');
        assert.equal(e.param, 'response_format.json_schema.schema');
        return true;
      },
    );
    assert.equal(c.journal.listTasks({ limit: 1000 }).length, count, 'refused before a task is queued');
    const api = apiClient(c.url);
    const notJson = await api('/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{nope' });
    assert.equal(notJson.status, 400);
    assert.deepEqual(Object.keys(notJson.body.error).sort(), ['code', 'message', 'param', 'type']);
    assert.equal(notJson.body.error.code, 'bad_json');
    // Unknown fields are ignored, as OpenAI does.
    const extra = await api('/v1/completions', { method: 'POST', json: { model: MODEL, prompt: 'x', max_tokens: 1, some_future_field: { a: 1 } } });
    assert.equal(extra.status, 200, JSON.stringify(extra.body));
    assert.equal(extra.body.choices[0].text, 'Hello');
  });

  test('a non-streamed request whose client goes away cancels its task', async () => {
    const ac = new AbortController();
    const req = client.chat.completions.create({ model: MODEL, messages: [{ role: 'user', content: 'HOLD' }] }, { signal: ac.signal });
    const id = await until(() => [...node.payloads.keys()].find((k) => node.payloads.get(k)!.messages?.[0]?.content === 'HOLD' && c.journal.getTask(k as TaskId)?.state === 'leased'), 5_000, 'task leased');
    ac.abort();
    await assert.rejects(req);
    await until(() => c.journal.getTask(id as TaskId)?.state === 'cancelled', 5_000, 'task cancelled');
  });
});
