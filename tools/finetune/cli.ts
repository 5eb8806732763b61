/**
 * `npm run finetune -- --model DIR --data FILE.jsonl --out ADAPTER_DIR [options]` (or `--demo`):
 * LoRA fine-tuning on WebGPU. Progress goes to stderr (a redrawn bar on a terminal, plain lines
 * otherwise), the final JSON summary to stdout. A coded error prints `CODE: message` on stderr
 * and exits with 2; anything unexpected exits with 1.
 */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gpuEnv } from '../../scripts/env';
import { AppError } from '../../shared';
import { writeDemo } from './demo';
import { finetune } from './finetune';
import { parseFinetuneArgs, USAGE } from './options';
import { ProgressBar } from './progress';

async function main(): Promise<void> {
  // SwiftShader's Vulkan driver when no other is configured (read when the WebGPU instance is created).
  Object.assign(process.env, gpuEnv());
  const { help, demo, options } = parseFinetuneArgs(process.argv.slice(2));
  if (help) {
    process.stdout.write(USAGE);
    return;
  }
  const bar = new ProgressBar(process.stderr);
  if (demo) {
    const dir = await mkdtemp(join(tmpdir(), 'finetune-demo-'));
    const files = await writeDemo(dir);
    options.model ||= files.model;
    options.data ||= files.data;
    options.out ||= join(dir, 'adapter');
    bar.note(`demo: tiny model and ${options.data} in ${dir}`);
  }
  const summary = await finetune(options, { onProgress: (u) => bar.update(u), onNote: (t) => bar.note(t) });
  bar.done();
  process.stdout.write(`${JSON.stringify(summary)}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    if (process.stderr.isTTY) process.stderr.write('\n');
    if (err instanceof AppError) {
      process.stderr.write(`${err.code}: ${err.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`INTERNAL: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
