/**
 * CLI: `tsx server/main.ts [--port N] [--host H] [--db PATH|postgres://…] [--data-dir DIR] [--static DIR] [--models DIR] [--attempt-sync normal|full]
 * [--webhook-allow-host HOST]... [--webhook-secret SECRET]` (without --webhook-secret the secret is kept in
 * `webhook-secret` beside the journal).
 * `--auth FILE`: bearer tokens and roles (docs/api.md "Authentication"); without it, `auth.json` beside the --db
 * file is used, written with an admin token and a node join token (mode 0600) when missing.
 * `--allow-origin ORIGIN` (repeatable): a page served from ORIGIN (`scheme://host[:port]`) may join as a node and send
 * state-changing requests; the coordinator's own origin always may.
 * `--spot-check FRACTION` (0–1, default 0): that share of deterministic agent tasks runs on a second node too (docs/api.md "Replicas").
 * `--aging-ms MS` (default 60000, 0: off): a waiting task's priority rises by one per MS it waits (docs/api.md "Scheduling").
 * `--coordinator-dead-ms MS` (default 10000): several coordinators on one PostgreSQL journal (README): one silent this
 * long is judged dead and the others requeue its leases.
 * `--webhook-grace-ms MS` (default: the delivery window, every attempt timing out, plus 5 s): a webhook still not
 * delivered this long after its task ended is delivered by this coordinator's sweep (its own coordinator stopped first).
 * `--otlp-endpoint URL`: export spans with OpenTelemetry over OTLP/HTTP to this collector (`/v1/traces` is added to a
 * URL without a path); off by default (docs/api.md "Tracing").
 * Prints `coordinator listening on URL` and closes gracefully on SIGINT/SIGTERM.
 * Path flags (--db, --static, --models, --auth) may be relative: they resolve against the working directory.
 */
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { Auth, ensureLocalTokens } from './auth';
import { createCoordinator } from './index';
import { journalFolder } from './sql';
import { otlpTracesUrl } from './tracing';

const { values: flags } = parseArgs({
  options: {
    port: { type: 'string', default: '8080' },
    host: { type: 'string', default: '127.0.0.1' },
    db: { type: 'string', default: './data/coordinator.db' },
    'data-dir': { type: 'string' },
    static: { type: 'string' },
    models: { type: 'string' },
    logger: { type: 'boolean', default: false },
    'attempt-sync': { type: 'string', default: 'normal' },
    auth: { type: 'string' },
    'webhook-allow-host': { type: 'string', multiple: true, default: [] },
    'webhook-secret': { type: 'string' },
    'allow-origin': { type: 'string', multiple: true, default: [] },
    'spot-check': { type: 'string', default: '0' },
    'aging-ms': { type: 'string', default: '60000' },
    'otlp-endpoint': { type: 'string' },
    'coordinator-dead-ms': { type: 'string', default: '10000' },
    'webhook-grace-ms': { type: 'string' },
  },
});

// Every path flag resolves against the working directory, as a shell user expects (@fastify/static, for one,
// refuses a relative root). `:memory:` is SQLite's in-memory journal and postgres://… a server, not paths.
// --data-dir (webhook secret, adapters, blobs, auth.json): default the SQLite file's folder, ./data for PostgreSQL.
const folder = journalFolder(flags.db);
const values = {
  ...flags,
  db: folder === null ? flags.db : resolve(flags.db),
  dataDir: resolve(flags['data-dir'] ?? folder ?? './data'),
  ...(flags.static ? { static: resolve(flags.static) } : {}),
  ...(flags.models ? { models: resolve(flags.models) } : {}),
  ...(flags.auth ? { auth: resolve(flags.auth) } : {}),
};

// --spot-check FRACTION: that share of the tasks of deterministic agent versions also runs on a second node.
const spotCheck = Number(values['spot-check']);
if (!Number.isFinite(spotCheck) || spotCheck < 0 || spotCheck > 1) {
  console.error(`--spot-check must be a fraction from 0 to 1; got ${values['spot-check']}`);
  process.exit(2);
}

// --aging-ms MS: a ready task's priority rises by one per MS it waits, so low priority is never starved.
const agingMs = Number(values['aging-ms']);
if (!Number.isInteger(agingMs) || agingMs < 0) {
  console.error(`--aging-ms must be a whole number of milliseconds (0 turns aging off); got ${values['aging-ms']}`);
  process.exit(2);
}

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

// Bearer tokens: --auth FILE, else a file beside the journal (written with an admin and a node join token
// when missing). The tokens are never printed or logged here; read them from the file.
let auth: Auth;
try {
  if (values.auth) {
    auth = Auth.fromFile(values.auth);
    console.log(`auth: tokens from ${values.auth}`);
  } else {
    const path = join(values.dataDir, 'auth.json');
    const local = ensureLocalTokens(path);
    auth = local.auth;
    console.log(`auth: tokens ${local.created ? 'written to' : 'from'} ${path} (an admin token and a node join token; pass --auth FILE for your own)`);
  }
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(2);
}

const coordinatorDeadMs = Number(values['coordinator-dead-ms']);
if (!Number.isInteger(coordinatorDeadMs) || coordinatorDeadMs < 1_000 || coordinatorDeadMs > 3_600_000) {
  console.error(`--coordinator-dead-ms must be a whole number of ms from 1000 to 3600000; got ${values['coordinator-dead-ms']}`);
  process.exit(2);
}

const graceFlag = values['webhook-grace-ms'];
const webhookGraceMs = graceFlag === undefined ? undefined : Number(graceFlag);
if (webhookGraceMs !== undefined && (!Number.isInteger(webhookGraceMs) || webhookGraceMs < 0 || webhookGraceMs > 3_600_000)) {
  console.error(`--webhook-grace-ms must be a whole number of ms from 0 to 3600000; got ${graceFlag}`);
  process.exit(2);
}

// --otlp-endpoint URL: spans go there over OTLP/HTTP (off without it).
const otlpEndpoint = values['otlp-endpoint'];
if (otlpEndpoint !== undefined) {
  try {
    otlpTracesUrl(otlpEndpoint);
  } catch (err) {
    console.error(err instanceof Error ? err.message : String(err));
    process.exit(2);
  }
}

const coordinator = await createCoordinator({
  ...(otlpEndpoint !== undefined ? { tracing: { otlpEndpoint } } : {}),
  auth,
  allowOrigins: values['allow-origin'],
  spotCheck,
  agingMs,
  attemptSync,
  coordinatorDeadMs,
  port,
  host: values.host,
  dbPath: values.db,
  ...(values.db === ':memory:' ? {} : { dataDir: values.dataDir }),
  ...(values.static ? { staticDir: values.static } : {}),
  ...(values.models ? { modelsDir: values.models } : {}),
  logger: values.logger,
  webhook: {
    allowHosts: values['webhook-allow-host'],
    ...(values['webhook-secret'] ? { secret: values['webhook-secret'] } : {}),
    ...(webhookGraceMs !== undefined ? { graceMs: webhookGraceMs } : {}),
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
