import { test } from 'node:test';
import assert from 'node:assert/strict';
import { thrownCode } from '../../../shared/testing';
import { mulberry32 } from '../../model';
import { buildVocabulary, compileResponseFormat, JsonConstraint, type CompiledFormat } from '.';

/** A small vocabulary: every printable ASCII character alone, plus multi-character pieces. */
const PIECES = ['{"', '":', '","', '"}', '},{', '[{', '}]', 'true', 'false', 'null', 'name', 'age', '12', '3.5', 'e-7', ' ', 'hello', '"a"', 'é', '日本', '\\n', '""', '[]', '{}', ',"', '":"'];
const CHARS = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i));
const TEXTS = [...CHARS, ...PIECES, '\uFFFD'];
const EOS = TEXTS.length;
const vocab = buildVocabulary(TEXTS.length + 1, (id) => (id === EOS ? null : (TEXTS[id] as string)));

/** Random walk: each step a uniformly random allowed token, within `budget` tokens. */
function randomWalk(format: CompiledFormat, seed: number, budget: number): { text: string; ended: 'eos' | 'closed' | 'budget' } {
  const rng = mulberry32(seed);
  const c = new JsonConstraint(format, vocab);
  let text = '';
  for (let left = budget; left > 0; left--) {
    const mask = c.mask(left, [EOS]);
    const allowed = [...mask.keys()].filter((i) => mask[i]);
    assert.ok(allowed.length > 0, `nothing allowed after ${JSON.stringify(text)}`);
    const id = allowed[rng.int(allowed.length)] as number;
    if (id === EOS) return { text, ended: 'eos' };
    assert.ok(c.accept(id));
    text += TEXTS[id];
    if (c.closed) return { text, ended: 'closed' };
  }
  return { text, ended: 'budget' };
}

const schema = {
  type: 'object',
  properties: {
    name: { type: 'string', minLength: 2, maxLength: 8 },
    age: { type: 'integer' },
    tags: { type: 'array', items: { enum: ['a', 'b', 7, null] }, minItems: 1, maxItems: 3 },
    kind: { const: 'cat' },
    score: { anyOf: [{ type: 'number' }, { type: 'null' }] },
    nested: { type: 'object', properties: { ok: { type: 'boolean' } }, required: ['ok'], additionalProperties: false },
  },
  required: ['name', 'tags', 'nested'],
  additionalProperties: false,
};

/** A validator for exactly this test schema's keywords (independent of the automaton). */
function validates(s: Record<string, unknown>, v: unknown): boolean {
  if ('const' in s) return JSON.stringify(s.const) === JSON.stringify(v);
  if ('enum' in s) return (s.enum as unknown[]).some((e) => JSON.stringify(e) === JSON.stringify(v));
  if ('anyOf' in s) return (s.anyOf as Record<string, unknown>[]).some((o) => validates(o, v));
  switch (s.type) {
    case 'string':
      return typeof v === 'string' && [...v].length >= ((s.minLength as number) ?? 0) && [...v].length <= ((s.maxLength as number) ?? Infinity);
    case 'integer':
      return Number.isInteger(v);
    case 'number':
      return typeof v === 'number';
    case 'boolean':
      return typeof v === 'boolean';
    case 'null':
      return v === null;
    case 'array':
      return Array.isArray(v) && v.length >= ((s.minItems as number) ?? 0) && v.length <= ((s.maxItems as number) ?? Infinity) && v.every((x) => validates(s.items as Record<string, unknown>, x));
    case 'object': {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
      const props = (s.properties ?? {}) as Record<string, Record<string, unknown>>;
      const o = v as Record<string, unknown>;
      if (((s.required ?? []) as string[]).some((r) => !(r in o))) return false;
      return Object.entries(o).every(([k, x]) => (k in props ? validates(props[k] as Record<string, unknown>, x) : s.additionalProperties !== false));
    }
    default:
      return false;
  }
}

test('json_object: random walks through the mask always give a JSON object, closed within the budget', () => {
  const format = compileResponseFormat({ type: 'json_object' }) as CompiledFormat;
  const endings = new Set<string>();
  for (let seed = 0; seed < 60; seed++) {
    const budget = 8 + (seed % 5) * 10;
    const { text, ended } = randomWalk(format, seed, budget);
    endings.add(ended);
    const value: unknown = JSON.parse(text);
    assert.ok(typeof value === 'object' && value !== null && !Array.isArray(value), text);
  }
  assert.ok(endings.has('closed'));
});

