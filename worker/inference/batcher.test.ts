import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '../../shared';
import { buildTinyModel, EOS_ID, IM_END_ID, IM_START_ID, BOS_ID, PAD_ID } from '../../tools/tiny-model';
import { referenceForward, referenceGreedy } from '../engine/reference';
import { loadTokenizer } from '../model';
import { Batcher, type GenerationOutput } from './batcher';
import { logSoftmax } from './logprobs';
import { ReferenceDecoder } from './reference-decoder';
import type { BatchDecoder, DecodeEntry, GenerationProgress, GenerationRequest, PrefillEntry } from './types';

const tiny = buildTinyModel({ seed: 3 });
const tokenizer = await loadTokenizer(async (name) => tiny.files.get(name) as Uint8Array);
const SPECIAL = [PAD_ID, BOS_ID, EOS_ID, IM_START_ID, IM_END_ID];
const decode = (ids: readonly number[]): string => tokenizer.decode(ids);

function batcher(maxSlots: number, decoder: BatchDecoder = new ReferenceDecoder(tiny.config, tiny.weights, { maxSlots })): Batcher {
  return new Batcher({ decoder, decode, specialIds: SPECIAL });
}

const PROMPTS = ['The cat', 'Once upon a time', 'hello', 'A B C', 'numbers 1 2 3', 'the end', 'why', 'x'].map((p) => tokenizer.encode(p));

function request(i: number, extra: Partial<GenerationRequest> = {}): GenerationRequest {
  return { id: `r${i}`, promptIds: PROMPTS[i % PROMPTS.length] as number[], maxNewTokens: 6 + 3 * i, stopTokenIds: [IM_END_ID], ...extra };
}

async function failure(p: Promise<unknown>): Promise<AppError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof AppError, String(err));
    return err;
  }
  assert.fail('expected a rejection');
}

test('eight concurrent requests give the same tokens as each run alone (greedy and seeded sampling)', async () => {
  const sampled = (i: number): Partial<GenerationRequest> => (i % 2 ? { temperature: 0.9, topK: 50, topP: 0.95, seed: 100 + i } : { temperature: 1.2, seed: 7 * i });
  for (const mode of ['greedy', 'sampled'] as const) {
    const reqs = PROMPTS.map((_, i) => request(i, mode === 'sampled' ? sampled(i) : {}));
    const alone: GenerationOutput[] = [];
    const single = batcher(1);
    for (const r of reqs) alone.push(await single.submit(r));
    const shared = batcher(8);
    const together = await Promise.all(reqs.map((r) => shared.submit(r)));
    assert.deepEqual(together.map((o) => o.tokens), alone.map((o) => o.tokens), mode);
    assert.deepEqual(together.map((o) => o.text), alone.map((o) => o.text));
    // Fewer slots than requests: the rest wait (FIFO) and still give the same tokens.
    const three = batcher(3);
    const queued = await Promise.all(reqs.map((r) => three.submit(r)));
    assert.deepEqual(queued.map((o) => o.tokens), alone.map((o) => o.tokens));
    assert.deepEqual(three.stats(), { active: 0, waiting: 0, maxSlots: 3, tokensGenerated: alone.reduce((a, o) => a + o.tokens.length, 0) });
    if (mode === 'greedy') {
      for (const [i, o] of alone.entries()) {
        // An independent check: the reference's own greedy loop.
        assert.deepEqual(o.tokens, referenceGreedy(tiny.config, tiny.weights, PROMPTS[i] as number[], reqs[i]!.maxNewTokens, [IM_END_ID]));
        assert.equal(o.completionTokens, o.tokens.length);
        assert.equal(o.promptTokens, (PROMPTS[i] as number[]).length);
        assert.equal(o.finishReason, o.tokens.at(-1) === IM_END_ID ? 'stop' : 'length');
        assert.equal(o.text, tokenizer.decode(o.tokens, { skipSpecialTokens: true }));
      }
    }
  }
});

test('the same seed gives the same text; another seed another', async () => {
  const b = batcher(4);
  const r = (seed: number): GenerationRequest => ({ ...request(1), maxNewTokens: 30, stopTokenIds: [], temperature: 1, seed });
  const [a1, a2, other] = await Promise.all([b.submit(r(11)), b.submit(r(11)), b.submit(r(12))]);
  assert.equal(a1!.text, a2!.text);
  assert.deepEqual(a1!.tokens, a2!.tokens);
  assert.notDeepEqual(other!.tokens, a1!.tokens);
});

