/**
 * CLI: `tsx server/main.ts [--port N] [--host H] [--db PATH] [--static DIR] [--models DIR] [--attempt-sync normal|full]
 * [--webhook-allow-host HOST]... [--webhook-secret SECRET]` (without --webhook-secret the secret is kept in
 * `webhook-secret` beside the journal).
 * Prints `coordinator listening on URL` and closes gracefully on SIGINT/SIGTERM.
 */
import { parseArgs } from 'node:util';
import { createCoordinator } from './index';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    host: { type: 'string', default: '127.0.0.1' },
    db: { type: 'string', default: './data/coordinator.db' },
    static: { type: 'string' },
    models: { type: 'string' },
    logger: { type: 'boolean', default: false },
    'attempt-sync': { type: 'string', default: 'normal' },
    'webhook-allow-host': { type: 'string', multiple: true, default: [] },
    'webhook-secret': { type: 'string' },
  },
});

const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`--port must be an integer from 0 to 65535; got ${values.port}`);
  process.exit(2);
}

const attemptSync = values['attempt-sync'];
if (attemptSync !== 'normal' && attemptSync !== 'full') {
  console.error(`--attempt-sync must be normal or full; got ${attemptSync}`);
  process.exit(2);
}

const coordinator = await createCoordinator({
  attemptSync,
  port,
  host: values.host,
  dbPath: values.db,
  ...(values.static ? { staticDir: values.static } : {}),
  ...(values.models ? { modelsDir: values.models } : {}),
  logger: values.logger,
  webhook: {
    allowHosts: values['webhook-allow-host'],
    ...(values['webhook-secret'] ? { secret: values['webhook-secret'] } : {}),
  },
});
console.log(`coordinator listening on ${coordinator.url}`);

let stopping = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (stopping) process.exit(1);
    stopping = true;
    coordinator.close().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(err);
        process.exit(1);
      },
    );
  });
}