test('json_schema: random walks validate against the schema, even with a budget just above the minimum', () => {
  const format = compileResponseFormat({ type: 'json_schema', schema }) as CompiledFormat;
  const min = format.root.minLen;
  assert.equal(min, '{"name":"xx","tags":[0],"nested":{"ok":true}}'.length);
  for (let seed = 0; seed < 60; seed++) {
    const { text } = randomWalk(format, 1000 + seed, min + (seed % 4) * 15);
    const value: unknown = JSON.parse(text);
    assert.ok(validates(schema, value), text);
  }
});

test('the automaton rejects what the schema forbids and tracks what is left', () => {
  const format = compileResponseFormat({ type: 'json_schema', schema: { type: 'array', items: { type: 'string', maxLength: 2 }, maxItems: 2 } }) as CompiledFormat;
  const feed = (text: string): JsonConstraint | null => {
    const c = new JsonConstraint(format, vocab);
    for (const ch of text) if (!c.accept(TEXTS.indexOf(ch))) return null;
    return c;
  };
  assert.ok(feed('["ab","c"]')?.closed);
  assert.equal(feed('["abc'), null, 'maxLength');
  assert.equal(feed('["a","b",'), null, 'maxItems');
  assert.equal(feed('[ '), null, 'no whitespace');
  assert.equal(feed('["a\\q'), null, 'unknown escape');
  assert.equal(feed('["a"')?.remaining, 1);
  assert.equal(feed('[')?.remaining, 1);
  const num = compileResponseFormat({ type: 'json_schema', schema: { type: 'integer' } }) as CompiledFormat;
  const c = new JsonConstraint(num, vocab);
  assert.ok(c.accept(TEXTS.indexOf('12')));
  assert.ok(c.complete && !c.closed, 'a top-level number may end or go on');
  assert.equal(c.accept(TEXTS.indexOf('3.5')), false, 'integers have no fraction');
  const zero = new JsonConstraint(num, vocab);
  assert.ok(zero.accept(TEXTS.indexOf('0')));
  assert.equal(zero.accept(TEXTS.indexOf('12')), false, 'no leading zeros');
});

test('unsupported or unsatisfiable schemas are refused with RESPONSE_FORMAT_UNSUPPORTED', () => {
  const refused = (s: unknown): string => thrownCode(() => compileResponseFormat({ type: 'json_schema', schema: s }));
  assert.equal(refused({ type: 'string', pattern: '^a' }), 'RESPONSE_FORMAT_UNSUPPORTED');
  assert.equal(refused({ $ref: '#/$defs/x' }), 'RESPONSE_FORMAT_UNSUPPORTED');
  assert.equal(refused({ type: 'number', minimum: 3 }), 'RESPONSE_FORMAT_UNSUPPORTED');
  assert.equal(refused({ type: 'object', properties: { a: { oneOf: [] } } }), 'RESPONSE_FORMAT_UNSUPPORTED');
  assert.equal(refused({ type: 'date' }), 'RESPONSE_FORMAT_UNSUPPORTED');
  assert.equal(refused({ type: 'string', minLength: 5, maxLength: 2 }), 'RESPONSE_FORMAT_UNSUPPORTED');
  assert.equal(refused({ type: 'object', required: ['x'], additionalProperties: false }), 'RESPONSE_FORMAT_UNSUPPORTED');
  assert.equal(refused({ type: 'integer', enum: ['a'] }), 'RESPONSE_FORMAT_UNSUPPORTED');
  assert.equal(refused({ type: 'array', items: [{ type: 'string' }] }), 'RESPONSE_FORMAT_UNSUPPORTED');
  assert.equal(refused(schema), 'none');
  assert.equal(refused({ title: 'anything', description: 'goes' }), 'none');
  try {
    compileResponseFormat({ type: 'json_schema', schema: { type: 'object', properties: { a: { type: 'string', format: 'email' } } } });
    assert.fail('accepted format');
  } catch (err) {
    assert.deepEqual((err as { details?: unknown }).details, { path: '/properties/a', keyword: 'format' });
  }
  assert.equal(compileResponseFormat({ type: 'text' }), null);
  assert.equal(compileResponseFormat(undefined), null);
});