test('stop strings cut the text and are held back while streaming', async () => {
  const b = batcher(2);
  const base = { ...request(2), maxNewTokens: 40, stopTokenIds: [], temperature: 1, seed: 5 };
  const full = await b.submit(base);
  assert.ok(full.text.length > 20, full.text);
  const stop = full.text.slice(10, 13);
  const at = full.text.indexOf(stop);
  const chunks: GenerationProgress[] = [];
  const cut = await b.submit({ ...base, stopStrings: ['\u0000never', stop], onProgress: (p) => chunks.push(p) });
  assert.equal(cut.text, full.text.slice(0, at));
  assert.equal(cut.finishReason, 'stop');
  assert.deepEqual(cut.tokens, full.tokens.slice(0, cut.tokens.length), 'same tokens up to the stop');
  assert.equal(chunks.map((c) => c.text).join(''), cut.text);
  assert.deepEqual(chunks.flatMap((c) => c.ids), cut.tokens);
  assert.deepEqual(chunks.map((c) => c.tokens), cut.tokens.map((_, i) => i + 1));
  // While streaming, the text sent so far never runs past what the final text keeps.
  let sent = '';
  for (const c of chunks) {
    sent += c.text;
    assert.ok(cut.text.startsWith(sent));
  }
  // Held back: the token that began the stop string streamed no part of it.
  const tokenTexts = cut.tokens.map((id) => decode([id]));
  const beganAt = tokenTexts.findIndex((_, i) => tokenTexts.slice(0, i + 1).join('').length > at);
  assert.equal(chunks.slice(beganAt).map((c) => c.text).join(''), cut.text.slice(tokenTexts.slice(0, beganAt).join('').length));
});

test('logprobs match a direct log-softmax of the reference logits', async () => {
  const b = batcher(2);
  const out = await b.submit({ ...request(0), maxNewTokens: 5, stopTokenIds: [], logprobs: 3, temperature: 0.8, seed: 3 });
  assert.equal(out.logprobs?.length, 5);
  const prompt = PROMPTS[0] as number[];
  const all = [...prompt, ...out.tokens];
  const V = tiny.config.vocabSize;
  const logits = referenceForward(tiny.config, tiny.weights, { inputIds: [all] }).logits;
  for (const [i, lp] of (out.logprobs ?? []).entries()) {
    const row = logits.subarray((prompt.length - 1 + i) * V, (prompt.length + i) * V);
    const ls = logSoftmax(row);
    assert.equal(lp.id, out.tokens[i]);
    assert.equal(lp.token, decode([lp.id]));
    assert.ok(Math.abs(lp.logprob - ls[lp.id]!) < 1e-4, `${lp.logprob} vs ${ls[lp.id]}`);
    const order = Array.from(ls.keys()).sort((x, y) => ls[y]! - ls[x]!);
    assert.deepEqual(lp.top?.map((t) => t.id), order.slice(0, 3));
  }
});

/** Validates the test schema below (independent of the automaton). */
function validPerson(v: unknown): boolean {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.some((k) => !['name', 'age', 'pets', 'mood'].includes(k))) return false;
  if (typeof o.name !== 'string' || [...o.name].length < 1 || [...o.name].length > 12) return false;
  if (!Number.isInteger(o.age)) return false;
  if ('pets' in o && !(Array.isArray(o.pets) && o.pets.length <= 2 && o.pets.every((p) => typeof p === 'string'))) return false;
  if ('mood' in o && !['happy', 'sad', null].includes(o.mood as string | null)) return false;
  return true;
}

test('json_object and json_schema outputs always parse and validate (random tiny weights, several seeds)', async () => {
  const b = batcher(8);
  const person = {
    type: 'object',
    properties: {
      name: { type: 'string', minLength: 1, maxLength: 12 },
      age: { type: 'integer' },
      pets: { type: 'array', items: { type: 'string' }, maxItems: 2 },
      mood: { enum: ['happy', 'sad', null] },
    },
    required: ['name', 'age'],
    additionalProperties: false,
  };
  const jobs: Promise<void>[] = [];
  for (let seed = 0; seed < 8; seed++) {
    const common = { promptIds: PROMPTS[seed] as number[], stopTokenIds: [IM_END_ID], temperature: 1, seed };
    jobs.push(
      b.submit({ ...common, id: `o${seed}`, maxNewTokens: 12 + 4 * seed, responseFormat: { type: 'json_object' } }).then((o) => {
        const v: unknown = JSON.parse(o.text);
        assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v), o.text);
      }),
      b.submit({ ...common, id: `s${seed}`, maxNewTokens: 28 + 3 * seed, responseFormat: { type: 'json_schema', schema: person } }).then((o) => {
        assert.ok(validPerson(JSON.parse(o.text)), o.text);
      }),
    );
  }
  await Promise.all(jobs);
  const greedy = await b.submit({ ...request(3), maxNewTokens: 40, responseFormat: { type: 'json_schema', schema: person } });
  assert.ok(validPerson(JSON.parse(greedy.text)), greedy.text);
});

