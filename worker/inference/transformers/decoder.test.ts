import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, truncate, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoModelForCausalLM, Tensor } from '@huggingface/transformers';
import { AppError } from '../../../shared';
import { EOS_ID, IM_END_ID, TINY_ARCHS, makeTinyModel, type TinyArch } from '../../../tools/tiny-model';
import { TransformersDecoder, measureDecodeThroughput, type TransformersEnvOptions } from '.';

const SEED = 21;
const STOP = new Set([EOS_ID, IM_END_ID]);

function argmax(row: Float32Array): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if ((row[i] as number) > (row[best] as number)) best = i;
  return best;
}

/** Eight prompts of different lengths (ids of ordinary tokens, above the specials). */
const PROMPTS: number[][] = [1, 3, 5, 8, 11, 14, 18, 23].map((len, s) => Array.from({ length: len }, (_, i) => 5 + ((i * 37 + s * 101) % 370)));
/** Tokens asked of each, and the step at which each joins the batch. */
const MAX_NEW = [14, 6, 20, 9, 17, 4, 12, 16];
const JOIN_AT = [0, 0, 2, 3, 3, 7, 9, 12];

async function greedyAlone(d: TransformersDecoder, prompt: number[], maxNew: number, slot: number): Promise<number[]> {
  const out: number[] = [];
  let logits = (await d.prefill([{ slot, tokens: Uint32Array.from(prompt), adapter: null }]))[0] as Float32Array;
  for (;;) {
    const t = argmax(logits);
    out.push(t);
    if (out.length >= maxNew || STOP.has(t)) break;
    logits = (await d.decode([{ slot, token: t, adapter: null }]))[0] as Float32Array;
  }
  d.free(slot);
  return out;
}

/** A small continuous-batching loop: sequences join at their step (prefilled, then decoded with the others) and leave when done. */
async function greedyBatched(d: TransformersDecoder): Promise<{ tokens: number[][]; maxBatch: number }> {
  const tokens: number[][] = PROMPTS.map(() => []);
  const active = new Map<number, number>(); // sequence → slot
  const free = Array.from({ length: d.maxSlots }, (_, s) => d.maxSlots - 1 - s);
  let maxBatch = 0;
  const finish = (seq: number): void => {
    const slot = active.get(seq) as number;
    d.free(slot);
    free.push(slot);
    active.delete(seq);
  };
  const push = (seq: number, logits: Float32Array): void => {
    const t = argmax(logits);
    (tokens[seq] as number[]).push(t);
    if ((tokens[seq] as number[]).length >= (MAX_NEW[seq] as number) || STOP.has(t)) finish(seq);
  };
  for (let step = 0; step < 200; step++) {
    const joining = PROMPTS.map((_, i) => i).filter((i) => JOIN_AT[i] === step);
    // Decode the running ones first, then prefill the newcomers (they decode from the next step).
    const running = [...active.entries()];
    if (running.length > 0) {
      maxBatch = Math.max(maxBatch, running.length);
      const logits = await d.decode(running.map(([seq, slot]) => ({ slot, token: (tokens[seq] as number[]).at(-1) as number, adapter: null })));
      running.forEach(([seq], b) => push(seq, logits[b] as Float32Array));
    }
    if (joining.length > 0) {
      const entries = joining.map((seq) => {
        const slot = free.pop() as number;
        active.set(seq, slot);
        return { slot, tokens: Uint32Array.from(PROMPTS[seq] as number[]), adapter: null };
      });
      const logits = await d.prefill(entries);
      joining.forEach((seq, i) => push(seq, logits[i] as Float32Array));
    }
    if (active.size === 0 && step >= Math.max(...JOIN_AT)) break;
  }
  return { tokens, maxBatch };
}

async function tinyFolder(t: { after(fn: () => Promise<void>): void }, arch: TinyArch = 'llama'): Promise<{ root: string; dir: string; env: TransformersEnvOptions }> {
  const root = await mkdtemp(join(tmpdir(), 'tjs-decoder-'));
  t.after(() => rm(root, { recursive: true, force: true }));
  const dir = join(root, 'tiny');
  await makeTinyModel({ seed: SEED, arch, dir });
  return { root, dir, env: { localModelPath: root, cacheDir: join(root, '.cache') } };
}

async function loadError(options: Parameters<typeof TransformersDecoder.load>[0]): Promise<AppError> {
  try {
    const d = await TransformersDecoder.load(options);
    await d.release();
  } catch (err) {
    assert.ok(err instanceof AppError, `expected an AppError, got ${String(err)}`);
    return err;
  }
  assert.fail('the load succeeded');
}

