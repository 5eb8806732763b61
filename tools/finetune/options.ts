/**
 * The fine-tuning run's settings and the command line that sets them. Every bad value is an
 * INVALID_ARGUMENT that names the option and what it accepts.
 */
import { parseArgs } from 'node:util';
import { AppError } from '../../shared';
import { LINEAR_MODULES, OVERFLOW_MODES, type LinearModule, type OverflowMode } from '../../worker/model';

export interface FinetuneOptions {
  /** Hugging Face model folder (config.json, model.safetensors, tokenizer files). */
  model: string;
  /** JSON lines of {"messages":[…]}. */
  data: string;
  /** Where adapter_config.json and adapter_model.safetensors go (created if missing). */
  out: string;
  rank: number;
  alpha: number;
  dropout: number;
  targets: LinearModule[];
  /** Optimizer steps. */
  steps: number;
  lr: number;
  weightDecay: number;
  /** Conversations per micro-batch. */
  batch: number;
  /** Tokens per row (longer conversations are cut). */
  seq: number;
  /** Micro-batches per optimizer step. */
  gradAccum: number;
  /** Share of conversations held out for the eval loss, in [0, 1). */
  evalFraction: number;
  /** Eval loss every this many steps (and at the end); 0 = only before and after. */
  evalEvery: number;
  /** Clip the global gradient norm (0 = off). */
  maxGradNorm: number;
  seed: number;
  /** Conversations longer than --seq: split by turns, truncated or dropped. */
  overflow: OverflowMode;
  /** A chat template instead of the model's: 'chatml', '@FILE' (Jinja in a file) or Jinja text; required when the model has none. */
  template?: string;
}

export const DEFAULT_OPTIONS: Omit<FinetuneOptions, 'model' | 'data' | 'out'> = {
  rank: 8,
  alpha: 16,
  dropout: 0,
  targets: ['q_proj', 'v_proj'],
  steps: 100,
  lr: 1e-3,
  weightDecay: 0,
  batch: 4,
  seq: 128,
  gradAccum: 1,
  evalFraction: 0.1,
  evalEvery: 10,
  maxGradNorm: 1,
  seed: 0,
  overflow: 'split',
};

export const USAGE = `Usage: npm run finetune -- --model DIR --data FILE.jsonl --out ADAPTER_DIR [options]
       npm run finetune -- --demo [--out ADAPTER_DIR] [options]

Fine-tunes a LoRA adapter on WebGPU and writes it in the PEFT layout.

  --model DIR            model folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)
  --data FILE            JSON lines: {"messages":[{"role":"user","content":…},{"role":"assistant","content":…}]}
  --out DIR              adapter folder to write (adapter_config.json, adapter_model.safetensors)
  --demo                 generate the tiny model and a small conversation set in a temp folder and train on them
                         (unless given: all seven targets, 40 steps, lr 1e-2, seq 48)
  --rank N               LoRA rank (default 8)
  --alpha X              LoRA alpha (default 16)
  --dropout P            LoRA dropout in [0, 1) (default 0)
  --targets a,b          modules to adapt (default q_proj,v_proj; any of ${LINEAR_MODULES.join(',')})
  --steps N              optimizer steps (default 100)
  --lr X                 learning rate (default 1e-3)
  --weight-decay X       AdamW weight decay (default 0)
  --batch N              conversations per micro-batch (default 4)
  --seq N                tokens per row (default 128)
  --grad-accum N         micro-batches per optimizer step (default 1)
  --eval-fraction F      share held out for the eval loss (default 0.1)
  --eval-every N         eval loss every N steps (default 10; 0 = before and after only)
  --max-grad-norm X      clip the gradient norm (default 1; 0 = off)
  --seed N               shuffling, split and initialisation seed (default 0)
  --overflow MODE        conversations longer than --seq: split (by turns, default), truncate or drop
  --template T           chat template when the model has none (or to replace its own): chatml, or @FILE with Jinja
  --help                 this text
`;

function bad(option: string, value: string, want: string): AppError {
  return new AppError('INVALID_ARGUMENT', `--${option} ${JSON.stringify(value)} is not valid: it must be ${want}. See --help.`, { option, value });
}

function int(option: string, value: string | undefined, fallback: number, min: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\s*-?\d+\s*$/.test(value) || !Number.isSafeInteger(n) || n < min) throw bad(option, value, `an integer ≥ ${min}`);
  return n;
}

function num(option: string, value: string | undefined, fallback: number, ok: (n: number) => boolean, want: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || !ok(n)) throw bad(option, value, want);
  return n;
}

function targets(value: string | undefined): LinearModule[] {
  if (value === undefined) return [...DEFAULT_OPTIONS.targets];
  const names = value.split(',').map((s) => s.trim()).filter(Boolean);
  const known = LINEAR_MODULES as readonly string[];
  const unknown = names.filter((n) => !known.includes(n));
  if (!names.length || unknown.length) throw bad('targets', value, `a comma-separated list of ${LINEAR_MODULES.join(', ')}`);
  return [...new Set(names)] as LinearModule[];
}