test('an unsupported schema is refused before generation with its code', async () => {
  const b = batcher(1);
  const err = await failure(b.submit({ ...request(0), responseFormat: { type: 'json_schema', schema: { type: 'string', pattern: 'a+' } } }));
  assert.equal(err.code, 'RESPONSE_FORMAT_UNSUPPORTED');
  assert.equal(b.stats().tokensGenerated, 0);
  assert.equal((await failure(b.submit({ ...request(0), promptIds: new Array<number>(tiny.config.maxPositions).fill(5) }))).code, 'PROMPT_TOO_LONG');
});

test('abort rejects with CANCELLED and frees the slot for the next request', async () => {
  const b = batcher(1);
  const ac = new AbortController();
  let seen = 0;
  const long = b.submit({ ...request(0), maxNewTokens: 200, stopTokenIds: [], signal: ac.signal, onProgress: (p) => {
    seen = p.tokens;
    if (p.tokens === 3) ac.abort('client went away');
  } });
  const waiting = b.submit(request(1));
  const queuedAc = new AbortController();
  const abandoned = failure(b.submit({ ...request(2), signal: queuedAc.signal }));
  assert.deepEqual([b.stats().active, b.stats().waiting], [1, 2], 'the first joined at once, two wait');
  queuedAc.abort();
  const err = await failure(long);
  assert.equal(err.code, 'CANCELLED');
  assert.match(err.message, /client went away/);
  assert.equal(seen, 3);
  assert.equal((await abandoned).code, 'CANCELLED', 'a waiting request leaves the queue at once');
  const next = await waiting;
  assert.deepEqual(next.tokens, (await batcher(1).submit(request(1))).tokens);
  assert.deepEqual(b.stats(), { active: 0, waiting: 0, maxSlots: 1, tokensGenerated: 3 + next.tokens.length });
  const pre = new AbortController();
  pre.abort();
  assert.equal((await failure(b.submit({ ...request(0), signal: pre.signal }))).code, 'CANCELLED');
});

/** The real reference decoder with a fault injected: decode call number `failAt` throws `error`. */
class FailingDecoder implements BatchDecoder {
  readonly inner: ReferenceDecoder;
  readonly backend = 'engine' as const;
  readonly device = 'wasm' as const;
  decodeCalls = 0;
  calls: { kind: 'prefill' | 'decode'; slots: number[] }[] = [];
  constructor(
    maxSlots: number,
    readonly failAt: number,
    readonly error: unknown,
  ) {
    this.inner = new ReferenceDecoder(tiny.config, tiny.weights, { maxSlots });
  }
  get vocabSize(): number {
    return this.inner.vocabSize;
  }
  get maxSlots(): number {
    return this.inner.maxSlots;
  }
  get maxPositions(): number {
    return this.inner.maxPositions;
  }
  get memoryBytes(): number {
    return this.inner.memoryBytes;
  }
  prefill(entries: readonly PrefillEntry[]): Promise<Float32Array[]> {
    this.calls.push({ kind: 'prefill', slots: entries.map((e) => e.slot) });
    return this.inner.prefill(entries);
  }
  async decode(entries: readonly DecodeEntry[]): Promise<Float32Array[]> {
    this.calls.push({ kind: 'decode', slots: entries.map((e) => e.slot) });
    if (++this.decodeCalls === this.failAt) throw this.error;
    return this.inner.decode(entries);
  }
  free(slot: number): void {
    this.inner.free(slot);
  }
  release(): Promise<void> {
    return this.inner.release();
  }
}

test('a decoder that throws fails only the requests in that step; the batcher serves the others', async () => {
  for (const [error, code] of [
    [new AppError('GPU_OUT_OF_MEMORY', 'out of memory'), 'GPU_OUT_OF_MEMORY'],
    [new Error('kaboom'), 'INFERENCE_FAILED'],
  ] as const) {
    const dec = new FailingDecoder(2, 3, error);
    const b = batcher(2, dec);
    const outcomes = await Promise.allSettled([0, 1, 2, 3].map((i) => b.submit({ ...request(i), maxNewTokens: 10, stopTokenIds: [] })));
    // Two slots: requests 0 and 1 were in the third decode and fail; 2 and 3 then run.
    assert.deepEqual(outcomes.map((o) => o.status), ['rejected', 'rejected', 'fulfilled', 'fulfilled']);
    for (const o of outcomes.slice(0, 2)) assert.equal(((o as PromiseRejectedResult).reason as AppError).code, code);
    const alone = batcher(1);
    for (const i of [2, 3]) assert.deepEqual((outcomes[i] as PromiseFulfilledResult<GenerationOutput>).value.tokens, (await alone.submit({ ...request(i), maxNewTokens: 10, stopTokenIds: [] })).tokens);
    assert.deepEqual(b.stats().active, 0);
    // Every decode call held every active sequence, and no two calls overlapped (they are awaited in turn).
    assert.ok(dec.calls.filter((c) => c.kind === 'decode').every((c) => c.slots.length >= 1 && new Set(c.slots).size === c.slots.length));
  }
});
