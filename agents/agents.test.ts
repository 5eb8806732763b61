/**
 * The sample agents, run for real: each module from agents/dist/ is instantiated
 * in this thread with @bjorn3/browser_wasi_shim (a minimal harness; the pooled
 * runtime lives in worker/agents) and checked against a JavaScript reference.
 * Hostile agents are shown to be hostile, deterministically: fuel and memory caps
 * come from shared/wasm, the 10 s sleep is observed at the poll_oneoff call.
 * The last test rebuilds everything with `agents/build.sh --check`.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ConsoleStdout, File, OpenFile, PreopenDirectory, WASI, type Fd } from '@bjorn3/browser_wasi_shim';
import {
  capMemory,
  DEFAULT_AGENT_LIMITS,
  FUEL_EXPORT,
  GROW_EXPORT,
  instrumentFuel,
  LIMITS,
  pagesForMB,
  validateAgentModule,
} from '../shared';
import { AGENTS, HOSTILE_AGENTS, USEFUL_AGENTS, findAgent, readAgent } from './index';
import { thrownCode } from '../shared/testing';

const ROOT = join(import.meta.dirname, '..');
const enc = new TextEncoder();
const dec = new TextDecoder();

// ------------------------------------------------------------------ harness

class OutputCapReached extends Error {}

interface RunOptions {
  stdin?: string | Uint8Array;
  files?: Record<string, string>;
  /** Throws OutputCapReached out of fd_write once stdout passes this many bytes. */
  stdoutCap?: number;
  /** Replaces WASI functions (by name) before instantiation. */
  override?: Record<string, (...args: any[]) => unknown>;
  /** Called with the instance before `_start` (to set fuel). */
  before?: (instance: WebAssembly.Instance) => void;
}

interface RunResult {
  /** null when the run ended by an exception (trap, cap). */
  exitCode: number | null;
  stdout: string;
  stderr: string;
  error: unknown;
  instance: WebAssembly.Instance;
}

/** Compiles bytes from any buffer (shared/wasm returns Uint8Array<ArrayBufferLike>). */
const compile = (bytes: Uint8Array): WebAssembly.Module => new WebAssembly.Module(new Uint8Array(bytes));

const compiled = new Map<string, WebAssembly.Module>();
function moduleOf(name: string): WebAssembly.Module {
  let mod = compiled.get(name);
  if (!mod) {
    mod = new WebAssembly.Module(readAgent(name));
    compiled.set(name, mod);
  }
  return mod;
}

function run(mod: WebAssembly.Module, name: string, opts: RunOptions = {}): RunResult {
  const out: Uint8Array[] = [];
  const err: Uint8Array[] = [];
  let outBytes = 0;
  const stdin = typeof opts.stdin === 'string' ? enc.encode(opts.stdin) : (opts.stdin ?? new Uint8Array());
  const files = new Map(Object.entries(opts.files ?? {}).map(([n, text]) => [n, new File(enc.encode(text))]));
  const fds: Fd[] = [
    new OpenFile(new File(stdin)),
    new ConsoleStdout((b) => {
      outBytes += b.length;
      out.push(b.slice());
      if (opts.stdoutCap !== undefined && outBytes > opts.stdoutCap) throw new OutputCapReached();
    }),
    new ConsoleStdout((b) => void err.push(b.slice())),
    new PreopenDirectory('/input', files),
  ];
  const wasi = new WASI([name], ['AGENT_TASK_ID=00000000-0000-4000-8000-000000000000', `AGENT_NAME=${name}`], fds, { debug: false });
  const imports = { ...wasi.wasiImport, ...opts.override };
  const instance = new WebAssembly.Instance(mod, { wasi_snapshot_preview1: imports });
  opts.before?.(instance);
  let exitCode: number | null = null;
  let error: unknown = null;
  try {
    exitCode = wasi.start(instance as Parameters<WASI['start']>[0]); // proc_exit(n) returns n
  } catch (e) {
    error = e;
  }
  const text = (chunks: Uint8Array[]) => dec.decode(Buffer.concat(chunks));
  return { exitCode, stdout: text(out), stderr: text(err), error, instance };
}

