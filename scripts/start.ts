/**
 * `npm start`: the whole thing on one machine. Builds the page if dist/ is
 * stale (nothing else), starts the coordinator (SQLite in ./data), registers
 * the sample agents, starts one headless node, and runs until Ctrl-C.
 *
 *   npm start -- [--port 8080] [--nodes 1] [--workers N] [--db FILE] [--models DIR]
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createCoordinator } from '../server';
import { launchNodes, type LaunchedNodes } from './nodes';
import { DIST, ROOT, ensurePageBuilt } from './page-build';
import { findAgent } from '../agents';
import { registerSampleAgents } from './register-agents';
import { makeTinyModel } from '../tools/tiny-model';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.PORT ?? '8080' },
      nodes: { type: 'string', default: '1' },
      workers: { type: 'string' },
      db: { type: 'string', default: join(ROOT, 'data', 'coordinator.db') },
      models: { type: 'string', default: join(ROOT, 'data', 'models') },
    },
  });
  const port = Number(values.port);
  const nodeCount = Number(values.nodes);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('--port must be 0..65535.');
  if (!Number.isInteger(nodeCount) || nodeCount < 0 || nodeCount > 16) throw new Error('--nodes must be 0..16.');

  await ensurePageBuilt((l) => console.log(l));
  mkdirSync(join(values.db, '..'), { recursive: true });
  // The built-in tiny model (deterministic from its seed, so rewriting it changes nothing),
  // served to nodes from the models folder beside any real ones the user puts there.
  const tiny = await makeTinyModel({ seed: 1, dir: join(values.models, 'tiny-llama') });
  console.log(`Model tiny-llama: ${tiny.files.length} files in ${join(values.models, 'tiny-llama')}`);
  const coordinator = await createCoordinator({ dbPath: values.db, port, staticDir: DIST, modelsDir: values.models });
  let nodes: LaunchedNodes | null = null;
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    console.log(`\n${signal}: stopping the node and the coordinator…`);
    await nodes?.close();
    await coordinator.close();
    console.log('Stopped cleanly.');
    process.exit(0);
  };
  process.once('SIGINT', () => void stop('SIGINT'));
  process.once('SIGTERM', () => void stop('SIGTERM'));

  const url = coordinator.url.replace(/\/$/, '');
  const regs = await registerSampleAgents(url);
  const ok = regs.filter((r) => r.code === null);
  const refused = regs.filter((r) => r.code !== null);
  console.log(`Agents registered: ${ok.map((r) => r.name).join(', ') || 'none'}`);
  for (const r of refused) {
    const exp = findAgent(r.name)?.expected;
    const meant = exp && !exp.ok && exp.stage === 'register' && exp.errorCode === r.code;
    console.log(`Refused by the registry${meant ? ' (as it should be)' : ''}: ${r.name} ${r.code}${meant ? '' : ` — ${r.message}`}`);
  }

  if (nodeCount > 0) {
    nodes = await launchNodes({
      url,
      count: nodeCount,
      workers: values.workers ? Number(values.workers) : undefined,
      userDataRoot: join(ROOT, 'data', 'browser'),
    });
    for (const id of nodes.nodeIds) console.log(`Headless node ${id} connected.`);
  }
  const sample = ok.find((r) => r.name === 'text-stats') ?? ok[0];
  const body = sample?.name === 'text-stats'
    ? '{"kind":"agent","payload":{"agent":"text-stats","input":{"text":"hello browser world"}}}'
    : `{"kind":"agent","payload":{"agent":"${sample?.name ?? 'NAME'}","input":{}}}`;
  console.log(`
Coordinator and node page: ${url}/
Submit a task and wait for it:
  ID=$(curl -s -X POST ${url}/v1/tasks -H 'content-type: application/json' \\
    -d '${body}' | sed -E 's/.*"id":"([^"]+)".*/\\1/')
  curl -s "${url}/v1/tasks/$ID/wait?timeoutMs=10000"
Press Ctrl-C to stop.`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
