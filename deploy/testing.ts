/**
 * Test kit for deploy/*.test.ts: the coordinator as the real command line runs it (`server/main.ts` in a child
 * process, from the repository root as the image's WORKDIR), a free port, and the flags server/main.ts accepts.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..');

export interface RunningCoordinator {
  url: string;
  child: ChildProcess;
  /** Everything it printed so far. */
  output(): string;
  /** SIGTERM, then waits for the exit; its exit code. */
  stop(): Promise<number | null>;
}

/**
 * Starts `node --import tsx <script> ...args` in `cwd` and waits (bounded) for "coordinator listening on URL".
 * Rejects with its output when it exits first or does not come up within `timeoutMs`.
 */
export function startCoordinator(args: readonly string[], opts: { cwd?: string; script?: string; timeoutMs?: number } = {}): Promise<RunningCoordinator> {
  const child = spawn(process.execPath, ['--import', 'tsx', opts.script ?? 'server/main.ts', ...args], {
    cwd: opts.cwd ?? ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async (): Promise<number | null> => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    return exited;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`no "coordinator listening on" within ${opts.timeoutMs ?? 60_000} ms; output:\n${out}`));
    }, opts.timeoutMs ?? 60_000);
    const onData = (chunk: Buffer): void => {
      out += String(chunk);
      const m = /coordinator listening on (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1]!.replace(/\/$/, ''), child, output: () => out, stop });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server/main.ts exited (${code}) before listening; output:\n${out}`));
    });
  });
}

/** A port that was free a moment ago (for flags that must name the port before the process starts). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

/** The long flags a script's `parseArgs({ options: { … } })` declares, read from its source. */
export function declaredFlags(script: string): Map<string, 'string' | 'boolean'> {
  const src = readFileSync(join(ROOT, script), 'utf8');
  const block = /parseArgs\(\{\s*options:\s*\{([\s\S]*?)\n\s*\},?\n/.exec(src)?.[1];
  if (!block) throw new Error(`${script}: no parseArgs({ options: { … } }) found`);
  const flags = new Map<string, 'string' | 'boolean'>();
  for (const m of block.matchAll(/^\s*'?([a-z][a-z0-9-]*)'?:\s*\{\s*type:\s*'(string|boolean)'/gm)) flags.set(m[1]!, m[2] as 'string' | 'boolean');
  if (flags.size === 0) throw new Error(`${script}: parseArgs declares no options`);
  return flags;
}

/** `--name value` pairs and boolean `--name`s of an argument list, checked against the declared flags. */
export function parseFlags(args: readonly string[], declared: Map<string, 'string' | 'boolean'>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const m = /^--([a-z][a-z0-9-]*)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`argument ${JSON.stringify(a)} is not a --flag`);
    const type = declared.get(m[1]!);
    if (!type) throw new Error(`--${m[1]} is not a flag the script declares (${[...declared.keys()].join(', ')})`);
    let value = 'true';
    if (type === 'string') {
      value = m[2] ?? args[++i] ?? '';
      if (m[2] === undefined && (value === '' || value.startsWith('--'))) throw new Error(`--${m[1]} takes a value`);
    }
    out.set(m[1]!, [...(out.get(m[1]!) ?? []), value]);
  }
  return out;
}

/** Replaces each `--name value` of `args` named in `values` (a flag absent from args is appended). */
export function withFlags(args: readonly string[], values: Record<string, string>): string[] {
  const out = [...args];
  for (const [name, value] of Object.entries(values)) {
    const i = out.indexOf(`--${name}`);
    if (i >= 0) out[i + 1] = value;
    else out.push(`--${name}`, value);
  }
  return out;
}