function runAgent(name: string, opts: RunOptions = {}): RunResult {
  return run(moduleOf(name), name, opts);
}

/** Runs an agent on `input` and returns its parsed stdout, failing on a non-zero exit. */
function runJson(name: string, input: unknown, files?: Record<string, string>): unknown {
  const r = runAgent(name, { stdin: JSON.stringify(input), files });
  assert.equal(r.error, null, `${name} threw: ${String(r.error)}; stderr: ${r.stderr}`);
  assert.equal(r.exitCode, 0, `${name} exited ${r.exitCode}: ${r.stderr}`);
  return JSON.parse(r.stdout);
}


/** A seeded generator, so random cases are the same on every run. */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ----------------------------------------------------------- JS references

function textStatsRef(raw: string) {
  const text = Buffer.from(raw, 'utf8').toString('utf8'); // lone surrogates → U+FFFD, as the agent decodes them
  const tokens = text.split(/[ \t\n\v\f\r]+/).filter((w) => w.length > 0);
  const counts = new Map<string, number>();
  for (const t of tokens) {
    const w = t.replace(/^[!-/:-@[-`{-~]+|[!-/:-@[-`{-~]+$/g, '').replace(/[A-Z]/g, (c) => c.toLowerCase());
    if (w) counts.set(w, (counts.get(w) ?? 0) + 1);
  }
  const topWords = [...counts]
    .sort((a, b) => b[1] - a[1] || Buffer.compare(Buffer.from(a[0]), Buffer.from(b[0])))
    .slice(0, 5);
  const lines = text.length === 0 ? 0 : (text.match(/\n/g)?.length ?? 0) + (text.endsWith('\n') ? 0 : 1);
  return { chars: [...text].length, words: tokens.length, lines, topWords };
}

type Row = Record<string, unknown>;
type Op = Record<string, unknown>;

function rankOf(v: unknown): number {
  if (v === undefined) return 6;
  if (typeof v === 'number') return 0;
  if (typeof v === 'string') return 1;
  if (typeof v === 'boolean') return 2;
  if (v === null) return 3;
  return Array.isArray(v) ? 4 : 5;
}

function compareRef(a: unknown, b: unknown): number {
  if (typeof a === 'number' && typeof b === 'number') return a - b;
  if (typeof a === 'string' && typeof b === 'string') return Buffer.compare(Buffer.from(a), Buffer.from(b));
  if (typeof a === 'boolean' && typeof b === 'boolean') return Number(a) - Number(b);
  return rankOf(a) - rankOf(b);
}

function transformRef(input: { data: unknown; ops: Op[] }): unknown {
  let data = input.data;
  for (const op of input.ops) {
    const rows = data as Row[];
    switch (op.op) {
      case 'pick':
        data = rows.map((r) => Object.fromEntries((op.keys as string[]).filter((k) => k in r).map((k) => [k, r[k]])));
        break;
      case 'rename':
        data = rows.map((r) =>
          (op.from as string) in r && op.from !== op.to
            ? Object.fromEntries(Object.entries(r).filter(([k]) => k !== op.to).map(([k, v]) => [k === op.from ? (op.to as string) : k, v]))
            : r,
        );
        break;
      case 'sort': {
        const by = op.by as string;
        data = [...rows].sort((x, y) => {
          const [a, b] = [x[by], y[by]];
          return a !== undefined && b !== undefined && op.desc === true ? compareRef(b, a) : compareRef(a, b);
        });
        break;
      }
      case 'filter':
        data = rows.filter((r) => JSON.stringify(r[op.key as string]) === JSON.stringify(op.eq));
        break;
      case 'limit':
        data = rows.slice(0, op.n as number);
        break;
      case 'sum':
        data = rows.reduce((s, r) => s + (typeof r[op.key as string] === 'number' ? (r[op.key as string] as number) : 0), 0);
        break;
      default:
        throw new Error(`no reference for ${String(op.op)}`);
    }
  }
  return { result: data };
}

const sha256 = (data: string | Uint8Array) => createHash('sha256').update(data).digest('hex');

function digestRef(input: { text?: string }) {
  const stdin = JSON.stringify(input);
  const out: Record<string, unknown> = { sha256: sha256(stdin), bytes: Buffer.byteLength(stdin) };
  if (input.text !== undefined) out.text = { sha256: sha256(input.text), bytes: Buffer.byteLength(input.text) };
  return out;
}

// ------------------------------------------------------------------ catalog

describe('catalog', () => {
  it('names every module in agents/dist/ once, with its source', () => {
    const names = AGENTS.map((a) => a.name);
    assert.equal(new Set(names).size, names.length);
    const built = readdirSync(join(ROOT, 'agents/dist')).filter((f) => f.endsWith('.wasm')).map((f) => f.slice(0, -5));
    assert.deepEqual([...built].sort(), [...names].sort());
    for (const a of AGENTS) {
      assert.ok(existsSync(join(ROOT, a.source)), a.source);
      assert.ok(existsSync(join(ROOT, a.file)), a.file);
      assert.equal(findAgent(a.name), a);
    }
  });

  it('readAgent refuses unknown names with AGENT_NOT_FOUND', () => {
    assert.equal(thrownCode(() => readAgent('no-such-agent')), 'AGENT_NOT_FOUND');
  });

  it('the expected outputs are what the JavaScript references compute', () => {
    const text = findAgent('text-stats')!;
    const textIn = text.input as { text: string };
    assert.deepEqual(text.expected, {
      ok: true,
      output: { ...textStatsRef(textIn.text), files: { 'notes.txt': textStatsRef(text.files!['notes.txt']!) } },
    });
    const jt = findAgent('json-transform')!;
    assert.deepEqual(jt.expected, { ok: true, output: transformRef(jt.input as { data: unknown; ops: Op[] }) });
    const dg = findAgent('digest')!;
    assert.deepEqual(dg.expected, { ok: true, output: digestRef(dg.input as { text: string }) });
  });

  it('every module but bad-import and no-start passes the registry check; those two are refused with their codes', () => {
    for (const a of AGENTS) {
      const want = !a.expected.ok && a.expected.stage === 'register' ? a.expected.errorCode : 'none';
      assert.equal(thrownCode(() => validateAgentModule(readAgent(a.name))), want, a.name);
    }
  });

  it('useful agents are small and start within the default 16 MiB memory', () => {
    for (const a of USEFUL_AGENTS) {
      const bytes = readAgent(a.name);
      const info = validateAgentModule(bytes);
      assert.ok(bytes.length < 160 * 1024, `${a.name} is ${bytes.length} bytes`);
      assert.ok(info.initialPages <= 256, `${a.name} starts with ${info.initialPages} pages`);
    }
  });
});

// ------------------------------------------------------------ useful agents

describe('useful agents take the largest input within the default memory cap', () => {
  const maxBytes = LIMITS.maxAgentInputBytes - 1024;
  const capped = (name: string) => compile(capMemory(readAgent(name), pagesForMB(DEFAULT_AGENT_LIMITS.memoryMB)));
  function fill(make: (i: number) => string): string {
    let out = '';
    for (let i = 0; out.length < maxBytes; i++) out += make(i);
    return out.slice(0, maxBytes);
  }

  it('text-stats: 255 KiB of mostly distinct words', () => {
    const text = fill((i) => `w${i % 30_000} `);
    const r = run(capped('text-stats'), 'text-stats', { stdin: JSON.stringify({ text }) });
    assert.equal(r.exitCode, 0, `${String(r.error)} ${r.stderr}`);
    assert.deepEqual(JSON.parse(r.stdout), textStatsRef(text));
  });

  it('json-transform: thousands of rows, sorted and picked', () => {
    const data = Array.from({ length: 4000 }, (_, i) => ({ id: i, name: `n${(i * 7919) % 4000}`, v: (i * 31) % 97, pad: 'x'.repeat(20) }));
    const input = { data, ops: [{ op: 'sort', by: 'name' }, { op: 'pick', keys: ['name', 'v'] }] };
    assert.ok(JSON.stringify(input).length < LIMITS.maxAgentInputBytes);
    const r = run(capped('json-transform'), 'json-transform', { stdin: JSON.stringify(input) });
    assert.equal(r.exitCode, 0, `${String(r.error)} ${r.stderr}`);
    assert.deepEqual(JSON.parse(r.stdout), transformRef(input));
  });

  it('digest: an object with tens of thousands of keys', () => {
    let keys = '';
    for (let i = 0; keys.length < maxBytes; i++) keys += `"k${i}":0,`;
    const stdin = `{${keys}"text":"end"}`;
    const r = run(capped('digest'), 'digest', { stdin });
    assert.equal(r.exitCode, 0, `${String(r.error)} ${r.stderr}`);
    assert.deepEqual(JSON.parse(r.stdout), { sha256: sha256(stdin), bytes: stdin.length, text: { sha256: sha256('end'), bytes: 3 } });
  });
});

describe('useful agents give the catalog output for the catalog input', () => {
  for (const a of USEFUL_AGENTS) {
    it(a.name, () => {
      assert.ok(a.expected.ok);
      assert.deepEqual(runJson(a.name, a.input, a.files), a.expected.output);
    });
  }
});

describe('text-stats (C)', () => {
  const cases: string[] = [
    '',
    'one',
    'a\n',
    '\n\n',
    '  spaced   out\t\ttabs\r\nCRLF\r\n',
    'Tie tie TIE b b c c d d e e f f',
    '"Quoted," (parens) ... — dashes — and… ellipses!',
    'naïve café ÉTÉ été 😀😀 \u{10FFFF}',
    'lone \ud800 high and \udc00 low surrogates',
    'control\u0001chars and "quotes" and back\\slashes\\',
    'x'.repeat(10_000) + ' ' + 'word '.repeat(2000),
  ];
  for (const text of cases) {
    it(`counts ${JSON.stringify(text.slice(0, 40))}`, () => {
      assert.deepEqual(runJson('text-stats', { text }), textStatsRef(text));
    });
  }

  it('matches the reference on 60 random texts', () => {
    const rand = rng(7);
    const alphabet = ['a', 'B', 'c', ' ', ' ', '\n', '\t', '.', ',', '"', '\\', 'é', '😀', 'the', 'The', "it's", '—', '\u0000'];
    for (let n = 0; n < 60; n++) {
      const len = Math.floor(rand() * 200);
      let text = '';
      for (let i = 0; i < len; i++) text += alphabet[Math.floor(rand() * alphabet.length)];
      assert.deepEqual(runJson('text-stats', { text }), textStatsRef(text), JSON.stringify(text));
    }
  });

  it('reads the other keys of the object and escapes like JSON.stringify writes them', () => {
    const input = { before: [1, { a: null, b: [true, false] }], text: 'Hi \u2028 there\u{1F600}', after: -1.5e-3 };
    assert.deepEqual(runJson('text-stats', input), textStatsRef(input.text));
    // hand-written JSON with every escape and whitespace the grammar allows
    const r = runAgent('text-stats', { stdin: ' {\n\t"x" : "y" ,\r"text":"a\\"b\\\\c\\/d\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00"}\n ' });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), textStatsRef('a"b\\c/d\b\f\n\r\té😀'));
  });

  it('treats a missing text as empty and reports /input/*.txt files by name', () => {
    const files = { 'b.txt': 'Beta beta\n', 'a.txt': '', 'skip.md': 'not text stats' };
    assert.deepEqual(runJson('text-stats', {}, files), {
      ...textStatsRef(''),
      files: { 'a.txt': textStatsRef(''), 'b.txt': textStatsRef('Beta beta\n') },
    });
  });

  it('exits 2 with a message on bad input', () => {
    for (const stdin of ['', '[]', '{"text": 3}', '{"text": "unterminated}', '{"text": "x"} trailing', '{"a": tru}', '{"text":"\\x"}']) {
      const r = runAgent('text-stats', { stdin });
      assert.equal(r.exitCode, 2, stdin);
      assert.match(r.stderr, /^text-stats: /, stdin);
      assert.equal(r.stdout, '', stdin);
    }
  });
});

