/**
 * The finetune command as a child process: a few steps on the generated tiny model write a PEFT
 * adapter that loads back against the same base; bad input ends with exit code 2 and `CODE: message`.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ADAPTER_CONFIG_FILE, ADAPTER_WEIGHTS_FILE, loadAdapter, loadModelFolder } from '../../worker/model';
import { makeTinyModel } from '../tiny-model';
import { qaJsonl } from './demo-data';
import type { FinetuneSummary } from './finetune';

const ROOT = join(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'tools', 'finetune', 'cli.ts');

let dir = '';
let model = '';
let data = '';

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'finetune-cli-'));
  model = join(dir, 'model');
  data = join(dir, 'data.jsonl');
  await makeTinyModel({ seed: 3, dir: model });
  await writeFile(data, qaJsonl());
});

after(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI; bounded by a kill after 50 s. */
function run(args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', CLI, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 50_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('npm run finetune', () => {
  it('trains a few steps on the tiny model, shows progress on stderr and writes an adapter that loads back', async () => {
    const out = join(dir, 'adapter');
    const r = await run(['--model', model, '--data', data, '--out', out, '--steps', '3', '--seq', '48', '--batch', '4', '--rank', '4', '--alpha', '8', '--targets', 'q_proj,v_proj,down_proj', '--eval-every', '2', '--seed', '5']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    const summary = JSON.parse(lines[lines.length - 1]!) as FinetuneSummary;
    assert.equal(summary.steps, 3);
    const d = summary.dataset;
    assert.equal(d.kept + d.split + d.truncated + d.dropped, summary.conversations);
    assert.equal(d.overflow, 'split');
    assert.deepEqual(summary.warnings, d.warnings);
    assert.equal(summary.adapterDir, out);
    assert.deepEqual(summary.adapter.targetModules, ['q_proj', 'v_proj', 'down_proj']);
    assert.ok(Number.isFinite(summary.trainLossAfter) && summary.evalLossAfter !== null && summary.tokensPerSec > 0);
    // Not a terminal: plain progress lines, with the eval loss once computed.
    assert.match(r.stderr, /step 1\/3 {2}loss \d+\.\d{4} {2}eval \d+\.\d{4} {2}\d+ tok\/s {2}ETA \d\d:\d\d/);
    assert.match(r.stderr, /step 3\/3 /);
    assert.doesNotMatch(r.stderr, /\r/);

    const base = await loadModelFolder((name) => readFile(join(model, name)));
    const adapter = loadAdapter(
      { configJson: await readFile(join(out, ADAPTER_CONFIG_FILE), 'utf8'), safetensors: await readFile(join(out, ADAPTER_WEIGHTS_FILE)) },
      base.config,
      base.fingerprint,
    );
    assert.equal(adapter.settings.r, 4);
    assert.equal(adapter.settings.alpha, 8);
    assert.equal(adapter.weights.size, base.config.numLayers * 3);
    const config = JSON.parse(await readFile(join(out, ADAPTER_CONFIG_FILE), 'utf8')) as Record<string, unknown>;
    assert.equal(config.peft_type, 'LORA');
    assert.deepEqual(config.target_modules, ['down_proj', 'q_proj', 'v_proj']);
    // Trained: some B is no longer zero.
    assert.ok([...adapter.weights.values()].some((p) => p.b.some((v) => v !== 0)));
  });

  const cases: { name: string; code: string; args: () => Promise<string[]> }[] = [
    { name: 'a missing model folder', code: 'MODEL_NOT_FOUND', args: async () => ['--model', join(dir, 'nope'), '--data', data, '--out', join(dir, 'o1')] },
    {
      name: 'a model folder without its tokenizer',
      code: 'MODEL_FILE_MISSING',
      args: async () => {
        const broken = join(dir, 'broken');
        await makeTinyModel({ seed: 3, dir: broken });
        await unlink(join(broken, 'tokenizer.json'));
        return ['--model', broken, '--data', data, '--out', join(dir, 'o2')];
      },
    },
    { name: 'a missing dataset', code: 'DATASET_NOT_FOUND', args: async () => ['--model', model, '--data', join(dir, 'none.jsonl'), '--out', join(dir, 'o3')] },
    {
      name: 'a dataset line that is not a conversation',
      code: 'DATASET_INVALID',
      args: async () => {
        const bad = join(dir, 'bad.jsonl');
        await writeFile(bad, `${qaJsonl().split('\n')[0]}\n{"messages":[{"role":"robot","content":"hi"}]}\n`);
        return ['--model', model, '--data', bad, '--out', join(dir, 'o4')];
      },
    },
    { name: 'an unknown target module', code: 'INVALID_ARGUMENT', args: async () => ['--model', model, '--data', data, '--out', join(dir, 'o5'), '--targets', 'q_proj,wq'] },
    { name: 'a LoRA rank above the smallest target dimension', code: 'LORA_SETTINGS_INVALID', args: async () => ['--model', model, '--data', data, '--out', join(dir, 'o7'), '--rank', '1000'] },
    {
      name: 'a model without a chat template and no --template',
      code: 'CHAT_TEMPLATE_MISSING',
      args: async () => {
        const bare = join(dir, 'no-template');
        await makeTinyModel({ seed: 3, dir: bare });
        const configPath = join(bare, 'tokenizer_config.json');
        const { chat_template: _t, ...rest } = JSON.parse(await readFile(configPath, 'utf8')) as Record<string, unknown>;
        await writeFile(configPath, JSON.stringify(rest));
        return ['--model', bare, '--data', data, '--out', join(dir, 'o8')];
      },
    },
    { name: 'an unknown --overflow', code: 'INVALID_ARGUMENT', args: async () => ['--model', model, '--data', data, '--out', join(dir, 'o9'), '--overflow', 'wrap'] },
    { name: 'a missing --out', code: 'INVALID_ARGUMENT', args: async () => ['--model', model, '--data', data] },
    { name: 'a non-numeric --steps', code: 'INVALID_ARGUMENT', args: async () => ['--model', model, '--data', data, '--out', join(dir, 'o6'), '--steps', 'ten'] },
  ];
  for (const c of cases) {
    it(`${c.name} → exit 2 with ${c.code}`, async () => {
      await mkdir(dir, { recursive: true });
      const r = await run(await c.args());
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, new RegExp(`^${c.code}: \\S`, 'm'));
      assert.equal(r.stdout, '');
    });
  }
});
