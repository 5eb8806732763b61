/**
 * The sample agents: what each is, where its module lies, and what running it
 * must give. The end-to-end tests and the benchmarks iterate over `AGENTS`.
 * Modules are built from source by `agents/build.sh` into `agents/dist/NAME.wasm`.
 *
 * Types and data only (no I/O), so the page can import it too; `readAgent`
 * (Node) is in `./read`.
 */
import type { AgentLimits, ErrorCode } from '../shared';

export type AgentLanguage = 'c' | 'rust' | 'assemblyscript' | 'wat';

/** The codes a hostile agent is built to provoke. */
export type HostileErrorCode = Extract<
  ErrorCode,
  | 'AGENT_TIMEOUT'
  | 'AGENT_FUEL_EXHAUSTED'
  | 'AGENT_MEMORY_LIMIT'
  | 'AGENT_OUTPUT_LIMIT'
  | 'AGENT_TRAP'
  | 'AGENT_EXIT_NONZERO'
  | 'WASM_FORBIDDEN_IMPORT'
  | 'WASM_MISSING_EXPORT'
>;

export type AgentExpectation =
  /** Exit code 0 and exactly this JSON on stdout (compare parsed, with deepStrictEqual). */
  | { ok: true; output: unknown }
  | {
      ok: false;
      errorCode: HostileErrorCode;
      /** `register`: the registry refuses the module; `run`: the runtime stops it. */
      stage: 'register' | 'run';
      /** The exit code the agent asks for, where it exits on its own. */
      exitCode?: number;
      /** Text the agent writes to stderr before it fails. */
      stderrIncludes?: string;
    };

export interface AgentSpec {
  name: string;
  language: AgentLanguage;
  /** Source file, relative to the project root. */
  source: string;
  /** Built module, relative to the project root. */
  file: string;
  hostile: boolean;
  description: string;
  /** The task's `input`: written to stdin as `JSON.stringify(input)`. */
  input: unknown;
  /** Files for the preopened `/input` directory (name → UTF-8 text). */
  files?: Record<string, string>;
  /** Limits, over DEFAULT_AGENT_LIMITS, that make the expected outcome arrive quickly. */
  limits?: Partial<AgentLimits>;
  expected: AgentExpectation;
}

const dist = (name: string): string => `agents/dist/${name}.wasm`;

const TEXT =
  'The quick brown fox jumps over the lazy dog.\nThe dog sleeps; the fox runs \u2014 "quickly"!\n';

