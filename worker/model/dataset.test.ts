/**
 * Conversations as rows, checked against transformers.js on real tokenizer files: the tiny model's
 * (ByteLevel post-processor, no BOS) and the same vocabulary with a TemplateProcessing
 * post-processor that puts <s> first (as Llama's tokenizer.json does). The row starts as
 * transformers' tokenizer starts the rendered text; assistant turns end in a stop token.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AutoTokenizer, env } from '@huggingface/transformers';
import { AppError } from '../../shared';
import { buildTinyModel, BOS_ID, EOS_ID, IM_END_ID, PAD_ID } from '../../tools/tiny-model';
import { ChatTemplate, CHATML_TEMPLATE, type ChatMessage } from './chat';
import { fitConversation, makeBatches, resolveChatTemplate, shuffleExamples, splitHeldOut, targetCount, tokenizeConversation, tokenizeConversations } from './dataset';
import { loadModelFolder } from './folder';
import { ModelTokenizer } from './tokenizer';

const tiny = buildTinyModel({ seed: 1 });
const dec = new TextDecoder();
const tokenizerJson = JSON.parse(dec.decode(tiny.files.get('tokenizer.json'))) as Record<string, unknown>;
const tokenizerConfig = JSON.parse(dec.decode(tiny.files.get('tokenizer_config.json'))) as Record<string, unknown>;
const tok = new ModelTokenizer(tokenizerJson, tokenizerConfig);

/** The tiny vocabulary with Llama's post-processor: <s> before every sequence. */
const templateProcessing = {
  ...tokenizerJson,
  post_processor: {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '<s>', type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<s>': { id: '<s>', ids: [BOS_ID], tokens: ['<s>'] } },
  },
};
/** A config without add_bos_token / add_eos_token, so the post-processor decides (as transformers does). */
const { add_bos_token: _b, add_eos_token: _e, ...configWithoutFlags } = tokenizerConfig;
const bosTemplate = `{{ bos_token }}${CHATML_TEMPLATE}`;

const convo: ChatMessage[] = [
  { role: 'system', content: 'You are helpful.' },
  { role: 'user', content: 'What is the weather?' },
  { role: 'assistant', content: 'It is warm and sunny.' },
  { role: 'user', content: 'Thanks!' },
  { role: 'assistant', content: 'You are welcome.' },
];

let root = '';
type Reference = Awaited<ReturnType<typeof AutoTokenizer.from_pretrained>>;
const reference: Record<string, Reference> = {};

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'dataset-tok-'));
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = root;
  env.cacheDir = join(root, '.cache');
  const folders: Record<string, [unknown, unknown]> = {
    bytelevel: [tokenizerJson, tokenizerConfig],
    templated: [templateProcessing, configWithoutFlags],
    bos_in_template: [templateProcessing, { ...configWithoutFlags, chat_template: bosTemplate }],
  };
  for (const [name, [tj, tc]] of Object.entries(folders)) {
    await mkdir(join(root, name));
    await writeFile(join(root, name, 'tokenizer.json'), JSON.stringify(tj));
    await writeFile(join(root, name, 'tokenizer_config.json'), JSON.stringify(tc));
    reference[name] = await AutoTokenizer.from_pretrained(name);
  }
});
after(() => rm(root, { recursive: true, force: true }));

function refIds(name: string, text: string, addSpecialTokens: boolean): number[] {
  const r = reference[name];
  assert.ok(r);
  return r.encode(text, { add_special_tokens: addSpecialTokens });
}

function maskedRuns(ex: { ids: Int32Array; assistantMask: Uint8Array }): number[][] {
  const runs: number[][] = [];
  for (let i = 0; i < ex.ids.length; i++) {
    if (!ex.assistantMask[i]) continue;
    if (i === 0 || !ex.assistantMask[i - 1]) runs.push([]);
    runs.at(-1)?.push(ex.ids[i] as number);
  }
  return runs;
}

test('tiny tokenizer (no BOS from its post-processor): the row is what transformers.js gives the rendered text; the mask covers assistant turns to <|im_end|>', () => {
  const ex = tokenizeConversation(tok, convo);
  assert.equal(ex.ids.length, ex.assistantMask.length);
  assert.deepEqual(tok.prefixIds, []);
  const rendered = tok.applyChatTemplate(convo);
  assert.deepEqual(Array.from(ex.ids), refIds('bytelevel', rendered, true));
  assert.deepEqual(
    maskedRuns(ex).map((r) => tok.decode(r)),
    ['It is warm and sunny.<|im_end|>', 'You are welcome.<|im_end|>'],
  );
  for (const r of maskedRuns(ex)) assert.equal(r.at(-1), IM_END_ID);
});

