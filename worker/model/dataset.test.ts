import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '../../shared';
import { buildTinyModel, IM_END_ID, PAD_ID } from '../../tools/tiny-model';
import { makeBatches, parseConversations, prepareDataset, shuffleExamples, splitHeldOut, tokenizeConversation, tokenizeConversations } from './dataset';
import { ModelTokenizer } from './tokenizer';

const tiny = buildTinyModel({ seed: 1 });
const dec = new TextDecoder();
const tok = new ModelTokenizer(dec.decode(tiny.files.get('tokenizer.json')), dec.decode(tiny.files.get('tokenizer_config.json')));

const convo = {
  messages: [
    { role: 'system', content: 'You are helpful.' },
    { role: 'user', content: 'What is the weather?' },
    { role: 'assistant', content: 'It is warm and sunny.' },
    { role: 'user', content: 'Thanks!' },
    { role: 'assistant', content: 'You are welcome.' },
  ],
};

function lineError(text: string): AppError {
  try {
    parseConversations(text);
  } catch (err) {
    assert.ok(err instanceof AppError);
    return err;
  }
  assert.fail('expected DATASET_INVALID');
}

test('loss mask covers exactly the assistant turns, each with its end-of-turn token', () => {
  const [c] = parseConversations(JSON.stringify(convo) + '\n');
  assert.ok(c);
  const ex = tokenizeConversation(tok, c.messages);
  assert.equal(ex.ids.length, ex.assistantMask.length);
  // The split tokenization equals tokenizing the whole rendered conversation.
  assert.deepEqual(Array.from(ex.ids), tok.encode(tok.applyChatTemplate(c.messages)));
  // Contiguous masked runs decode to the assistant contents followed by <|im_end|>.
  const runs: number[][] = [];
  for (let i = 0; i < ex.ids.length; i++) {
    if (!ex.assistantMask[i]) continue;
    if (i === 0 || !ex.assistantMask[i - 1]) runs.push([]);
    runs.at(-1)?.push(ex.ids[i] as number);
  }
  assert.deepEqual(
    runs.map((r) => tok.decode(r)),
    ['It is warm and sunny.<|im_end|>', 'You are welcome.<|im_end|>'],
  );
  for (const r of runs) assert.equal(r.at(-1), IM_END_ID);
});

test('lines that are not conversations are DATASET_INVALID with their line number', () => {
  const good = JSON.stringify(convo);
  const cases: [string, number, RegExp][] = [
    [`${good}\n{oops`, 2, /not JSON/],
    [`${good}\n\n[1,2]`, 3, /not a JSON object/],
    [`{"messages":[]}`, 1, /missing or empty/],
    [`${good}\n{"messages":[{"role":"robot","content":"x"}]}`, 2, /role "robot"/],
    [`{"messages":[{"role":"user","content":3}]}`, 1, /no string content/],
    [`{"messages":[{"role":"user","content":"hi"}]}`, 1, /no assistant message/],
  ];
  for (const [text, line, why] of cases) {
    const err = lineError(text);
    assert.equal(err.code, 'DATASET_INVALID');
    assert.equal(err.details?.line, line);
    assert.match(err.message, why);
    assert.match(err.message, new RegExp(`line ${line}`));
  }
  // Blank lines and CRLF are fine.
  assert.equal(parseConversations(`${good}\r\n\r\n${good}\r\n`).length, 2);
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
  const lines = [
    convo,
    { messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' }] },
    { messages: [{ role: 'user', content: 'One two three' }, { role: 'assistant', content: 'four five six seven eight nine ten' }] },
  ].map((c) => JSON.stringify(c));
  const examples = tokenizeConversations(tok, parseConversations(lines.join('\n')));
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

test('prepareDataset: split, batches and target counts, deterministic by seed', () => {
  const lines = Array.from({ length: 10 }, (_, i) =>
    JSON.stringify({ messages: [{ role: 'user', content: `Say ${i}` }, { role: 'assistant', content: `Number ${i}.` }] }),
  ).join('\n');
  const opts = { seed: 3, heldOutFraction: 0.2, seqLen: 32, batchSize: 4 };
  const a = prepareDataset(lines, tok, opts);
  assert.equal(a.conversations, 10);
  assert.deepEqual(
    a.train.map((b) => b.rows),
    [4, 4],
  );
  assert.deepEqual(
    a.heldOut.map((b) => b.rows),
    [2],
  );
  assert.ok(a.trainTargets > 0 && a.heldOutTargets > 0);
  assert.deepEqual(prepareDataset(lines, tok, opts), a);
  // Custom end-of-turn ids: masking stops after the last one in the span.
  const ex = tokenizeConversation(tok, [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }], { endOfTurnIds: [] });
  assert.equal(ex.assistantMask.at(-1), 1); // without an end id, the trailing newline is masked too
});
