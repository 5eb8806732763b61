/**
 * An incremental character-level JSON automaton over a compiled schema. A state is a small set of
 * threads (several only while anyOf branches are still ambiguous); each thread is a persistent
 * stack of immutable frames, so stepping one character shares structure and a token-trie walk can
 * branch and backtrack for free. Output is minimal JSON: no whitespace at all between tokens of the
 * grammar. Numbers are capped in length (15 digits, 3 exponent digits); string escapes are the short ones (\" \\ \/ \b \f \n \r \t), not \u.
 *
 * `minRemaining` is the fewest characters that complete a thread: what the decoder's budget
 * steering compares with the tokens left.
 */
import type { ArrayNode, ObjectNode, SchemaNode, StringNode } from './schema';

const MAX_DIGITS = 15;
const MAX_EXP_DIGITS = 3;

type NumPhase = 'sign' | 'zero' | 'int' | 'dot' | 'frac' | 'e' | 'esign' | 'exp';
type ObjPhase = 'first' | 'key' | 'inKey' | 'colon' | 'value' | 'next';
type ArrPhase = 'first' | 'value' | 'next';

type Frame =
  | { t: 'root'; node: SchemaNode }
  | { t: 'lit'; id: number; chars: readonly string[]; pos: number }
  | { t: 'str'; node: StringNode; len: number; esc: boolean }
  | { t: 'num'; integer: boolean; phase: NumPhase; digits: number }
  | { t: 'obj'; node: ObjectNode; phase: ObjPhase; seen: readonly string[]; pending: string | null }
  | { t: 'key'; obj: ObjectNode; seen: readonly string[]; typed: string }
  | { t: 'arr'; node: ArrayNode; phase: ArrPhase; count: number };

export interface Stack {
  readonly f: Frame;
  readonly next: Stack | null;
}
/** null: the value is complete and closed. */
export type Thread = Stack | null;

const push = (f: Frame, next: Stack | null): Stack => ({ f, next });
const isDigit = (c: string): boolean => c >= '0' && c <= '9';
const SHORT_ESCAPES = new Set(['"', '\\', '/', 'b', 'f', 'n', 'r', 't']);
const isControl = (c: string): boolean => c.charCodeAt(0) < 0x20 && c.length === 1;

function numAccepting(phase: NumPhase): boolean {
  return phase === 'zero' || phase === 'int' || phase === 'frac' || phase === 'exp';
}

/** The threads that begin a value of `node` with `ch`, on top of `rest` (the parent already moved past the value). */
function startValue(node: SchemaNode, ch: string, rest: Stack | null): Thread[] {
  switch (node.kind) {
    case 'anyOf':
      return node.options.flatMap((o) => startValue(o, ch, rest));
    case 'literal':
      if (node.chars[0] !== ch) return [];
      return node.chars.length === 1 ? [rest] : [push({ t: 'lit', id: node.id, chars: node.chars, pos: 1 }, rest)];
    case 'string':
      return ch === '"' ? [push({ t: 'str', node, len: 0, esc: false }, rest)] : [];
    case 'number':
      if (ch === '-') return [push({ t: 'num', integer: node.integer, phase: 'sign', digits: 0 }, rest)];
      if (ch === '0') return [push({ t: 'num', integer: node.integer, phase: 'zero', digits: 1 }, rest)];
      if (isDigit(ch)) return [push({ t: 'num', integer: node.integer, phase: 'int', digits: 1 }, rest)];
      return [];
    case 'object':
      return ch === '{' ? [push({ t: 'obj', node, phase: 'first', seen: [], pending: null }, rest)] : [];
    case 'array':
      return ch === '[' ? [push({ t: 'arr', node, phase: 'first', count: 0 }, rest)] : [];
  }
}

function requiredDone(node: ObjectNode, seen: readonly string[]): boolean {
  return node.required.every((r) => seen.includes(r));
}

/** Whether another key may still be written. */
function moreKeys(node: ObjectNode, seen: readonly string[]): boolean {
  if (node.additional !== null) return true;
  for (const name of node.props.keys()) if (!seen.includes(name)) return true;
  return false;
}

function valueNode(node: ObjectNode, name: string): SchemaNode {
  return node.props.get(name) ?? (node.additional as SchemaNode);
}

/** Unseen required properties after `seen`: how many, and the characters their entries take. */
function requiredLeft(node: ObjectNode, seen: readonly string[]): { k: number; cost: number } {
  let k = 0;
  let cost = 0;
  for (const r of node.required) {
    if (!seen.includes(r)) {
      k++;
      cost += node.entryCost.get(r) as number;
    }
  }
  return { k, cost };
}

/** Characters from "just after a value" to the closing brace. */
function objectNextCost(node: ObjectNode, seen: readonly string[]): number {
  const { k, cost } = requiredLeft(node, seen);
  return k === 0 ? 1 : k + cost + 1;
}