test('TemplateProcessing post-processor: the row starts with BOS, exactly as transformers.js encodes the rendered text', () => {
  const t = new ModelTokenizer(templateProcessing, configWithoutFlags);
  assert.deepEqual(t.prefixIds, [BOS_ID]);
  const ex = tokenizeConversation(t, convo);
  assert.equal(ex.ids[0], BOS_ID);
  assert.equal(ex.assistantMask[0], 0);
  const expected = refIds('templated', t.applyChatTemplate(convo), true);
  assert.equal(expected[0], BOS_ID);
  assert.deepEqual(Array.from(ex.ids), expected);
  // A template that writes {{ bos_token }} itself gets one BOS, not two (what apply_chat_template(tokenize=True) gives).
  const withBos = new ModelTokenizer(templateProcessing, { ...configWithoutFlags, chat_template: bosTemplate });
  const ex2 = tokenizeConversation(withBos, convo);
  const rendered2 = withBos.applyChatTemplate(convo);
  assert.ok(rendered2.startsWith('<s>'));
  assert.deepEqual(Array.from(ex2.ids), refIds('bos_in_template', rendered2, false));
  assert.equal(ex2.ids[0], BOS_ID);
  assert.notEqual(ex2.ids[1], BOS_ID);
});

test("add_bos_token / add_eos_token in tokenizer_config.json rebuild the post-processor, as transformers' fast tokenizer does", () => {
  // Written explicitly, add_bos_token decides (transformers v5 TokenizersBackend rebuilds the
  // post-processor; transformers.js keeps tokenizer.json's, so it is not the reference here).
  assert.deepEqual(new ModelTokenizer(tokenizerJson, { ...tokenizerConfig, add_bos_token: true }).prefixIds, [BOS_ID]);
  assert.deepEqual(new ModelTokenizer(templateProcessing, { ...configWithoutFlags, add_bos_token: false }).prefixIds, []);
  assert.deepEqual(new ModelTokenizer(templateProcessing, { ...configWithoutFlags, add_eos_token: true }).prefixIds, []);
  const ex = tokenizeConversation(new ModelTokenizer(tokenizerJson, { ...tokenizerConfig, add_bos_token: true }), convo);
  assert.deepEqual(Array.from(ex.ids), [BOS_ID, ...refIds('bytelevel', tok.applyChatTemplate(convo), false)]);
});

test('a template with no stop token at the end of a turn: the EOS goes after each assistant message, masked', () => {
  // Plain "role: content" lines: nothing the model could stop at.
  const plain = new ChatTemplate("{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}");
  const ex = tokenizeConversation(tok, convo, { template: plain, eosIds: [EOS_ID, IM_END_ID] });
  const runs = maskedRuns(ex);
  assert.deepEqual(
    runs.map((r) => tok.decode(r)),
    ['It is warm and sunny.</s>', 'You are welcome.</s>'],
  );
  for (const r of runs) assert.equal(r.at(-1), EOS_ID);
  // The template's own text after the message (the newline) stays a prompt token.
  const last = ex.ids.length - 1;
  assert.equal(tok.decode([ex.ids[last] as number]), '\n');
  assert.equal(ex.assistantMask[last], 0);
  // ChatML named on a model whose EOS is </s>: <|im_end|> is not a stop id, so </s> is appended too.
  const chatml = tokenizeConversation(tok, convo, { template: resolveChatTemplate(tok, 'chatml'), eosIds: [EOS_ID] });
  assert.deepEqual(
    maskedRuns(chatml).map((r) => tok.decode(r)),
    ['It is warm and sunny.</s>', 'You are welcome.</s>'],
  );
  // No EOS known anywhere: refused rather than training a model that never stops.
  assert.throws(() => tokenizeConversation(tok, convo, { template: plain, eosIds: [] }), (e: unknown) => e instanceof AppError && e.code === 'MODEL_UNSUPPORTED');
});

test('no chat template: CHAT_TEMPLATE_MISSING unless one is named; inference keeps its ChatML fallback', () => {
  const { chat_template: _t, ...noTemplate } = tokenizerConfig;
  const bare = new ModelTokenizer(tokenizerJson, noTemplate);
  assert.equal(bare.modelChatTemplate, null);
  assert.throws(() => tokenizeConversation(bare, convo), (e: unknown) => e instanceof AppError && e.code === 'CHAT_TEMPLATE_MISSING');
  assert.throws(() => resolveChatTemplate(bare), (e: unknown) => e instanceof AppError && e.code === 'CHAT_TEMPLATE_MISSING');
  assert.equal(resolveChatTemplate(bare, 'chatml').source, CHATML_TEMPLATE);
  assert.equal(resolveChatTemplate(bare, '{{ messages[0].content }}').source, '{{ messages[0].content }}');
  assert.equal(bare.chatTemplate.source, CHATML_TEMPLATE); // what generation renders prompts with
});

test('EOS ids in order of authority: generation_config.json, then config.json, then tokenizer_config.json', async () => {
  const read = (files: Map<string, Uint8Array>) => async (name: string) => files.get(name) ?? Promise.reject(new Error(`ENOENT ${name}`));
  const m = await loadModelFolder(read(tiny.files));
  assert.deepEqual(m.eosTokenIds, [IM_END_ID, EOS_ID]); // generation_config.json: [<|im_end|>, </s>]
  const files = new Map(tiny.files);
  files.delete('generation_config.json');
  const cfg = JSON.parse(dec.decode(files.get('config.json'))) as Record<string, unknown>;
  files.set('config.json', new TextEncoder().encode(JSON.stringify({ ...cfg, eos_token_id: EOS_ID })));
  assert.deepEqual((await loadModelFolder(read(files))).eosTokenIds, [EOS_ID, IM_END_ID]); // config.json, then the tokenizer's <|im_end|>
});