describe('json-transform (Rust)', () => {
  const data = [
    { id: 1, name: 'Ann', tags: ['x'], score: 3.25, ok: true },
    { id: 2, name: 'Bob', score: -2, nested: { deep: [1, 2, { z: null }] } },
    { id: 3, name: 'Émile', score: 1e21 },
    { id: 4, score: 'n/a' },
    { id: 5, name: 'Zoë "Z" \\ \n', score: 0.1 },
    { id: 6, name: '😀', score: null },
  ];
  const cases: { title: string; ops: Op[] }[] = [
    { title: 'no ops (round trip)', ops: [] },
    { title: 'pick', ops: [{ op: 'pick', keys: ['score', 'id', 'missing'] }] },
    { title: 'rename', ops: [{ op: 'rename', from: 'name', to: 'who' }] },
    { title: 'rename onto an existing key', ops: [{ op: 'rename', from: 'name', to: 'id' }] },
    { title: 'sort mixed values ascending', ops: [{ op: 'sort', by: 'score' }] },
    { title: 'sort descending keeps missing last', ops: [{ op: 'sort', by: 'name', desc: true }] },
    { title: 'filter', ops: [{ op: 'filter', key: 'ok', eq: true }] },
    { title: 'filter on an object value', ops: [{ op: 'filter', key: 'nested', eq: { deep: [1, 2, { z: null }] } }] },
    { title: 'limit', ops: [{ op: 'sort', by: 'id', desc: true }, { op: 'limit', n: 2 }] },
    { title: 'sum skips non-numbers', ops: [{ op: 'filter', key: 'id', eq: 1 }, { op: 'sum', key: 'score' }] },
    { title: 'sum of nothing', ops: [{ op: 'limit', n: 0 }, { op: 'sum', key: 'score' }] },
  ];
  for (const c of cases) {
    it(c.title, () => {
      const input = { data, ops: c.ops };
      assert.deepEqual(runJson('json-transform', input), transformRef(input));
    });
  }

  it('passes any JSON value through unchanged', () => {
    const values = [null, 0, -7, 1.5e-10, 123456789012345, 2 ** 60, 'str', [[], {}], { a: { b: { c: [1, 'two', false] } } }];
    for (const v of values) assert.deepEqual(runJson('json-transform', { data: v, ops: [] }), { result: v });
  });

  it('keeps the last value of a repeated key in its first place, as JSON.parse does', () => {
    const r = runAgent('json-transform', { stdin: '{"data":[{"a":1,"b":2,"a":3}],"ops":[]}' });
    assert.equal(r.stdout, '{"result":[{"a":3,"b":2}]}\n');
  });

  it('exits 2 with a message that names the problem', () => {
    const bad: [string, RegExp][] = [
      ['not json', /invalid JSON/],
      ['[1,2]', /must be a JSON object/],
      ['{"data":[1],"ops":[{"op":"pick","keys":["a"]}]}', /data\[0\] is not an object/],
      ['{"data":{},"ops":[{"op":"sort","by":"a"}]}', /must be an array of objects/],
      ['{"data":[],"ops":[{"op":"explode"}]}', /unknown op "explode"/],
      ['{"data":[],"ops":[{"op":"limit","n":-1}]}', /"n" must be a whole number/],
      ['{"data":[],"ops":"pick"}', /"ops" must be an array/],
      ['{"data":' + '['.repeat(300) + ']'.repeat(300) + '}', /nested too deeply/],
      ['{"data":1e999}', /number out of range/],
      ['{"data":[{"a":1e308},{"a":1e308}],"ops":[{"op":"sum","key":"a"}]}', /overflows/],
    ];
    for (const [stdin, message] of bad) {
      const r = runAgent('json-transform', { stdin });
      assert.equal(r.exitCode, 2, stdin);
      assert.match(r.stderr, message, stdin);
      assert.equal(r.stdout, '', stdin);
    }
  });
});