for (const arch of TINY_ARCHS) {
  test(`tiny-${arch}: eight sequences joining and leaving at different steps give the tokens each gives alone, and transformers.js generate() gives`, async (t) => {
    const { env } = await tinyFolder(t, arch);
    const d = await TransformersDecoder.load({ modelId: 'tiny', device: 'cpu', maxSlots: 8, env });
    t.after(() => d.release());
    assert.equal(d.backend, 'transformers');
    assert.equal(d.vocabSize, 384);
    assert.equal(d.maxPositions, 256);
    // Weights (the ONNX file) plus 8 slots × 256 positions × 2 layers × (K+V) × 2 heads × 16 × 4 bytes.
    assert.ok(d.memoryBytes > 8 * 256 * 2 * 2 * 2 * 16 * 4, `memoryBytes ${d.memoryBytes}`);

    const alone: number[][] = [];
    for (let i = 0; i < PROMPTS.length; i++) alone.push(await greedyAlone(d, PROMPTS[i] as number[], MAX_NEW[i] as number, i % 3));
    assert.ok(alone.flat().length >= 50, `only ${alone.flat().length} tokens generated: the comparison would be weak`);
    assert.equal(d.activeSlots, 0);

    const batched = await greedyBatched(d);
    assert.ok(batched.maxBatch >= 5, `the schedule ran at most ${batched.maxBatch} sequences together`);
    assert.deepEqual(batched.tokens, alone);
    assert.equal(d.activeSlots, 0);

    const model = await AutoModelForCausalLM.from_pretrained('tiny', { dtype: 'fp32', device: 'cpu' });
    t.after(() => model.dispose());
    for (let i = 0; i < PROMPTS.length; i++) {
      const prompt = PROMPTS[i] as number[];
      const input_ids = new Tensor('int64', BigInt64Array.from(prompt, BigInt), [1, prompt.length]);
      const attention_mask = new Tensor('int64', new BigInt64Array(prompt.length).fill(1n), [1, prompt.length]);
      const out = (await model.generate({ input_ids, attention_mask, max_new_tokens: MAX_NEW[i], do_sample: false })) as Tensor;
      const generated = (out.tolist()[0] as bigint[]).slice(prompt.length).map(Number);
      assert.deepEqual(alone[i], generated, `prompt ${i} (${prompt.length} tokens)`);
    }
  });
}

test('decode throughput at 1 and 8 sequences', async (t) => {
  const { env } = await tinyFolder(t);
  const d = await TransformersDecoder.load({ modelId: 'tiny', device: 'cpu', maxSlots: 8, env });
  t.after(() => d.release());
  const [one, eight] = await measureDecodeThroughput(d, { sequences: [1, 8], steps: 48, promptTokens: 32 });
  assert.ok(one !== undefined && eight !== undefined);
  assert.equal(one.sequences, 1);
  assert.equal(eight.sequences, 8);
  for (const r of [one, eight]) assert.ok(Number.isFinite(r.tokensPerSec) && r.tokensPerSec > 0);
  assert.equal(d.activeSlots, 0);
  t.diagnostic(`tokens/s: 1 sequence ${one.tokensPerSec.toFixed(0)}, 8 sequences ${eight.tokensPerSec.toFixed(0)} (×${(eight.tokensPerSec / one.tokensPerSec).toFixed(2)})`);
});

test('bad folders and prompts end with their codes', async (t) => {
  const { dir, env } = await tinyFolder(t);

  // A prompt longer than the positions the decoder holds.
  const d = await TransformersDecoder.load({ modelId: 'tiny', device: 'cpu', maxSlots: 2, maxPositions: 16, env });
  try {
    await assert.rejects(d.prefill([{ slot: 0, tokens: new Uint32Array(17).fill(7), adapter: null }]), { code: 'PROMPT_TOO_LONG' });
    await d.prefill([{ slot: 1, tokens: new Uint32Array(16).fill(7), adapter: null }]);
    await assert.rejects(d.decode([{ slot: 1, token: 7, adapter: null }]), { code: 'PROMPT_TOO_LONG' });
  } finally {
    await d.release();
  }

  const onnx = join(dir, 'onnx', 'model.onnx');
  const bytes = await readFile(onnx);
  const configPath = join(dir, 'config.json');
  const config = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;

  // Declared external data that is not there (transformers.js would crash Node through an unhandled rejection).
  await writeFile(configPath, JSON.stringify({ ...config, 'transformers.js_config': { use_external_data_format: true } }));
  assert.equal((await loadError({ modelId: 'tiny', device: 'cpu', env })).code, 'MODEL_FILE_MISSING');

  // An architecture transformers.js does not know.
  await writeFile(configPath, JSON.stringify({ ...config, model_type: 'no_such_arch', architectures: ['NoSuchArchForCausalLM'] }));
  assert.equal((await loadError({ modelId: 'tiny', device: 'cpu', env })).code, 'MODEL_UNSUPPORTED');
  await writeFile(configPath, JSON.stringify(config));

  // A truncated ONNX file.
  await truncate(onnx, Math.floor(bytes.length / 2));
  assert.equal((await loadError({ modelId: 'tiny', device: 'cpu', env })).code, 'MODEL_CORRUPT');

  // The ONNX file missing.
  await unlink(onnx);
  assert.equal((await loadError({ modelId: 'tiny', device: 'cpu', env })).code, 'MODEL_FILE_MISSING');

  // No such folder.
  assert.equal((await loadError({ modelId: 'absent', device: 'cpu', env })).code, 'MODEL_FILE_MISSING');

  // Put back, the folder loads again: the failures left nothing behind.
  await writeFile(onnx, bytes);
  const again = await TransformersDecoder.load({ modelId: 'tiny', device: 'cpu', env });
  await again.release();
});
