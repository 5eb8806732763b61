import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildTinyModel, IM_END_ID, IM_START_ID } from '../../tools/tiny-model';
import { loadTokenizer } from '../model';
import { IncrementalDetokenizer } from './detokenize';
import { StopMatcher } from './stop';

const tiny = buildTinyModel({ seed: 1 });
const tokenizer = loadTokenizer(async (name) => tiny.files.get(name) as Uint8Array);

test('incremental detokenization: multi-byte characters split over tokens, special tokens skipped', async () => {
  const tok = await tokenizer;
  const text = 'héllo wörld ✓ 日本語 — ok 🎉!';
  const ids = tok.encode(text);
  assert.ok(ids.some((id) => tok.decode([id]).includes('\uFFFD')), 'the text must split some characters over tokens');
  const withSpecials = [IM_START_ID, ...ids.slice(0, 5), IM_END_ID, ...ids.slice(5)];
  const detok = new IncrementalDetokenizer((xs) => tok.decode(xs), new Set([IM_START_ID, IM_END_ID]));
  const deltas = withSpecials.map((id) => detok.push(id));
  for (const d of deltas) assert.ok(!d.includes('\uFFFD'), `a delta held U+FFFD: ${JSON.stringify(d)}`);
  assert.ok(deltas.some((d) => d === ''), 'some tokens complete no character');
  assert.equal(deltas.join('') + detok.flush(), text);
  assert.equal(detok.text, text);

  // A sequence that ends in the middle of a character gives its U+FFFD at flush, not before.
  const emoji = tok.encode('🎉');
  const cut = new IncrementalDetokenizer((xs) => tok.decode(xs));
  const parts = emoji.slice(0, -1).map((id) => cut.push(id));
  assert.equal(parts.join(''), '');
  assert.ok(cut.flush().includes('\uFFFD'));
});

test('stop strings: cut at the first occurrence, held back while they may still begin', () => {
  const m = new StopMatcher(['END', '\n\n']);
  const out: string[] = [];
  for (const chunk of ['Hello E', 'N', 'ough said', ' E', 'NDING']) {
    const r = m.push(chunk);
    out.push(r.text);
    if (r.stopped) break;
  }
  assert.deepEqual(out, ['Hello ', '', 'ENough said', ' ', '']);
  assert.equal(out.join(''), 'Hello ENough said ');
  assert.ok(m.stopped);

  const n = new StopMatcher(['abcd']);
  assert.deepEqual(n.push('xxab'), { text: 'xx', stopped: false });
  assert.deepEqual(n.push('c'), { text: '', stopped: false });
  assert.deepEqual(n.push('e'), { text: 'abce', stopped: false });
  assert.equal(n.push('ab').text, '');
  assert.equal(n.flush(), 'ab', 'an unfinished stop prefix is released at the end');

  // The earliest of several stop strings wins, even inside one chunk.
  const k = new StopMatcher(['world', 'lo w']);
  assert.deepEqual(k.push('hello world'), { text: 'hel', stopped: true });
});