describe('digest (AssemblyScript)', () => {
  it('matches node:crypto at every padding boundary and for non-ASCII text', () => {
    const texts = ['', 'abc', 'é😀', 'lone \ud800 surrogate', '\u0000\u001f"\\'];
    for (let n = 40; n <= 130; n++) texts.push('a'.repeat(n));
    texts.push('long text '.repeat(20_000));
    for (const text of texts) assert.deepEqual(runJson('digest', { text }), digestRef({ text }));
  });

  it('hashes the raw stdin bytes, whitespace included, and leaves out text when absent', () => {
    const stdin = ' { "n" : [1, 2, {"text": "nested, not top-level"}] }\n';
    const r = runAgent('digest', { stdin });
    assert.equal(r.exitCode, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { sha256: sha256(stdin), bytes: Buffer.byteLength(stdin) });
  });

  it('exits 2 on input that is not a JSON object', () => {
    for (const stdin of ['', '"text"', '{"text": 1}', '{"text": "x",}']) {
      const r = runAgent('digest', { stdin });
      assert.equal(r.exitCode, 2, stdin);
      assert.match(r.stderr, /^digest: /);
    }
  });
});

describe('trivial (WAT)', () => {
  it('drains a large stdin and answers {"ok":true}', () => {
    const r = runAgent('trivial', { stdin: 'x'.repeat(100_000) });
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, '{"ok":true}\n');
    assert.equal(r.stderr, '');
  });

  it('instantiates and runs in well under 5 ms once compiled (wide margin for a loaded machine)', (t) => {
    const runs = 200;
    const t0 = performance.now();
    for (let i = 0; i < runs; i++) runAgent('trivial', { stdin: '{}' });
    const perRun = (performance.now() - t0) / runs;
    t.diagnostic(`trivial: ${perRun.toFixed(3)} ms per in-thread run (mean of ${runs})`);
    assert.ok(perRun < 5, `${perRun.toFixed(3)} ms per run`);
  });
});

