/** Submitting and awaiting tasks over the coordinator's HTTP API, for the e2e tests (bounded waits). */
import assert from 'node:assert/strict';
import type { TaskRecord } from '../shared';

const ENDED = ['succeeded', 'failed', 'dead', 'cancelled'];

/** One batch submit; the ids in order. */
export async function postTasks(url: string, specs: unknown[]): Promise<string[]> {
  const res = await fetch(`${url}/v1/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ tasks: specs }) });
  const body = (await res.json()) as { ids?: string[] };
  assert.equal(res.status, 202, `submit answered ${res.status}: ${JSON.stringify(body).slice(0, 300)}`);
  return body.ids!;
}

/** The task's record once it ended; a task not ended after `polls` long polls of 30 s fails the test. */
export async function waitTask(url: string, id: string, polls = 4): Promise<TaskRecord> {
  for (let i = 0; i < polls; i++) {
    const rec = (await (await fetch(`${url}/v1/tasks/${id}/wait?timeoutMs=30000`)).json()) as TaskRecord;
    if (ENDED.includes(rec.state)) return rec;
  }
  throw new Error(`Task ${id} did not end within ${polls / 2} minutes.`);
}

/** Every task's ended record, `concurrency` long polls at a time. */
export async function waitAll(url: string, ids: string[], opts: { concurrency?: number; polls?: number } = {}): Promise<TaskRecord[]> {
  const out: TaskRecord[] = new Array(ids.length);
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < ids.length) {
      const i = next++;
      out[i] = await waitTask(url, ids[i]!, opts.polls);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency ?? 32 }, lane));
  return out;
}

/**
 * Reads a train task's event stream until its first checkpoint: that checkpoint's step and the last step the node
 * reported meanwhile (`loss` progress). Bounded by the stream (it ends with the task) and `maxReads` reads.
 */
export async function untilCheckpoint(url: string, id: string, maxReads = 100_000): Promise<{ checkpointStep: number; lastStep: number }> {
  const res = await fetch(`${url}/v1/tasks/${id}/events`);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let lastStep = 0;
  let checkpointStep = 0;
  try {
    for (let i = 0; i < maxReads && checkpointStep === 0; i++) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      for (let at = buf.indexOf('\n\n'); at >= 0; at = buf.indexOf('\n\n')) {
        const block = buf.slice(0, at);
        buf = buf.slice(at + 2);
        if (!block.startsWith('event: progress\n')) continue;
        const p = (JSON.parse(block.slice(block.indexOf('data: ') + 6)) as { progress: { kind: string; step: number } }).progress;
        if (p.kind === 'loss') lastStep = Math.max(lastStep, p.step);
        if (p.kind === 'checkpoint' && checkpointStep === 0) checkpointStep = p.step;
      }
    }
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  return { checkpointStep, lastStep };
}
