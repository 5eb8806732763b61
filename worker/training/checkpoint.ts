/**
 * A training checkpoint as bytes, so that a run can go on from it on another node (a `train` task whose node
 * vanished): safetensors (F32) with each adapted projection's A, B and AdamW moments under
 * `<loraKey>.{a,b,am,av,bm,bv}`, and in the metadata the step, the dropout stream's position, the losses so far and
 * `run`: a digest of what makes the run this run (model fingerprint, LoRA settings, seed, learning rate, steps,
 * batching and the dataset's text). A checkpoint of another run, or whose bytes are broken, is
 * TRAINING_CHECKPOINT_INVALID.
 */
import { AppError } from '../../shared';
import type { LoraParamState } from '../engine';
import { parseSafetensors, tensorAsFloat32, writeSafetensors, type TensorToWrite } from '../model';
import type { TrainingResume } from './loop';

const FORMAT = 'exec-node-lora-checkpoint/1';
const FIELDS = ['a', 'b', 'am', 'av', 'bm', 'bv'] as const;

/** What makes a run this run: a checkpoint resumes only the run it was taken of. */
export interface CheckpointRun {
  modelFingerprint: string;
  lora: unknown;
  seed: number;
  lr: number;
  steps: number;
  gradAccumulation: number;
  batchSize: number;
  seqLen: number;
  evalFraction: number;
  /** The dataset's JSON lines as the run read them. */
  jsonl: string;
}

/** SHA-256 (hex) of the run's identity: the checkpoint says which run it belongs to. */
export async function runDigest(run: CheckpointRun): Promise<string> {
  const { jsonl, ...rest } = run;
  const enc = new TextEncoder();
  const dataDigest = await crypto.subtle.digest('SHA-256', enc.encode(jsonl));
  const text = JSON.stringify(rest) + '\n' + hex(new Uint8Array(dataDigest));
  return hex(new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(text))));
}

function hex(b: Uint8Array): string {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export function encodeCheckpoint(resume: TrainingResume, run: string): Uint8Array {
  const tensors: TensorToWrite[] = [];
  for (const [key, p] of resume.state.params) {
    for (const f of FIELDS) tensors.push({ name: `${key}.${f}`, dtype: 'F32', shape: [p[f].length], data: p[f] });
  }
  return writeSafetensors(tensors, {
    format: FORMAT,
    run,
    step: String(resume.step),
    optimizer_step: String(resume.state.step),
    dropout_calls: String(resume.state.dropoutCalls),
    losses: JSON.stringify({ stepLosses: resume.stepLosses, evalLosses: resume.evalLosses, trainLossBefore: resume.trainLossBefore, evalLossBefore: resume.evalLossBefore, evalLoss: resume.evalLoss }),
  });
}

/** The checkpoint's state, when it is one of run `run`; TRAINING_CHECKPOINT_INVALID otherwise. */
export function decodeCheckpoint(bytes: Uint8Array, run: string): TrainingResume {
  const bad = (why: string): never => {
    throw new AppError('TRAINING_CHECKPOINT_INVALID', `The training checkpoint cannot be resumed: ${why}.`);
  };
  let file;
  try {
    file = parseSafetensors(bytes);
  } catch (err) {
    return bad(err instanceof Error ? err.message : String(err));
  }
  const meta = file.metadata;
  if (meta.format !== FORMAT) bad(`it is not a checkpoint of this format (${String(meta.format).slice(0, 60)})`);
  if (meta.run !== run) bad('it was taken of another run (model, settings, seed or dataset differ)');
  const int = (k: string): number => {
    const v = Number(meta[k]);
    if (!Number.isSafeInteger(v) || v < 0) bad(`${k} is not a whole number`);
    return v;
  };
  let losses: Omit<TrainingResume, 'step' | 'state'>;
  try {
    losses = JSON.parse(meta.losses ?? '') as Omit<TrainingResume, 'step' | 'state'>;
  } catch {
    return bad('its losses are not JSON');
  }
  if (!Array.isArray(losses.stepLosses) || !losses.stepLosses.every((x) => typeof x === 'number') || !Array.isArray(losses.evalLosses)) bad('its losses are malformed');
  const params = new Map<string, LoraParamState>();
  for (const name of file.tensors.keys()) {
    const dot = name.lastIndexOf('.');
    const key = name.slice(0, dot);
    const field = name.slice(dot + 1) as (typeof FIELDS)[number];
    if (!FIELDS.includes(field)) bad(`unknown tensor ${name.slice(0, 80)}`);
    let p = params.get(key);
    if (!p) params.set(key, (p = {} as LoraParamState));
    p[field] = tensorAsFloat32(file, name);
  }
  for (const [key, p] of params) for (const f of FIELDS) if (!p[f]) bad(`${key} has no ${f}`);
  return {
    step: int('step'),
    state: { step: int('optimizer_step'), dropoutCalls: int('dropout_calls'), params },
    stepLosses: losses.stepLosses,
    evalLosses: losses.evalLosses,
    trainLossBefore: losses.trainLossBefore ?? null,
    evalLossBefore: losses.evalLossBefore ?? null,
    evalLoss: losses.evalLoss ?? null,
  };
}