// ----------------------------------------------------------- hostile agents

describe('hostile agents are hostile', () => {
  it('the catalog lists every hostile code once per agent', () => {
    assert.deepEqual(
      HOSTILE_AGENTS.map((a) => (a.expected.ok ? 'ok' : a.expected.errorCode)).sort(),
      [
        'AGENT_EXIT_NONZERO',
        'AGENT_FUEL_EXHAUSTED',
        'AGENT_MEMORY_LIMIT',
        'AGENT_OUTPUT_LIMIT',
        'AGENT_TIMEOUT',
        'AGENT_TRAP',
        'WASM_FORBIDDEN_IMPORT',
        'WASM_MISSING_EXPORT',
      ],
    );
  });

  it('loop-forever imports nothing and burns any amount of fuel', () => {
    const bytes = readAgent('loop-forever');
    assert.deepEqual(WebAssembly.Module.imports(new WebAssembly.Module(bytes)), []);
    const mod = compile(instrumentFuel(bytes));
    for (const fuel of [1_000n, 1_000_000n]) {
      let global: WebAssembly.Global | undefined;
      const r = run(mod, 'loop-forever', {
        before: (inst) => {
          global = inst.exports[FUEL_EXPORT] as WebAssembly.Global;
          global.value = fuel;
        },
      });
      assert.ok(r.error instanceof WebAssembly.RuntimeError, String(r.error));
      assert.ok((global!.value as bigint) < 0n, 'the fuel ran out');
    }
  });

  it('memory-bomb grows to the cap, touching memory, then traps after a refused grow', () => {
    const capPages = 64;
    const mod = compile(instrumentFuel(capMemory(readAgent('memory-bomb'), capPages)));
    const r = run(mod, 'memory-bomb', { before: (inst) => ((inst.exports[FUEL_EXPORT] as WebAssembly.Global).value = 10_000_000n) });
    assert.ok(r.error instanceof WebAssembly.RuntimeError, String(r.error));
    const memory = r.instance.exports.memory as WebAssembly.Memory;
    assert.equal(memory.buffer.byteLength, capPages * 65536);
    assert.equal((r.instance.exports[GROW_EXPORT] as WebAssembly.Global).value, -1);
    const words = new Int32Array(memory.buffer);
    assert.equal(words[((capPages - 1) * 65536) / 4], capPages - 1, 'the last page was written');
  });

  it('output-flood keeps writing past any stdout cap', () => {
    const cap = 1 << 20;
    const r = runAgent('output-flood', { stdoutCap: cap });
    assert.ok(r.error instanceof OutputCapReached);
    assert.ok(r.stdout.length > cap);
    assert.match(r.stdout.slice(0, 4096), /^x{4095}\n$/);
  });

  it('trap writes to stderr, then divides by zero', () => {
    const r = runAgent('trap');
    assert.ok(r.error instanceof WebAssembly.RuntimeError);
    assert.match((r.error as Error).message, /divide by zero/);
    assert.match(r.stderr, /dividing by zero/);
  });

  it('exit-nonzero explains itself on stderr and exits 3', () => {
    const r = runAgent('exit-nonzero');
    const spec = findAgent('exit-nonzero')!.expected;
    assert.ok(!spec.ok);
    assert.equal(r.exitCode, spec.exitCode);
    assert.ok(r.stderr.includes(spec.stderrIncludes!), r.stderr);
  });

  it('sleep-poll asks poll_oneoff for a 10 s relative monotonic sleep', () => {
    const seen: { clock: number; timeoutNs: bigint; tag: number; flags: number; subscriptions: number }[] = [];
    let memory: WebAssembly.Memory | undefined;
    const r = runAgent('sleep-poll', {
      before: (inst) => void (memory = inst.exports.memory as WebAssembly.Memory),
      // Observes the request instead of busy-waiting 10 s as the shim would.
      override: {
        poll_oneoff: (inPtr: number, _out: number, n: number) => {
          const v = new DataView(memory!.buffer);
          seen.push({ tag: v.getUint8(inPtr + 8), clock: v.getUint32(inPtr + 16, true), timeoutNs: v.getBigUint64(inPtr + 24, true), flags: v.getUint16(inPtr + 40, true), subscriptions: n });
          return 0;
        },
      },
    });
    assert.deepEqual(seen, [{ tag: 0, clock: 1, timeoutNs: 10_000_000_000n, flags: 0, subscriptions: 1 }]);
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, '{"ok":true}\n');
  });

  it('bad-import imports env.fetch', () => {
    const imports = WebAssembly.Module.imports(new WebAssembly.Module(readAgent('bad-import')));
    assert.ok(imports.some((i) => i.module === 'env' && i.name === 'fetch' && i.kind === 'function'));
  });

  it('no-start exports memory but no _start', () => {
    const names = WebAssembly.Module.exports(new WebAssembly.Module(readAgent('no-start'))).map((e) => e.name);
    assert.ok(names.includes('memory') && names.includes('_initialize') && !names.includes('_start'));
  });
});

// -------------------------------------------------------------------- build

const missingToolchain = ['clang-19', 'wasm-ld-19', 'rust-lld'].find((t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0) ??
  (existsSync('/usr/bin/rustc') ? undefined : '/usr/bin/rustc');

describe('agents/build.sh', () => {
  it('--check rebuilds every agent byte for byte', { skip: missingToolchain && `no ${missingToolchain}: apt-get install clang-19 lld-19 wasi-libc libclang-rt-19-dev-wasm32 rustc libstd-rust-dev-wasm32 lld-14` }, () => {
    const r = spawnSync('bash', ['agents/build.sh', '--check'], { cwd: ROOT, encoding: 'utf8', timeout: 600_000 });
    assert.equal(r.status, 0, r.stderr + r.stdout);
    assert.match(r.stdout, new RegExp(`all ${AGENTS.length} agents match`));
  });
});
