/**
 * The dataset format (JSON lines of conversations: a bad line is DATASET_INVALID with its number)
 * and prepareDataset on the tiny model's real tokenizer: every conversation accounted for (kept,
 * split, truncated, dropped), an empty held-out split reported, nothing to learn a coded error.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { AppError } from '../../shared';
import { buildTinyModel } from '../../tools/tiny-model';
import { ModelTokenizer, type ChatMessage } from '../model';
import { parseConversations } from './dataset';
import { prepareDataset, type PrepareOptions } from './prepare';

const tiny = buildTinyModel({ seed: 1 });
const dec = new TextDecoder();
const tokenizerJson = JSON.parse(dec.decode(tiny.files.get('tokenizer.json'))) as Record<string, unknown>;
const tokenizerConfig = JSON.parse(dec.decode(tiny.files.get('tokenizer_config.json'))) as Record<string, unknown>;
const tok = new ModelTokenizer(tokenizerJson, tokenizerConfig);

const line = (messages: ChatMessage[]): string => JSON.stringify({ messages });
const qa = (i: number): ChatMessage[] => [
  { role: 'user', content: `Say ${i}` },
  { role: 'assistant', content: `Number ${i}.` },
];
/** Four exchanges after a system prompt: about 90 tokens rendered. */
const long: ChatMessage[] = [
  { role: 'system', content: 'You answer in one short line.' },
  ...[1, 2, 3, 4].flatMap((i) => [
    { role: 'user' as const, content: `What comes after ${i}?` },
    { role: 'assistant' as const, content: `${i + 1} comes after ${i}.` },
  ]),
];

function caught(fn: () => unknown): AppError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof AppError, String(err));
    return err;
  }
  assert.fail('expected an AppError');
}

test('lines that are not conversations are DATASET_INVALID with their line number', () => {
  const good = line(long);
  const cases: [string, number, RegExp][] = [
    [`${good}\n{oops`, 2, /not JSON/],
    [`${good}\n\n[1,2]`, 3, /not a JSON object/],
    [`{"messages":[]}`, 1, /missing or empty/],
    [`${good}\n{"messages":[{"role":"robot","content":"x"}]}`, 2, /role "robot"/],
    [`{"messages":[{"role":"user","content":3}]}`, 1, /no string content/],
    [`{"messages":[{"role":"user","content":"hi"}]}`, 1, /no assistant message/],
    [`${good}\n${good}\n"just a string"`, 3, /not a JSON object/],
  ];
  for (const [text, n, why] of cases) {
    const err = caught(() => parseConversations(text));
    assert.equal(err.code, 'DATASET_INVALID');
    assert.equal(err.details?.line, n);
    assert.match(err.message, why);
    assert.match(err.message, new RegExp(`line ${n}`));
  }
  // Blank lines and CRLF are fine; line numbers count them.
  const parsed = parseConversations(`${good}\r\n\r\n${good}\r\n`);
  assert.deepEqual(
    parsed.map((c) => c.line),
    [1, 3],
  );
  assert.equal(caught(() => parseConversations('\n\n')).code, 'DATASET_INVALID');
});

const base: PrepareOptions = { seed: 3, heldOutFraction: 0, seqLen: 48, batchSize: 4 };

test('long conversations are split by turns by default, and every conversation is counted', () => {
  const text = [line(long), line(qa(1)), line(long), line(qa(2))].join('\n');
  const wide = { ...base, seqLen: 100 }; // a long conversation is 171 tokens; two exchanges with the system prompt fit in 101
  const r = prepareDataset(text, tok, wide).report;
  assert.equal(r.overflow, 'split');
  assert.deepEqual([r.conversations, r.kept, r.split, r.truncated, r.dropped], [4, 2, 2, 0, 0]);
  assert.equal(r.trainRows, 2 + 2 * 2);
  assert.deepEqual(r.warnings, []);

  const t = prepareDataset(text, tok, { ...wide, overflow: 'truncate' }).report;
  assert.deepEqual([t.kept, t.split, t.truncated, t.dropped, t.trainRows], [2, 0, 2, 0, 4]);
  assert.match(t.warnings.join('\n'), /2 of 4 conversations truncated at 100 tokens/);
  const d = prepareDataset(text, tok, { ...wide, overflow: 'drop' }).report;
  assert.deepEqual([d.kept, d.dropped, d.trainRows, d.droppedLines], [2, 2, 2, [1, 3]]);
  assert.match(d.warnings.join('\n'), /2 of 4 conversations dropped.*lines 1, 3/);
  // More targets are trained on when split than when truncated.
  assert.ok(r.trainTargets > t.trainTargets);
});

