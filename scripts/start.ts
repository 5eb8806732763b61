/**
 * `npm start`: the whole thing on one machine. Builds the page if dist/ is
 * stale (nothing else), starts the coordinator (SQLite in ./data), registers
 * the sample agents, starts one headless node, and runs until Ctrl-C.
 *
 *   npm start -- [--port 8080] [--nodes 1] [--workers N] [--db FILE] [--models DIR]…
 *
 * The built-in models (tools/tiny-model's BUILTIN_MODELS) are generated into data/models (kept when
 * already up to date); each --models DIR (given any number of times) is served read-only after them.
 *
 * Bearer tokens live in auth.json beside the --db file (data/auth.json, mode 0600): written on the first
 * start with an admin token and a node join token, reused after. It prints the admin token and the page
 * link that carries the join token (`?token=`); its headless nodes get the join token the same way.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createCoordinator, ensureLocalTokens, journalFolder } from '../server';
import { launchNodes, type LaunchedNodes } from './nodes';
import { DIST, ROOT, ensurePageBuilt } from './page-build';
import { findAgent } from '../agents';
import { registerSampleAgents } from './register-agents';
import { makeBuiltinModels } from '../tools/tiny-model';
import { ModelStore } from '../server';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      port: { type: 'string', default: process.env.PORT ?? '8080' },
      nodes: { type: 'string', default: '1' },
      workers: { type: 'string' },
      db: { type: 'string', default: join(ROOT, 'data', 'coordinator.db') },
      models: { type: 'string', multiple: true, default: [] },
    },
  });
  const port = Number(values.port);
  const nodeCount = Number(values.nodes);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error('--port must be 0..65535.');
  if (!Number.isInteger(nodeCount) || nodeCount < 0 || nodeCount > 16) throw new Error('--nodes must be 0..16.');

  await ensurePageBuilt((l) => console.log(l));
  // Webhook secret, adapters, blobs and auth.json: beside the SQLite file, or in ./data with PostgreSQL.
  const dataDir = journalFolder(values.db) ?? join(ROOT, 'data');
  mkdirSync(dataDir, { recursive: true });
  // The built-in models, deterministic from their seeds, live in data/models (a folder already
  // up to date is left alone). The user's --models folders are only read, never written.
  const builtinDir = join(ROOT, 'data', 'models');
  for (const m of await makeBuiltinModels(builtinDir)) {
    const mb = (m.manifest.files.reduce((n, f) => n + f.size, 0) / 1e6).toFixed(1);
    console.log(`Model ${m.name}: ${mb} MB ${m.written ? 'written to' : 'up to date in'} ${m.dir}`);
  }
  const modelRoots = [builtinDir, ...values.models];
  const store = new ModelStore(modelRoots);
  for (const c of await store.collisions()) console.log(`Model ${c.name}: serving ${c.served}; ignoring ${c.shadowed.join(', ')} (an earlier folder has that name)`);
  const names = await store.list();
  console.log(`Models served: ${names.join(', ') || 'none'}`);
  const authPath = join(dataDir, 'auth.json');
  const tokens = ensureLocalTokens(authPath);
  console.log(`Tokens ${tokens.created ? 'written to' : 'read from'} ${authPath} (an admin token and a node join token)`);
  const coordinator = await createCoordinator({ dbPath: values.db, dataDir, port, staticDir: DIST, modelsDirs: modelRoots, auth: tokens.auth });
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
  const regs = await registerSampleAgents(url, undefined, tokens.admin);
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
      token: tokens.join,
    });
    for (const id of nodes.nodeIds) console.log(`Headless node ${id} connected.`);
  }
  const sample = ok.find((r) => r.name === 'text-stats') ?? ok[0];
  const body = sample?.name === 'text-stats'
    ? '{"kind":"agent","payload":{"agent":"text-stats","input":{"text":"hello browser world"}}}'
    : `{"kind":"agent","payload":{"agent":"${sample?.name ?? 'NAME'}","input":{}}}`;
  console.log(`
Coordinator: ${url}/
Node page (open it in a browser to add a node; the link carries the join token):
  ${url}/?token=${tokens.join}
Admin token (every route; data/auth.json holds it, add tokens with fewer roles there, docs/api.md "Authentication"):
  TOKEN=${tokens.admin}
Operator page (nodes, queue, throughput and latency charts, errors; drain and cancel with this token):
  ${url}/ops.html?token=${tokens.admin}
API reference (OpenAPI): ${url}/docs and ${url}/openapi.json; Prometheus metrics: ${url}/metrics (role refiner)
Submit a task and wait for it:
  ID=$(curl -s -X POST ${url}/v1/tasks -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
    -d '${body}' | sed -E 's/.*"id":"([^"]+)".*/\\1/')
  curl -s "${url}/v1/tasks/$ID/wait?timeoutMs=10000" -H "authorization: Bearer $TOKEN"
Generate text (any OpenAI client works too, base URL ${url}/v1, api key $TOKEN):
  curl -s ${url}/v1/chat/completions -H "authorization: Bearer $TOKEN" -H 'content-type: application/json' \\
    -d '{"model":"tiny-llama","messages":[{"role":"user","content":"hi"}],"max_tokens":16}'
Press Ctrl-C to stop.`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
