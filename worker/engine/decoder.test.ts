import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { AppError } from '../../shared';
import { mulberry32, type LinearModule, type LlamaConfig } from '../model';
import { GpuContext } from './context';
import { EngineDecoder } from './decoder';
import { LlamaModel } from './llama';
import { GpuLoraAdapter } from './lora';
import { createNodeGpuContext } from './node-gpu';
import { randomLlamaWeights, randomLoraPairs, tinyLlamaConfig } from './random-weights';

let ctx: GpuContext;
before(async () => {
  ctx = await createNodeGpuContext();
});
after(() => ctx.destroy());

function argmax(x: ArrayLike<number>, from = 0, n = x.length - from): number {
  let best = from;
  for (let i = from; i < from + n; i++) if (x[i]! > x[best]!) best = i;
  return best - from;
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

function isCode(code: string): (e: unknown) => boolean {
  return (e: unknown) => e instanceof AppError && e.code === code;
}

interface Seq {
  prompt: number[];
  /** Step at which it asks to join. */
  join: number;
  maxNew: number;
  adapter: string | null;
}

interface SeqRun {
  tokens: number[];
  /** Logits that chose each token. */
  logits: Float32Array[];
}

/**
 * A minimal continuous-batching loop: each step admits the sequences that asked to join (while a
 * slot is free) with one prefill, then decodes every active sequence in one step; a sequence
 * leaves (its slot freed) once it has maxNew tokens. Returns, per sequence, the greedy tokens and
 * the logits behind them, and the largest batch a decode step ran.
 */
async function runBatched(dec: EngineDecoder, seqs: readonly Seq[]): Promise<{ runs: SeqRun[]; widest: number; slotsReused: boolean }> {
  const runs: SeqRun[] = seqs.map(() => ({ tokens: [], logits: [] }));
  const slotOf = new Map<number, number>();
  const free = Array.from({ length: dec.maxSlots }, (_, i) => i);
  const waiting = seqs.map((_, i) => i);
  const used = new Set<number>();
  let slotsReused = false;
  let widest = 0;
  const take = (i: number, logits: Float32Array): void => {
    runs[i]!.logits.push(logits);
    runs[i]!.tokens.push(argmax(logits));
    if (runs[i]!.tokens.length === seqs[i]!.maxNew) {
      const s = slotOf.get(i)!;
      dec.free(s);
      slotOf.delete(i);
      free.push(s);
    }
  };
  for (let step = 0; waiting.length > 0 || slotOf.size > 0; step++) {
    assert.ok(step < 500, 'the loop ends');
    const admit: number[] = [];
    while (free.length > 0 && waiting.length > 0 && seqs[waiting[0]!]!.join <= step) {
      const i = waiting.shift()!;
      const s = free.shift()!;
      if (used.has(s)) slotsReused = true;
      used.add(s);
      slotOf.set(i, s);
      admit.push(i);
    }
    const active = [...slotOf.keys()].filter((i) => !admit.includes(i));
    if (admit.length > 0) {
      const logits = await dec.prefill(admit.map((i) => ({ slot: slotOf.get(i)!, tokens: Uint32Array.from(seqs[i]!.prompt), adapter: seqs[i]!.adapter })));
      admit.forEach((i, k) => take(i, logits[k]!));
    }
    if (active.length > 0) {
      widest = Math.max(widest, active.length);
      const logits = await dec.decode(active.map((i) => ({ slot: slotOf.get(i)!, token: runs[i]!.tokens.at(-1)!, adapter: seqs[i]!.adapter })));
      active.forEach((i, k) => take(i, logits[k]!));
    }
  }
  return { runs, widest, slotsReused };
}

/** Each sequence alone on the single-sequence path: generate's greedy tokens and forward's logits. */
async function checkAgainstAlone(model: LlamaModel, seqs: readonly Seq[], runs: readonly SeqRun[], adapters: ReadonlyMap<string, GpuLoraAdapter>, tol = 1e-4): Promise<void> {
  const V = model.config.vocabSize;
  for (let i = 0; i < seqs.length; i++) {
    const s = seqs[i]!;
    model.setAdapter(s.adapter === null ? null : adapters.get(s.adapter)!);
    const alone = await model.generate(s.prompt, { maxNewTokens: s.maxNew, stopTokens: [] });
    assert.deepEqual(runs[i]!.tokens, alone, `sequence ${i} (prompt ${s.prompt.length}, adapter ${s.adapter}) gives the tokens it gives alone`);
    const full = [...s.prompt, ...alone.slice(0, -1)];
    const logits = await model.forward([full]);
    for (let t = 0; t < s.maxNew; t++) {
      const want = logits.subarray((s.prompt.length - 1 + t) * V, (s.prompt.length + t) * V);
      const d = maxDiff(runs[i]!.logits[t]!, want);
      assert.ok(d < tol, `sequence ${i} token ${t}: logits differ by ${d}`);
    }
  }
  model.setAdapter(null);
}

function prompt(len: number, seed: number, V: number): number[] {
  const rng = mulberry32(seed);
  return Array.from({ length: len }, () => Math.floor(rng.next() * V));
}

function randomAdapter(config: LlamaConfig, seed: number, targets: LinearModule[], r = 4): GpuLoraAdapter {
  const settings = { r, alpha: 2 * r, dropout: 0, targetModules: targets };
  const rng = mulberry32(seed);
  return GpuLoraAdapter.fromPairs(ctx, config, settings, randomLoraPairs(config, r, targets, () => 0.3 * rng.normal()));
}

// Eight sequences: different prompt lengths, joining at different steps, leaving at different steps.
function eightSeqs(V: number, adapters: (string | null)[] = []): Seq[] {
  const lens = [3, 7, 1, 12, 5, 9, 2, 15];
  const joins = [0, 0, 1, 2, 2, 4, 7, 9];
  const news = [10, 6, 12, 4, 9, 7, 11, 5];
  return lens.map((len, i) => ({ prompt: prompt(len, 100 + i, V), join: joins[i]!, maxNew: news[i]!, adapter: adapters[i] ?? null }));
}

describe('EngineDecoder: continuous batching', () => {
  it('eight sequences joining and leaving at different steps give the tokens (and logits) each gives alone', async () => {
    const cfg = tinyLlamaConfig({ eosTokenIds: [] });
    const model = await LlamaModel.load(ctx, cfg, randomLlamaWeights(cfg, 21, 0.3));
    const dec = await EngineDecoder.create(model, { maxSlots: 6, maxPositions: 32 });
    assert.equal(dec.backend, 'engine');
    assert.equal(dec.maxPositions, 32);
    const kvBytes = 2 * cfg.numLayers * 6 * 32 * cfg.numKvHeads * cfg.headDim * 4;
    assert.equal(dec.memoryBytes, model.weightBytes + kvBytes);
    const seqs = eightSeqs(cfg.vocabSize);
    const { runs, widest, slotsReused } = await runBatched(dec, seqs);
    assert.ok(widest >= 5, `decode steps ran up to ${widest} rows`);
    assert.ok(slotsReused, 'freed slots were reused by later sequences');
    assert.ok(new Set(runs.flatMap((r) => r.tokens)).size > 8, 'the model does not repeat one token');
    await checkAgainstAlone(model, seqs, runs, new Map());
    // The same sequences one at a time through the decoder give bit-identical logits.
    const solo = await runBatched(dec, seqs.map((s, i) => ({ ...s, join: i * 20 })));
    for (let i = 0; i < seqs.length; i++) {
      assert.deepEqual(solo.runs[i]!.tokens, runs[i]!.tokens);
      for (let t = 0; t < seqs[i]!.maxNew; t++) assert.ok(maxDiff(solo.runs[i]!.logits[t]!, runs[i]!.logits[t]!) < 1e-5);
    }
    await dec.release();
  });

  it('a Qwen2-style model (q/k/v biases, tied head, one kv head, head size 6) with prompts prefilled in chunks', async () => {
    const cfg = tinyLlamaConfig({ architecture: 'Qwen2ForCausalLM', modelType: 'qwen2', attentionBias: true, tieWordEmbeddings: true, numHeads: 4, numKvHeads: 1, headDim: 6, hiddenSize: 24, eosTokenIds: [] });
    const model = await LlamaModel.load(ctx, cfg, randomLlamaWeights(cfg, 22, 0.3));
    const dec = await EngineDecoder.create(model, { maxSlots: 8, prefillChunkRows: 5 });
    const seqs = eightSeqs(cfg.vocabSize);
    const { runs } = await runBatched(dec, seqs);
    await checkAgainstAlone(model, seqs, runs, new Map());
    await dec.release();
  });

  it('two adapters and the base model in one step equal each run alone with its adapter', async () => {
    const cfg = tinyLlamaConfig({ eosTokenIds: [] });
    const model = await LlamaModel.load(ctx, cfg, randomLlamaWeights(cfg, 23, 0.3));
    const a = randomAdapter(cfg, 1, ['q_proj', 'v_proj', 'down_proj']);
    const b = randomAdapter(cfg, 2, ['k_proj', 'o_proj', 'gate_proj', 'up_proj']);
    const dec = await EngineDecoder.create(model, { maxSlots: 8, maxPositions: 32 });
    dec.addAdapter('a', a);
    dec.addAdapter('b', b);
    const names = ['a', null, 'b', 'a', 'b', null, 'a', 'b'];
    const seqs = eightSeqs(cfg.vocabSize, names);
    const { runs } = await runBatched(dec, seqs);
    const adapters = new Map([
      ['a', a],
      ['b', b],
    ]);
    await checkAgainstAlone(model, seqs, runs, adapters);
    // The adapters matter: the same prompt under each gives different logits.
    const p = Uint32Array.from(seqs[0]!.prompt);
    const [la, lb, l0] = await dec.prefill([
      { slot: 0, tokens: p, adapter: 'a' },
      { slot: 1, tokens: p, adapter: 'b' },
      { slot: 2, tokens: p, adapter: null },
    ]);
    assert.ok(maxDiff(la!, l0!) > 1e-2 && maxDiff(lb!, l0!) > 1e-2 && maxDiff(la!, lb!) > 1e-2);
    await dec.release();
    a.release();
    b.release();
  });
});

describe('EngineDecoder: eight adapters in one batch', () => {
  it('eight sequences over eight different adapters (ranks 1 to 8, different targets) share each step and give the tokens each gives alone', async () => {
    const cfg = tinyLlamaConfig({ eosTokenIds: [] });
    const model = await LlamaModel.load(ctx, cfg, randomLlamaWeights(cfg, 24, 0.3));
    const targetSets: LinearModule[][] = [['q_proj', 'v_proj'], ['k_proj', 'o_proj'], ['gate_proj', 'up_proj'], ['down_proj'], ['q_proj', 'k_proj', 'v_proj', 'o_proj'], ['up_proj', 'down_proj'], ['v_proj', 'gate_proj'], ['q_proj', 'o_proj', 'down_proj']];
    const adapters = new Map(targetSets.map((t, i) => [`a${i}`, randomAdapter(cfg, 40 + i, t, i + 1)] as const));
    const dec = await EngineDecoder.create(model, { maxSlots: 8, maxPositions: 32 });
    for (const [name, a] of adapters) dec.addAdapter(name, a);
    // All eight join at once so every decode step carries eight rows over eight adapters.
    const seqs = eightSeqs(cfg.vocabSize, [...adapters.keys()]).map((s) => ({ ...s, join: 0 }));
    const { runs, widest } = await runBatched(dec, seqs);
    assert.equal(widest, 8, 'one decode step ran all eight adapters');
    await checkAgainstAlone(model, seqs, runs, adapters);
    // Each adapter changes what its row gives: no two rows on the same prompt agree.
    const p = Uint32Array.from(seqs[0]!.prompt);
    const logits = await dec.prefill([...adapters.keys()].map((name, slot) => ({ slot, tokens: p, adapter: name })));
    for (let i = 0; i < logits.length; i++) for (let j = i + 1; j < logits.length; j++) assert.ok(maxDiff(logits[i]!, logits[j]!) > 1e-3, `adapters ${i} and ${j} differ`);
    await dec.release();
    for (const a of adapters.values()) a.release();
  });
});

describe('EngineDecoder: errors', () => {
  it('PROMPT_TOO_LONG, ADAPTER_NOT_FOUND and INTERNAL leave the decoder serving', async () => {
    const cfg = tinyLlamaConfig({ eosTokenIds: [] });
    const model = await LlamaModel.load(ctx, cfg, randomLlamaWeights(cfg, 24, 0.3));
    const dec = await EngineDecoder.create(model, { maxSlots: 2, maxPositions: 8 });
    await assert.rejects(dec.prefill([{ slot: 0, tokens: new Uint32Array(9).fill(3), adapter: null }]), isCode('PROMPT_TOO_LONG'));
    await assert.rejects(dec.prefill([{ slot: 0, tokens: Uint32Array.of(1, 2), adapter: 'nope' }]), isCode('ADAPTER_NOT_FOUND'));
    await assert.rejects(dec.prefill([{ slot: 2, tokens: Uint32Array.of(1, 2), adapter: null }]), isCode('INTERNAL'));
    await assert.rejects(dec.decode([{ slot: 1, token: 3, adapter: null }]), isCode('INTERNAL'), 'an empty slot cannot decode');
    assert.throws(() => dec.free(-1), isCode('INTERNAL'));
    await assert.rejects(EngineDecoder.create(model, { maxSlots: 1, maxPositions: cfg.maxPositions + 1 }), isCode('PROMPT_TOO_LONG'));

    const [first] = await dec.prefill([{ slot: 0, tokens: Uint32Array.of(1, 2, 3, 4, 5, 6, 7), adapter: null }]);
    await assert.rejects(dec.decode([{ slot: 0, token: 3, adapter: 'nope' }]), isCode('ADAPTER_NOT_FOUND'));
    assert.equal(dec.slotLength(0), 7, 'a refused step changes nothing');
    const [next] = await dec.decode([{ slot: 0, token: argmax(first!), adapter: null }]);
    assert.equal(next!.length, cfg.vocabSize);
    await assert.rejects(dec.decode([{ slot: 0, token: 1, adapter: null }]), isCode('PROMPT_TOO_LONG'), 'the slot is full');
    const alone = await model.generate([1, 2, 3, 4, 5, 6, 7], { maxNewTokens: 2, stopTokens: [] });
    assert.deepEqual([argmax(first!), argmax(next!)], alone);
    await dec.release();
  });

  it('a reset device is GPU_DEVICE_LOST', async () => {
    const own = await createNodeGpuContext();
    try {
      const cfg = tinyLlamaConfig();
      const model = await LlamaModel.load(own, cfg, randomLlamaWeights(cfg, 25));
      const dec = await EngineDecoder.create(model, { maxSlots: 1, maxPositions: 8 });
      await dec.prefill([{ slot: 0, tokens: Uint32Array.of(1, 2), adapter: null }]);
      await own.reset();
      await assert.rejects(dec.decode([{ slot: 0, token: 3, adapter: null }]), isCode('GPU_DEVICE_LOST'));
      await assert.rejects(dec.prefill([{ slot: 0, tokens: Uint32Array.of(1), adapter: null }]), isCode('GPU_DEVICE_LOST'));
    } finally {
      own.destroy();
    }
  });
});