test('an empty held-out split is a field and a warning, not a silent zero', () => {
  const one = prepareDataset(line(qa(1)), tok, { ...base, heldOutFraction: 0.2 });
  assert.equal(one.heldOut.length, 0);
  assert.equal(one.report.heldOutEmpty, true);
  assert.match(one.report.warnings.join('\n'), /held-out split is empty/);
  // Held out, but its only conversation has no answer within the sequence length.
  const lines = [line(long), ...[1, 2, 3].map((i) => line(qa(i)))].join('\n');
  const seeds = Array.from({ length: 40 }, (_, s) => s);
  const seed = seeds.find((s) => prepareDataset(lines, tok, { ...base, seed: s, heldOutFraction: 0.25, overflow: 'drop' }).report.heldOutEmpty);
  assert.ok(seed !== undefined, 'some seed holds out the long conversation');
  const p = prepareDataset(lines, tok, { ...base, seed, heldOutFraction: 0.25, overflow: 'drop' }).report;
  assert.deepEqual([p.heldOutConversations, p.heldOutRows, p.dropped], [1, 0, 1]);
  assert.match(p.warnings.join('\n'), /no assistant token within 48 tokens/);
  const full = prepareDataset(Array.from({ length: 10 }, (_, i) => line(qa(i))).join('\n'), tok, { ...base, heldOutFraction: 0.2 });
  assert.deepEqual([full.report.heldOutEmpty, full.report.heldOutRows, full.report.trainRows], [false, 2, 8]);
  assert.ok(full.report.heldOutTargets > 0);
});

test('nothing to learn is DATASET_NO_TARGETS: after templating, or within the sequence length', () => {
  // A template that renders only user turns leaves no assistant token.
  const userOnly = "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] + '\\n' }}{% endif %}{% endfor %}";
  const t = caught(() => prepareDataset(line(qa(1)), tok, { ...base, template: userOnly }));
  assert.equal(t.code, 'DATASET_NO_TARGETS');
  assert.equal(t.details?.stage, 'template');
  const s = caught(() => prepareDataset(line(long), tok, { ...base, seqLen: 8 }));
  assert.equal(s.code, 'DATASET_NO_TARGETS');
  assert.equal(s.details?.stage, 'sequence length');
  assert.equal(s.details?.dropped, 1);
  assert.equal(caught(() => prepareDataset(line(qa(1)), tok, { ...base, overflow: 'wrap' as never })).code, 'INVALID_ARGUMENT');
});

test('a model without a chat template: CHAT_TEMPLATE_MISSING, unless the run names one', () => {
  const { chat_template: _t, ...noTemplate } = tokenizerConfig;
  const bare = new ModelTokenizer(tokenizerJson, noTemplate);
  assert.equal(caught(() => prepareDataset(line(qa(1)), bare, base)).code, 'CHAT_TEMPLATE_MISSING');
  const named = prepareDataset(line(qa(1)), bare, { ...base, template: 'chatml' });
  assert.equal(named.report.template, 'chatml');
  assert.deepEqual(named.train, prepareDataset(line(qa(1)), tok, base).train); // the tiny model's own template is ChatML
});

test('prepareDataset is deterministic by seed', () => {
  const lines = Array.from({ length: 10 }, (_, i) => line(qa(i))).join('\n');
  const opts = { ...base, heldOutFraction: 0.2, seqLen: 32 };
  assert.deepEqual(prepareDataset(lines, tok, opts), prepareDataset(lines, tok, opts));
  assert.notDeepEqual(prepareDataset(lines, tok, opts).train, prepareDataset(lines, tok, { ...opts, seed: 4 }).train);
});