function step(f: Frame, rest: Stack | null, ch: string): Thread[] {
  switch (f.t) {
    case 'root':
      return startValue(f.node, ch, rest);
    case 'lit':
      if (f.chars[f.pos] !== ch) return [];
      return f.pos + 1 === f.chars.length ? [rest] : [push({ ...f, pos: f.pos + 1 }, rest)];
    case 'str': {
      const { node } = f;
      if (f.esc) return SHORT_ESCAPES.has(ch) ? [push({ ...f, esc: false, len: f.len + 1 }, rest)] : [];
      if (ch === '"') return f.len >= node.minLength ? [rest] : [];
      if (isControl(ch)) return [];
      if (node.maxLength !== null && f.len >= node.maxLength) return [];
      if (ch === '\\') return [push({ ...f, esc: true }, rest)];
      return [push({ ...f, len: f.len + 1 }, rest)];
    }
    case 'num': {
      const n = (phase: NumPhase, digits: number): Thread[] => [push({ ...f, phase, digits }, rest)];
      const exp = !f.integer && (ch === 'e' || ch === 'E');
      switch (f.phase) {
        case 'sign':
          if (ch === '0') return n('zero', 1);
          if (isDigit(ch)) return n('int', 1);
          return [];
        case 'zero':
          if (ch === '.' && !f.integer) return n('dot', 0);
          if (exp) return n('e', 0);
          break;
        case 'int':
          if (isDigit(ch)) return f.digits < MAX_DIGITS ? n('int', f.digits + 1) : [];
          if (ch === '.' && !f.integer) return n('dot', 0);
          if (exp) return n('e', 0);
          break;
        case 'dot':
          return isDigit(ch) ? n('frac', 1) : [];
        case 'frac':
          if (isDigit(ch)) return f.digits < MAX_DIGITS ? n('frac', f.digits + 1) : [];
          if (exp) return n('e', 0);
          break;
        case 'e':
          if (ch === '+' || ch === '-') return n('esign', 0);
          return isDigit(ch) ? n('exp', 1) : [];
        case 'esign':
          return isDigit(ch) ? n('exp', 1) : [];
        case 'exp':
          if (isDigit(ch)) return f.digits < MAX_EXP_DIGITS ? n('exp', f.digits + 1) : [];
          break;
      }
      // The number ends here; the character belongs to the parent.
      if (!numAccepting(f.phase) || isDigit(ch) || rest === null) return [];
      return stepThread(rest, ch);
    }
    case 'obj': {
      const { node, seen } = f;
      switch (f.phase) {
        case 'first':
          if (ch === '}') return requiredDone(node, seen) ? [rest] : [];
          if (ch === '"' && moreKeys(node, seen)) return [push({ t: 'key', obj: node, seen, typed: '' }, push({ ...f, phase: 'inKey' }, rest))];
          return [];
        case 'key':
          return ch === '"' ? [push({ t: 'key', obj: node, seen, typed: '' }, push({ ...f, phase: 'inKey' }, rest))] : [];
        case 'inKey':
          return [];
        case 'colon':
          return ch === ':' ? [push({ ...f, phase: 'value' }, rest)] : [];
        case 'value':
          return startValue(valueNode(node, f.pending as string), ch, push({ ...f, phase: 'next', pending: null }, rest));
        case 'next':
          if (ch === '}') return requiredDone(node, seen) ? [rest] : [];
          if (ch === ',' && moreKeys(node, seen)) return [push({ ...f, phase: 'key' }, rest)];
          return [];
      }
      return [];
    }
    case 'key': {
      const { obj, seen } = f;
      const parent = rest as Stack;
      const below = parent.f as Extract<Frame, { t: 'obj' }>;
      if (ch === '"') {
        const listed = obj.byEncoded.get(f.typed);
        const name = listed ?? (obj.additional !== null && !/[\\"]/.test(f.typed) ? f.typed : null);
        if (name === null || seen.includes(name)) return [];
        return [push({ ...below, phase: 'colon', seen: [...seen, name], pending: name }, parent.next)];
      }
      const typed = f.typed + ch;
      let fits = false;
      for (const [enc, name] of obj.byEncoded) {
        if (!seen.includes(name) && enc.startsWith(typed)) {
          fits = true;
          break;
        }
      }
      if (!fits && obj.additional !== null && ch !== '\\' && !isControl(ch)) fits = true;
      return fits ? [push({ ...f, typed }, rest)] : [];
    }
    case 'arr': {
      const { node } = f;
      switch (f.phase) {
        case 'first':
          if (ch === ']') return node.minItems === 0 ? [rest] : [];
          if (node.maxItems === 0) return [];
          return startValue(node.items, ch, push({ ...f, phase: 'next', count: 1 }, rest));
        case 'value':
          return startValue(node.items, ch, push({ ...f, phase: 'next', count: f.count + 1 }, rest));
        case 'next':
          if (ch === ']') return f.count >= node.minItems ? [rest] : [];
          if (ch === ',' && (node.maxItems === null || f.count < node.maxItems)) return [push({ ...f, phase: 'value' }, rest)];
          return [];
      }
    }
  }
}

export function stepThread(thread: Thread, ch: string): Thread[] {
  return thread === null ? [] : step(thread.f, thread.next, ch);
}

/** The fewest characters that complete and close this frame, given that the frames above it are done. */
function frameRemaining(f: Frame): number {
  switch (f.t) {
    case 'root':
      return f.node.minLen;
    case 'lit':
      return f.chars.length - f.pos;
    case 'str':
      return (f.esc ? 1 : 0) + Math.max(0, f.node.minLength - f.len - (f.esc ? 1 : 0)) + 1;
    case 'num':
      return numAccepting(f.phase) ? 0 : 1;
    case 'obj': {
      const { node, seen } = f;
      switch (f.phase) {
        case 'first': {
          const { k, cost } = requiredLeft(node, seen);
          return k === 0 ? 1 : cost + (k - 1) + 1;
        }
        case 'key': {
          const { k, cost } = requiredLeft(node, seen);
          if (k > 0) return cost + (k - 1) + 1;
          let cheapest = Infinity;
          for (const [name, sub] of node.props) if (!seen.includes(name)) cheapest = Math.min(cheapest, Array.from(node.encoded.get(name) as string).length + 3 + sub.minLen);
          if (node.additional !== null) cheapest = Math.min(cheapest, 4 + node.additional.minLen);
          return cheapest + 1;
        }
        case 'inKey':
          return 0;
        case 'colon':
          return 1 + valueNode(node, f.pending as string).minLen + objectNextCost(node, seen);
        case 'value':
          return valueNode(node, f.pending as string).minLen + objectNextCost(node, seen);
        case 'next':
          return objectNextCost(node, seen);
      }
      return 0;
    }
    case 'key': {
      const { obj, seen, typed } = f;
      let best = Infinity;
      for (const [enc, name] of obj.byEncoded) {
        if (seen.includes(name) || !enc.startsWith(typed)) continue;
        const cost = Array.from(enc).length - Array.from(typed).length + 2 + (obj.props.get(name) as SchemaNode).minLen + objectNextCost(obj, [...seen, name]);
        best = Math.min(best, cost);
      }
      if (obj.additional !== null) best = Math.min(best, 2 + obj.additional.minLen + objectNextCost(obj, seen));
      return best;
    }
    case 'arr': {
      const { node, count } = f;
      const ml = node.items.minLen;
      switch (f.phase) {
        case 'first':
          return node.minItems === 0 ? 1 : node.minItems * ml + (node.minItems - 1) + 1;
        case 'value': {
          const n = Math.max(1, node.minItems - count);
          return n * ml + (n - 1) + 1;
        }
        case 'next':
          return Math.max(0, node.minItems - count) * (ml + 1) + 1;
      }
    }
  }
}

export function minRemaining(thread: Thread): number {
  let sum = 0;
  for (let s = thread; s !== null; s = s.next) sum += frameRemaining(s.f);
  return sum;
}

/** The value may end here (EOS allowed): closed, or a top-level number that could go on. */
export function threadComplete(thread: Thread): boolean {
  return thread === null || (thread.next === null && thread.f.t === 'num' && numAccepting(thread.f.phase));
}

function frameKey(f: Frame): string {
  switch (f.t) {
    case 'root':
      return `r${f.node.id}`;
    case 'lit':
      return `l${f.id}.${f.pos}`;
    case 'str': {
      const cap = f.node.maxLength ?? f.node.minLength;
      return `s${f.node.id}.${Math.min(f.len, cap)}${f.esc ? 'e' : ''}`;
    }
    case 'num':
      return `n${f.integer ? 'i' : ''}${f.phase}${f.digits}`;
    case 'obj':
      return `o${f.node.id}.${f.phase}.${[...f.seen].sort().join('\u0001')}.${f.pending ?? ''}`;
    case 'key': {
      // A free key that can no longer become a listed or an already-written name: every such key
      // has the same future (the budget steering, not a cap, ends it), so they share one entry.
      const { obj, typed } = f;
      let open = false;
      for (const enc of obj.byEncoded.keys()) if (enc.startsWith(typed)) open = true;
      for (const name of f.seen) if (name.startsWith(typed)) open = true;
      return open ? `k${obj.id}.${typed}` : `k${obj.id}.*`;
    }
    case 'arr': {
      const count = f.node.maxItems !== null ? f.count : Math.min(f.count, f.node.minItems);
      return `a${f.node.id}.${f.phase}.${count}`;
    }
  }
}

/** Identifies everything that decides a thread's future: equal keys, equal futures. */
export function threadKey(thread: Thread): string {
  const parts: string[] = [];
  for (let s = thread; s !== null; s = s.next) parts.push(frameKey(s.f));
  return parts.length ? parts.join('|') : '$';
}

/** Steps every thread by one character, dropping dead ones and duplicates. */
export function stepThreads(threads: readonly Thread[], ch: string): Thread[] {
  const out: Thread[] = [];
  for (const t of threads) out.push(...stepThread(t, ch));
  if (out.length < 2) return out;
  const seen = new Set<string>();
  return out.filter((t) => {
    const k = threadKey(t);
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

/** The start state: one thread about to read the root value. */
export function initialThreads(root: SchemaNode): Thread[] {
  return [push({ t: 'root', node: root }, null)];
}
