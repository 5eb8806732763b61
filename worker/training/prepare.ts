/**
 * JSON lines → what a training run consumes: parsed (line numbers in errors), split by conversation
 * (seeded), rendered with the model's chat template (or the one named), fitted to the sequence
 * length (split by turns, truncated or dropped), batched; with a report of what happened to every
 * conversation and warnings for what a user would not expect (conversations dropped or cut, an
 * empty held-out split).
 */
import { AppError } from '../../shared';
import {
  fitConversation,
  makeBatches,
  resolveChatTemplate,
  splitHeldOut,
  targetCount,
  tokenizeConversation,
  type Batch,
  type ChatTemplateChoice,
  type FitOutcome,
  type ModelTokenizer,
  type OverflowMode,
  type TokenizedExample,
  OVERFLOW_MODES,
} from '../model';
import { parseConversations, type Conversation } from './dataset';

export interface PrepareOptions {
  seed: number;
  /** Fraction of conversations held out for evaluation, in [0, 1). */
  heldOutFraction: number;
  seqLen: number;
  batchSize: number;
  /** Default: the tokenizer's pad id, else 0. */
  padId?: number;
  /** A template instead of the model's ('chatml' or Jinja); required when the model has none. */
  template?: ChatTemplateChoice;
  /** End-of-sequence ids, the one to append first (LoadedModel.eosTokenIds). Default: the tokenizer's EOS. */
  eosIds?: readonly number[];
  /** Conversations longer than seqLen + 1 tokens. Default 'split'. */
  overflow?: OverflowMode;
}

/** What became of the conversations; kept + split + truncated + dropped = conversations. */
export interface DatasetReport {
  conversations: number;
  kept: number;
  split: number;
  truncated: number;
  dropped: number;
  /** Line numbers of the dropped conversations (the first 20). */
  droppedLines: number[];
  overflow: OverflowMode;
  /** 'model' or what the run named. */
  template: 'model' | 'chatml' | 'custom';
  trainConversations: number;
  heldOutConversations: number;
  trainRows: number;
  heldOutRows: number;
  /** Tokens that carry loss in each split. */
  trainTargets: number;
  heldOutTargets: number;
  /** A held-out share was asked for but no held-out row has a target (no eval loss). */
  heldOutEmpty: boolean;
  warnings: string[];
}

export interface PreparedDataset {
  train: Batch[];
  heldOut: Batch[];
  report: DatasetReport;
}

function count(bs: readonly Batch[]): number {
  return bs.reduce((n, b) => n + b.lossMask.reduce((a, m) => a + m, 0), 0);
}

/** JSON lines → shuffled, split, templated, fitted, batched, and reported. */
export function prepareDataset(text: string, tok: ModelTokenizer, opts: PrepareOptions): PreparedDataset {
  const overflow = opts.overflow ?? 'split';
  if (!OVERFLOW_MODES.includes(overflow)) {
    throw new AppError('INVALID_ARGUMENT', `overflow ${JSON.stringify(overflow)} is not one of ${OVERFLOW_MODES.join(', ')}.`, { overflow });
  }
  const template = resolveChatTemplate(tok, opts.template);
  const tokenize = { template, ...(opts.eosIds ? { eosIds: opts.eosIds } : {}) };
  const conversations = parseConversations(text);
  const whole = new Map<Conversation, TokenizedExample>();
  let targets = 0;
  for (const c of conversations) {
    const ex = tokenizeConversation(tok, c.messages, tokenize);
    whole.set(c, ex);
    targets += targetCount(ex);
  }
  if (targets === 0) {
    throw new AppError('DATASET_NO_TARGETS', `No assistant token in any of the ${conversations.length} conversations once the chat template has rendered them; the template may drop assistant turns, or every assistant message is empty.`, {
      stage: 'template',
      conversations: conversations.length,
    });
  }
  const split = splitHeldOut(conversations, opts.heldOutFraction, opts.seed);
  const outcomes: Record<FitOutcome, number> = { kept: 0, split: 0, truncated: 0, dropped: 0 };
  const droppedLines: number[] = [];
  const fit = (cs: readonly Conversation[]): TokenizedExample[] =>
    cs.flatMap((c) => {
      const f = fitConversation(tok, c.messages, opts.seqLen, overflow, tokenize, whole.get(c));
      outcomes[f.outcome]++;
      if (f.outcome === 'dropped' && droppedLines.length < 20) droppedLines.push(c.line);
      return f.rows;
    });
  const batchOpts = { seqLen: opts.seqLen, batchSize: opts.batchSize, padId: opts.padId ?? tok.padId ?? 0 };
  const trainRows = fit(split.train);
  const heldOutRows = fit(split.heldOut);
  const train = makeBatches(trainRows, batchOpts);
  const heldOut = makeBatches(heldOutRows, batchOpts);
  const warnings: string[] = [];
  const n = conversations.length;
  if (outcomes.dropped) warnings.push(`${outcomes.dropped} of ${n} conversations dropped: no assistant token fits in ${opts.seqLen} tokens (lines ${droppedLines.join(', ')}${outcomes.dropped > droppedLines.length ? ', …' : ''}).`);
  if (outcomes.truncated) warnings.push(`${outcomes.truncated} of ${n} conversations truncated at ${opts.seqLen} tokens; raise the sequence length to train on all of them.`);
  const heldOutEmpty = opts.heldOutFraction > 0 && heldOutRows.length === 0;
  if (heldOutEmpty) {
    warnings.push(
      split.heldOut.length
        ? `The held-out split is empty: its ${split.heldOut.length} conversation(s) have no assistant token within ${opts.seqLen} tokens, so there is no eval loss.`
        : `The held-out split is empty: ${n} conversation(s) are too few to hold ${opts.heldOutFraction} out, so there is no eval loss.`,
    );
  }
  const report: DatasetReport = {
    conversations: n,
    ...outcomes,
    droppedLines,
    overflow,
    template: opts.template === undefined ? 'model' : opts.template === 'chatml' ? 'chatml' : 'custom',
    trainConversations: split.train.length,
    heldOutConversations: split.heldOut.length,
    trainRows: trainRows.length,
    heldOutRows: heldOutRows.length,
    trainTargets: count(train),
    heldOutTargets: count(heldOut),
    heldOutEmpty,
    warnings,
  };
  if (!train.length) {
    throw new AppError(
      'DATASET_NO_TARGETS',
      `No training conversation has an assistant token within the sequence length ${opts.seqLen} (${split.train.length} in the training split; ${outcomes.dropped} dropped). Raise the sequence length, use overflow 'split', or hold fewer out.`,
      { stage: 'sequence length', ...report },
    );
  }
  return { train, heldOut, report };
}