function overflow(value: string | undefined): OverflowMode {
  if (value === undefined) return DEFAULT_OPTIONS.overflow;
  if (!(OVERFLOW_MODES as readonly string[]).includes(value)) throw bad('overflow', value, OVERFLOW_MODES.join(', '));
  return value as OverflowMode;
}

/** What --demo changes unless the option is given: the tiny model learns its Q/A set in well under a minute. */
export const DEMO_DEFAULTS: Partial<Omit<FinetuneOptions, 'model' | 'data' | 'out'>> = {
  targets: [...LINEAR_MODULES],
  steps: 40,
  lr: 1e-2,
  seq: 48,
  evalEvery: 10,
};

export interface ParsedCommand {
  help: boolean;
  demo: boolean;
  /** Options given on the command line (long names, e.g. 'grad-accum'). */
  given: ReadonlySet<string>;
  /** model/data are '' with --demo (the demo fills them in); out is '' when not given. */
  options: FinetuneOptions;
}

/** Parses the finetune command line (without the node and script arguments). */
export function parseFinetuneArgs(argv: readonly string[]): ParsedCommand {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...argv],
      strict: true,
      allowPositionals: false,
      options: {
        model: { type: 'string' },
        data: { type: 'string' },
        out: { type: 'string' },
        demo: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
        rank: { type: 'string' },
        alpha: { type: 'string' },
        dropout: { type: 'string' },
        targets: { type: 'string' },
        steps: { type: 'string' },
        lr: { type: 'string' },
        'weight-decay': { type: 'string' },
        batch: { type: 'string' },
        seq: { type: 'string' },
        'grad-accum': { type: 'string' },
        'eval-fraction': { type: 'string' },
        'eval-every': { type: 'string' },
        'max-grad-norm': { type: 'string' },
        seed: { type: 'string' },
        overflow: { type: 'string' },
        template: { type: 'string' },
      },
    }));
  } catch (err) {
    throw new AppError('INVALID_ARGUMENT', `${(err as Error).message}. See --help.`);
  }
  const s = (k: string): string | undefined => values[k] as string | undefined;
  const help = values.help === true;
  const demo = values.demo === true;
  const d = DEFAULT_OPTIONS;
  const options: FinetuneOptions = {
    model: s('model') ?? '',
    data: s('data') ?? '',
    out: s('out') ?? '',
    rank: int('rank', s('rank'), d.rank, 1),
    alpha: num('alpha', s('alpha'), d.alpha, (n) => n > 0, 'a positive number'),
    dropout: num('dropout', s('dropout'), d.dropout, (n) => n >= 0 && n < 1, 'in [0, 1)'),
    targets: targets(s('targets')),
    steps: int('steps', s('steps'), d.steps, 1),
    lr: num('lr', s('lr'), d.lr, (n) => n > 0, 'a positive number'),
    weightDecay: num('weight-decay', s('weight-decay'), d.weightDecay, (n) => n >= 0, 'a number ≥ 0'),
    batch: int('batch', s('batch'), d.batch, 1),
    seq: int('seq', s('seq'), d.seq, 2),
    gradAccum: int('grad-accum', s('grad-accum'), d.gradAccum, 1),
    evalFraction: num('eval-fraction', s('eval-fraction'), d.evalFraction, (n) => n >= 0 && n < 1, 'in [0, 1)'),
    evalEvery: int('eval-every', s('eval-every'), d.evalEvery, 0),
    maxGradNorm: num('max-grad-norm', s('max-grad-norm'), d.maxGradNorm, (n) => n >= 0, 'a number ≥ 0'),
    seed: int('seed', s('seed'), d.seed, 0),
    overflow: overflow(s('overflow')),
  };
  const template = s('template');
  if (template !== undefined) {
    if (template !== 'chatml' && !template.startsWith('@')) throw bad('template', template, "chatml or @FILE (a file holding a Jinja chat template)");
    options.template = template;
  }
  if (!help && !demo) {
    const missing = (['model', 'data', 'out'] as const).filter((k) => !options[k]);
    if (missing.length) {
      throw new AppError('INVALID_ARGUMENT', `Missing ${missing.map((m) => `--${m}`).join(', ')}. Give --model, --data and --out, or --demo. See --help.`, { missing });
    }
  }
  const given = new Set(Object.keys(values).filter((k) => values[k] !== undefined));
  if (demo) {
    for (const [key, value] of Object.entries(DEMO_DEFAULTS)) {
      const flag = key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
      if (!given.has(flag)) Object.assign(options, { [key]: Array.isArray(value) ? [...value] : value });
    }
  }
  return { help, demo, given, options };
}