export const AGENTS: readonly AgentSpec[] = [
  {
    name: 'text-stats',
    language: 'c',
    source: 'agents/text-stats/text_stats.c',
    file: dist('text-stats'),
    hostile: false,
    description:
      'Characters (code points), words (non-space runs), lines and the five most frequent words of `text`, and of each /input/*.txt.',
    input: { text: TEXT },
    files: { 'notes.txt': 'To be, or not to be:\nthat is the question.' },
    expected: {
      ok: true,
      output: {
        chars: 87,
        words: 17,
        lines: 2,
        topWords: [
          ['the', 4],
          ['dog', 2],
          ['fox', 2],
          ['brown', 1],
          ['jumps', 1],
        ],
        files: {
          'notes.txt': {
            chars: 42,
            words: 10,
            lines: 2,
            topWords: [
              ['be', 2],
              ['to', 2],
              ['is', 1],
              ['not', 1],
              ['or', 1],
            ],
          },
        },
      },
    },
  },
  {
    name: 'json-transform',
    language: 'rust',
    source: 'agents/json-transform/main.rs',
    file: dist('json-transform'),
    hostile: false,
    description:
      'Applies ops (pick, rename, sort, filter, limit, sum) to an array of objects: {"data": [...], "ops": [...]} → {"result": ...}.',
    input: {
      data: [
        { id: 3, name: 'Cy', team: 'red', score: 7.5 },
        { id: 1, name: 'Ann', team: 'blue', score: 9 },
        { id: 2, name: 'Bo', team: 'red', score: 4 },
        { id: 4, name: 'Di', team: 'red' },
      ],
      ops: [
        { op: 'filter', key: 'team', eq: 'red' },
        { op: 'sort', by: 'score', desc: true },
        { op: 'rename', from: 'name', to: 'who' },
        { op: 'pick', keys: ['who', 'score'] },
      ],
    },
    expected: {
      ok: true,
      output: { result: [{ who: 'Cy', score: 7.5 }, { who: 'Bo', score: 4 }, { who: 'Di' }] },
    },
  },
  {
    name: 'digest',
    language: 'assemblyscript',
    source: 'agents/digest/assembly/index.ts',
    file: dist('digest'),
    hostile: false,
    description: 'SHA-256 of the raw stdin bytes and of the UTF-8 bytes of `text`: {"sha256", "bytes", "text": {...}}.',
    input: { text: 'hello, world \u00e9\ud83d\ude00' },
    expected: {
      ok: true,
      output: {
        sha256: '7f0f27a617be3856310f73d677106f20eeee63be47a6192e485581726e5a6200',
        bytes: 30,
        text: { sha256: '2e85cf0bde5767ea5e69cc2b09c58d5e7df7645a81ab0af19a2c980e62d32d78', bytes: 19 },
      },
    },
  },
  {
    name: 'trivial',
    language: 'wat',
    source: 'agents/wat/trivial.wat',
    file: dist('trivial'),
    hostile: false,
    description: 'Drains stdin and writes {"ok":true}: the smallest useful agent, for benchmarks.',
    input: { ping: 1 },
    expected: { ok: true, output: { ok: true } },
  },

  // ------------------------------------------------------------------ hostile
  {
    name: 'loop-forever',
    language: 'wat',
    source: 'agents/wat/loop-forever.wat',
    file: dist('loop-forever'),
    hostile: true,
    description: 'An endless loop with no calls: only fuel (or the deadline) stops it.',
    input: {},
    limits: { fuel: 1_000_000, timeoutMs: 5_000 },
    expected: { ok: false, errorCode: 'AGENT_FUEL_EXHAUSTED', stage: 'run' },
  },
  {
    name: 'memory-bomb',
    language: 'wat',
    source: 'agents/wat/memory-bomb.wat',
    file: dist('memory-bomb'),
    hostile: true,
    description: 'Grows memory a page at a time, touching every 4 KiB, and traps when memory.grow fails.',
    input: {},
    limits: { memoryMB: 16 },
    expected: { ok: false, errorCode: 'AGENT_MEMORY_LIMIT', stage: 'run' },
  },
  {
    name: 'output-flood',
    language: 'wat',
    source: 'agents/wat/output-flood.wat',
    file: dist('output-flood'),
    hostile: true,
    description: 'Writes 4 KiB lines to stdout forever.',
    input: {},
    limits: { maxStdoutBytes: 64 << 10 },
    expected: { ok: false, errorCode: 'AGENT_OUTPUT_LIMIT', stage: 'run' },
  },
  {
    name: 'trap',
    language: 'wat',
    source: 'agents/wat/trap.wat',
    file: dist('trap'),
    hostile: true,
    description: 'Writes a line to stderr, then divides an integer by zero.',
    input: {},
    expected: { ok: false, errorCode: 'AGENT_TRAP', stage: 'run', stderrIncludes: 'dividing by zero' },
  },
  {
    name: 'exit-nonzero',
    language: 'wat',
    source: 'agents/wat/exit-nonzero.wat',
    file: dist('exit-nonzero'),
    hostile: true,
    description: 'Writes a message to stderr and calls proc_exit(3).',
    input: {},
    expected: {
      ok: false,
      errorCode: 'AGENT_EXIT_NONZERO',
      stage: 'run',
      exitCode: 3,
      stderrIncludes: 'giving up with code 3',
    },
  },
  {
    name: 'sleep-poll',
    language: 'wat',
    source: 'agents/wat/sleep-poll.wat',
    file: dist('sleep-poll'),
    hostile: true,
    description: 'Sleeps 10 s in poll_oneoff (the shim busy-waits), then writes {"ok":true}: only the deadline stops it.',
    input: {},
    limits: { timeoutMs: 500 },
    expected: { ok: false, errorCode: 'AGENT_TIMEOUT', stage: 'run' },
  },
  {
    name: 'bad-import',
    language: 'wat',
    source: 'agents/wat/bad-import.wat',
    file: dist('bad-import'),
    hostile: true,
    description: 'Imports env.fetch besides WASI: the registry must refuse it.',
    input: {},
    expected: { ok: false, errorCode: 'WASM_FORBIDDEN_IMPORT', stage: 'register' },
  },
  {
    name: 'no-start',
    language: 'wat',
    source: 'agents/wat/no-start.wat',
    file: dist('no-start'),
    hostile: true,
    description: 'A WASI reactor (exports _initialize, not _start): the registry must refuse it.',
    input: {},
    expected: { ok: false, errorCode: 'WASM_MISSING_EXPORT', stage: 'register' },
  },
];

/** The agent with this name, or undefined. */
export function findAgent(name: string): AgentSpec | undefined {
  return AGENTS.find((a) => a.name === name);
}

/** The agents that run to a result (for benchmarks and happy-path tests). */
export const USEFUL_AGENTS: readonly AgentSpec[] = AGENTS.filter((a) => !a.hostile);
export const HOSTILE_AGENTS: readonly AgentSpec[] = AGENTS.filter((a) => a.hostile);
