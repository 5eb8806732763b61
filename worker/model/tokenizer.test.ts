import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '../../shared';
import { buildTinyModel, IM_END_ID, IM_START_ID, PAD_ID } from '../../tools/tiny-model';
import { ChatTemplate } from './chat';
import { loadModelFolder } from './folder';
import { loadTokenizer, ModelTokenizer } from './tokenizer';

const tiny = buildTinyModel({ seed: 1 });
const readFile = async (name: string): Promise<Uint8Array> => {
  const f = tiny.files.get(name);
  if (!f) throw new Error(`ENOENT ${name}`);
  return f;
};

test('tokenizer round-trips text, including non-ASCII, and knows its special tokens', async () => {
  const tok = await loadTokenizer(readFile);
  assert.equal(tok.eosId, IM_END_ID);
  assert.equal(tok.padId, PAD_ID);
  assert.equal(tok.tokenToId('<|im_start|>'), IM_START_ID);
  assert.equal(tok.vocabSize, tiny.config.vocabSize);
  for (const text of ['The quick brown fox jumps over the lazy dog.', 'héllo wörld — 日本語 🙂', '  spaces\n\nand\ttabs ']) {
    const ids = tok.encode(text);
    assert.ok(ids.every((id) => id >= 0 && id < tiny.config.vocabSize));
    assert.equal(tok.decode(ids), text);
  }
  // Learned merges shorten common English.
  assert.ok(tok.encode(' the and the').length < ' the and the'.length);
  // Special tokens are single ids and can be skipped on decode.
  const ids = tok.encode('<|im_start|>user\nhi<|im_end|>');
  assert.equal(ids[0], IM_START_ID);
  assert.equal(ids.at(-1), IM_END_ID);
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), 'user\nhi');
});

test('chat template renders ChatML with and without the generation prompt', async () => {
  const tok = await loadTokenizer(readFile);
  const msgs = [
    { role: 'system' as const, content: 'Be brief.' },
    { role: 'user' as const, content: 'Hi' },
  ];
  assert.equal(tok.applyChatTemplate(msgs), '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n');
  assert.equal(tok.applyChatTemplate(msgs, { addGenerationPrompt: true }).slice(-22), '<|im_start|>assistant\n');
  assert.throws(() => new ChatTemplate('{% for x in %}'), (e: unknown) => e instanceof AppError && e.code === 'MODEL_CORRUPT');
  assert.throws(() => new ModelTokenizer('{', '{}'), (e: unknown) => e instanceof AppError && e.code === 'MODEL_CORRUPT');
});

test('loadModelFolder reads config, weights, tokenizer and fingerprints the base', async () => {
  const m = await loadModelFolder(readFile);
  assert.equal(m.config.numLayers, 2);
  assert.equal(m.weights.size, tiny.weights.size);
  assert.match(m.fingerprint, /^[0-9a-f]{64}$/);
  const other = buildTinyModel({ seed: 2 });
  const m2 = await loadModelFolder(async (n) => other.files.get(n) ?? Promise.reject(new Error(n)));
  assert.notEqual(m.fingerprint, m2.fingerprint);
});