test('fitConversation: split by turns keeps the system message on every piece; truncate and drop as asked', () => {
  const whole = tokenizeConversation(tok, convo);
  const n = whole.ids.length;
  const seqLen = 60; // the whole is 87 tokens, each piece 56 and 50
  assert.ok(n > seqLen + 1, `${n} tokens`);
  const kept = fitConversation(tok, convo, n, 'split');
  assert.equal(kept.outcome, 'kept');
  assert.deepEqual(kept.rows, [whole]);

  const split = fitConversation(tok, convo, seqLen, 'split');
  assert.equal(split.outcome, 'split');
  assert.equal(split.rows.length, 2);
  const pieces = [convo.slice(0, 3), [convo[0], ...convo.slice(3)] as ChatMessage[]];
  for (const [i, row] of split.rows.entries()) {
    assert.ok(row.ids.length <= seqLen + 1);
    assert.deepEqual(row, tokenizeConversation(tok, pieces[i] as ChatMessage[]));
  }
  assert.equal(split.rows.reduce((s, r) => s + targetCount(r), 0), targetCount(whole)); // every assistant token still trained on

  const cut = fitConversation(tok, convo, seqLen, 'truncate');
  assert.equal(cut.outcome, 'truncated');
  assert.equal(cut.rows[0]?.ids.length, seqLen + 1);
  assert.deepEqual(Array.from(cut.rows[0]!.ids), Array.from(whole.ids.slice(0, seqLen + 1)));
  assert.deepEqual(fitConversation(tok, convo, seqLen, 'drop'), { rows: [], outcome: 'dropped' });
  // A single turn longer than a row is truncated within split; one whose answer lies past the cut is dropped.
  assert.equal(fitConversation(tok, convo, 45, 'split').outcome, 'truncated');
  assert.deepEqual(fitConversation(tok, convo, 45, 'split').rows.map((r) => r.ids.length), [46, 46]);
  assert.equal(fitConversation(tok, convo, 8, 'split').outcome, 'dropped');
});

test('seeded shuffle and held-out split are deterministic', () => {
  const items = Array.from({ length: 50 }, (_, i) => i);
  const a = shuffleExamples(items, 42);
  assert.deepEqual(a, shuffleExamples(items, 42));
  assert.notDeepEqual(a, items);
  assert.notDeepEqual(a, shuffleExamples(items, 43));
  assert.deepEqual([...a].sort((x, y) => x - y), items);
  const s = splitHeldOut(items, 0.2, 7);
  assert.equal(s.heldOut.length, 10);
  assert.equal(s.train.length, 40);
  assert.deepEqual(splitHeldOut(items, 0.2, 7), s);
  assert.equal(splitHeldOut([1, 2], 0.1, 1).heldOut.length, 1);
  assert.equal(splitHeldOut(items, 0, 1).heldOut.length, 0);
});

test('batches: targets are next tokens, mask follows the targets, padding is masked', () => {
  const convos = [
    convo,
    [
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
    ],
    [
      { role: 'user', content: 'One two three' },
      { role: 'assistant', content: 'four five six seven eight nine ten' },
    ],
  ].map((messages) => ({ messages: messages as ChatMessage[] }));
  const examples = tokenizeConversations(tok, convos);
  const seqLen = 48; // the first conversation (87 tokens) is truncated, the others are padded
  const batches = makeBatches(examples, { seqLen, batchSize: 2, padId: PAD_ID });
  assert.deepEqual(
    batches.map((b) => b.rows),
    [2, 1],
  );
  for (const [bi, b] of batches.entries()) {
    assert.equal(b.inputIds.length, b.rows * seqLen);
    for (let r = 0; r < b.rows; r++) {
      const ex = examples[bi * 2 + r];
      assert.ok(ex);
      const n = Math.min(ex.ids.length, seqLen + 1);
      for (let t = 0; t < seqLen; t++) {
        const i = r * seqLen + t;
        if (t + 1 < n) {
          assert.equal(b.inputIds[i], ex.ids[t]);
          assert.equal(b.targets[i], ex.ids[t + 1]);
          assert.equal(b.lossMask[i], ex.assistantMask[t + 1]);
        } else {
          assert.equal(b.inputIds[i], PAD_ID);
          assert.equal(b.targets[i], PAD_ID);
          assert.equal(b.lossMask[i], 0);
        }
      }
    }
  }
  // Rows whose assistant turns fall entirely past the cut are dropped: only "Hi"/"Hello!" (21 tokens) keeps a target.
  const short = makeBatches(examples, { seqLen: 16, batchSize: 8, padId: PAD_ID });
  assert.deepEqual(
    short.map((b) => b.rows),
    [1],
  );
  assert.equal(short[0]?.inputIds[0], examples[1]?.ids[0]);
});
