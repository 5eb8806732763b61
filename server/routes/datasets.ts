/**
 * Training datasets by reference: `POST /v1/datasets` (JSON lines of chat conversations, checked with the
 * parser the nodes train from), `GET /v1/datasets`, `GET /v1/datasets/:sha256` and
 * `GET /v1/datasets/:sha256/content`. Stored content-addressed in the journal; a dataset is tenant data,
 * so a tenant-bound token sees only its own tenant's uploads (another tenant's answers as missing).
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, LIMITS, type TaskSpec } from '../../shared';
import { parseConversations } from '../../worker/training/dataset';
import { readerTenant, tenantOf } from '../access';
import type { Context } from '../context';
import { mediaType, type RouteConfig } from '../http';
import type { DatasetRow } from '../journal';

/** The media types a dataset upload takes (JSON lines). */
export const DATASET_TYPES = ['application/x-ndjson', 'application/jsonl'] as const;

const HEX = /^[0-9a-f]{64}$/;

/** `sha256:<hex>` or `<hex>` → the hex digest (lower case), or null when it is neither. */
export function datasetHash(ref: string): string | null {
  const hex = (ref.startsWith('sha256:') ? ref.slice('sha256:'.length) : ref).toLowerCase();
  return HEX.test(hex) ? hex : null;
}

/** `sha256:<hex>` as a train task's `dataset` names an uploaded dataset (inline JSON lines never start so). */
export function isDatasetRef(dataset: string): boolean {
  return dataset.startsWith('sha256:');
}

function view(r: DatasetRow) {
  return { id: `sha256:${r.sha256}`, sha256: r.sha256, bytes: r.size, conversations: r.conversations, createdAt: r.created_at, contentUrl: `/v1/datasets/${r.sha256}/content` };
}

function notFound(ref: string): AppError {
  return new AppError('DATASET_NOT_FOUND', `No dataset ${ref.slice(0, 80)} was uploaded here (by this tenant); POST /v1/datasets uploads one, GET /v1/datasets lists them.`, {
    dataset: ref.slice(0, 80),
  });
}

/** UTF-8 text of the upload; a byte sequence that is not UTF-8 is DATASET_INVALID with its line. */
function decode(bytes: Buffer): string {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    let line = 1;
    let start = 0;
    for (let i = 0; i <= bytes.length; i++) {
      if (i < bytes.length && bytes[i] !== 0x0a) continue;
      try {
        new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(start, i));
      } catch {
        break;
      }
      line++;
      start = i + 1;
    }
    throw new AppError('DATASET_INVALID', `Dataset line ${line}: not UTF-8. Send the JSON lines encoded as UTF-8.`, { line, reason: 'not UTF-8' });
  }
}

export function datasetRoutes(app: FastifyInstance, ctx: Context): void {
  // Only this scope reads JSON lines, and only JSON lines (application/json is refused here with 415 before
  // the body is read: server/http.ts installInputGate asks the scope's parsers).
  void app.register(async (scope) => {
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser([...DATASET_TYPES], { parseAs: 'buffer', bodyLimit: LIMITS.maxDatasetBytes }, (_req, body, done) => done(null, body));
    const config: RouteConfig = {
      tooLarge: () => new AppError('BODY_TOO_LARGE', `The dataset is larger than ${LIMITS.maxDatasetBytes} bytes; split it into smaller datasets.`, { limit: LIMITS.maxDatasetBytes }),
    };
    scope.post('/v1/datasets', { bodyLimit: LIMITS.maxDatasetBytes, config }, upload);
  });

  async function upload(req: FastifyRequest, reply: FastifyReply) {
    const { charset } = mediaType(req.headers['content-type'] ?? '');
    if (!Buffer.isBuffer(req.body) || (charset !== null && charset !== 'utf-8' && charset !== 'utf8')) {
      throw new AppError('UNSUPPORTED_MEDIA_TYPE', `Upload a dataset as UTF-8 JSON lines with content-type ${DATASET_TYPES.join(' or ')}.`);
    }
    const bytes = req.body;
    // DATASET_INVALID with the line number; an empty (or all-blank) dataset too.
    const conversations = parseConversations(decode(bytes).replace(/^\uFEFF/, '')).length;
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const { created, record } = ctx.journal.putDataset(sha256, bytes, conversations, tenantOf(req));
    if (created) ctx.journal.event('dataset_uploaded', null, null, { sha256, bytes: bytes.length, conversations, tenant: tenantOf(req) });
    void reply.code(created ? 201 : 200);
    return view(record);
  }

  app.get('/v1/datasets', async (req) => ({ datasets: ctx.journal.datasets(tenantOf(req)).map(view) }));

  function find(req: FastifyRequest): DatasetRow {
    const ref = (req.params as { sha256: string }).sha256;
    const hash = datasetHash(ref);
    if (hash === null) {
      throw new AppError('INVALID_ID', `A dataset id is sha256:<64 hex digits> or the 64 hex digits, not ${JSON.stringify(ref.slice(0, 80))}.`, { dataset: ref.slice(0, 80) });
    }
    const row = ctx.journal.dataset(hash, readerTenant(req));
    if (!row) throw notFound(ref);
    return row;
  }

  app.get('/v1/datasets/:sha256', async (req) => view(find(req)));

  app.get('/v1/datasets/:sha256/content', async (req, reply) => {
    const row = find(req);
    const etag = `"${row.sha256}"`;
    void reply.header('cache-control', 'private, max-age=31536000, immutable').header('etag', etag);
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    const bytes = ctx.journal.datasetBytes(row.sha256, readerTenant(req));
    if (!bytes) throw notFound(row.sha256);
    return reply.type('application/x-ndjson').send(bytes);
  });
}

/**
 * A train task naming `dataset: "sha256:<hex>"` must name a dataset the caller's tenant uploaded
 * (DATASET_NOT_FOUND otherwise), checked at submit so it is refused at once, not on a node.
 */
export function checkTrainDatasets(specs: readonly TaskSpec[], batch: boolean, ctx: Context, tenant: string | null): void {
  for (const [i, spec] of specs.entries()) {
    if (spec.kind !== 'train') continue;
    const dataset = spec.payload.dataset;
    if (!isDatasetRef(dataset)) continue;
    const hash = datasetHash(dataset);
    if (hash === null || ctx.journal.dataset(hash, tenant) === null) {
      const err = notFound(dataset);
      throw new AppError('DATASET_NOT_FOUND', `${batch ? `/tasks/${i}` : ''}/payload/dataset: ${err.message}`, err.details);
    }
  }
}
