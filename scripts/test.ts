/**
 * The test command: every `*.test.ts` under the project's folders, through
 * node's own test runner (so CI reads its closing summary), with the
 * environment that WebGPU-in-Node needs. Pass file paths or folders to narrow it.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { gpuEnv } from './env';

const ROOT = join(import.meta.dirname, '..');
const FOLDERS = ['shared', 'server', 'worker', 'web', 'tools', 'agents', 'deploy', 'e2e'];

function collect(path: string, out: string[]): void {
  const st = statSync(path);
  if (st.isFile()) {
    if (path.endsWith('.test.ts')) out.push(relative(ROOT, path));
    return;
  }
  for (const name of readdirSync(path)) {
    if (name === 'node_modules' || name.startsWith('.')) continue;
    collect(join(path, name), out);
  }
}

const args = process.argv.slice(2);
const files: string[] = [];
for (const target of args.length ? args : FOLDERS) {
  const p = join(ROOT, target);
  try {
    collect(p, files);
  } catch {
    if (args.length) throw new Error(`No such test path: ${target}`);
  }
}
files.sort();
mkdirSync(join(ROOT, '.cache'), { recursive: true });

const res = spawnSync(
  process.execPath,
  ['--import', 'tsx', '--test', '--test-reporter=spec', '--test-concurrency=2', ...files],
  { cwd: ROOT, stdio: 'inherit', env: { ...process.env, ...gpuEnv() } },
);
process.exit(res.status ?? 1);
