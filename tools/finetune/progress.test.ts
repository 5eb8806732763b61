import assert from 'node:assert/strict';
import { it } from 'node:test';
import { formatDuration, formatProgress, ProgressBar, type ProgressUpdate } from './progress';

const u = (step: number, extra: Partial<ProgressUpdate> = {}): ProgressUpdate => ({ step, total: 100, loss: 2.5, tokensPerSec: 812.4, elapsedSec: step * 0.5, ...extra });

it('formats step/total, bar, loss, eval loss, tokens/s and ETA', () => {
  assert.equal(formatProgress(u(50, { evalLoss: 3 }), 10), 'step  50/100  [#####.....]  loss 2.5000  eval 3.0000  812 tok/s  ETA 00:25');
  assert.equal(formatProgress(u(0), 0), 'step   0/100  loss 2.5000  812 tok/s  ETA --:--');
  assert.equal(formatDuration(3725), '1:02:05');
});

it('redraws one line on a terminal, writes sparse plain lines otherwise', () => {
  const tty: string[] = [];
  const bar = new ProgressBar({ isTTY: true, columns: 120, write: (t) => tty.push(t) });
  for (let s = 1; s <= 100; s++) bar.update(u(s));
  bar.note('saved');
  bar.done();
  assert.equal(tty.length, 101);
  assert.ok(tty[0]!.startsWith('\r\x1b[2Kstep   1/100  ['));
  assert.equal(tty[100], '\r\x1b[2Ksaved\n');

  const plain: string[] = [];
  const log = new ProgressBar({ isTTY: false, write: (t) => plain.push(t) });
  for (let s = 1; s <= 100; s++) log.update(u(s, s === 37 ? { evalLoss: 2.9, evaluated: true } : {}));
  assert.ok(plain.length > 10 && plain.length <= 45, `${plain.length} lines`);
  assert.ok(plain.every((l) => l.endsWith('\n') && !l.includes('\r')));
  assert.ok(plain.some((l) => l.startsWith('step  37/100') && l.includes('eval 2.9000')));
  assert.ok(plain[plain.length - 1]!.startsWith('step 100/100'));
});
