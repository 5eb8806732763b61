/**
 * The training data format, checked: JSON lines of {"messages":[{"role","content"},…]}. Pure
 * TypeScript with no tokenizer, DOM or Node import, so the coordinator can check an upload with
 * the same code (POST /v1/datasets) that a node trains from.
 */
import { AppError } from '../../shared';
import type { ChatMessage, ChatRole } from '../model';

const ROLES = ['system', 'user', 'assistant'] as const satisfies readonly ChatRole[];

export interface Conversation {
  messages: ChatMessage[];
  /** 1-based line number in the source text. */
  line: number;
}

function invalidLine(line: number, why: string): AppError {
  return new AppError('DATASET_INVALID', `Dataset line ${line}: ${why}. Each line must be {"messages":[{"role":…,"content":…},…]}.`, {
    line,
    reason: why,
  });
}

/** Parses JSON lines; blank lines are skipped, anything else that is not a conversation is DATASET_INVALID with its line. */
export function parseConversations(text: string): Conversation[] {
  const out: Conversation[] = [];
  const lines = text.split('\n');
  for (const [i, rawLine] of lines.entries()) {
    const line = i + 1;
    const src = rawLine.trim();
    if (!src) continue;
    let value: unknown;
    try {
      value = JSON.parse(src);
    } catch (err) {
      throw invalidLine(line, `not JSON (${(err as Error).message})`);
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalidLine(line, 'not a JSON object');
    const msgs = (value as { messages?: unknown }).messages;
    if (!Array.isArray(msgs) || msgs.length === 0) throw invalidLine(line, '"messages" is missing or empty');
    const messages: ChatMessage[] = [];
    for (const [j, m] of msgs.entries()) {
      if (typeof m !== 'object' || m === null) throw invalidLine(line, `message ${j} is not an object`);
      const { role, content } = m as { role?: unknown; content?: unknown };
      if (typeof role !== 'string' || !(ROLES as readonly string[]).includes(role)) {
        throw invalidLine(line, `message ${j} has role ${JSON.stringify(role)}; use system, user or assistant`);
      }
      if (typeof content !== 'string') throw invalidLine(line, `message ${j} has no string content`);
      messages.push({ role: role as ChatRole, content });
    }
    if (!messages.some((m) => m.role === 'assistant')) throw invalidLine(line, 'no assistant message to learn from');
    out.push({ messages, line });
  }
  if (!out.length) throw new AppError('DATASET_INVALID', 'The dataset holds no conversation (every line is blank).', { lines: lines.length });
  return out;
}
