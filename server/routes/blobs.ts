/**
 * Large agent inputs by reference: `POST /v1/blobs` (application/octet-stream, streamed to disk while it is
 * hashed, at most LIMITS.maxBlobBytes, BLOB_TOO_LARGE measured while it streams), `GET /v1/blobs` (the
 * caller's), `GET`/`HEAD /v1/blobs/:sha256` (the bytes). Content-addressed (`sha256:<hex>`), idempotent.
 *
 * Who reads what: a blob is tenant data like a dataset, so a tenant-bound token sees only its own tenant's
 * uploads (another tenant's answers as missing, BLOB_NOT_FOUND). A node token (role node) may read any blob:
 * nodes fetch the blobs that the mounts of the tasks assigned to them name, a node already sees every input
 * of the tasks it runs, and a blob is named by a 256-bit digest nobody guesses. Tokens without a tenant read any.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import { AppError, type TaskSpec } from '../../shared';
import { readerTenant, tenantOf } from '../access';
import type { BlobStore } from '../blobs';
import type { Context } from '../context';
import { answerAndClose, type RouteConfig } from '../http';
import type { BlobRow } from '../journal';
import type { Metrics } from '../metrics';
import { datasetHash } from './datasets';

function view(r: BlobRow) {
  return { blob: `sha256:${r.sha256}`, sha256: r.sha256, bytes: r.size, createdAt: r.created_at, url: `/v1/blobs/${r.sha256}` };
}

function notFound(ref: string): AppError {
  return new AppError('BLOB_NOT_FOUND', `No blob ${ref.slice(0, 80)} was uploaded here (by this tenant); POST /v1/blobs uploads one, GET /v1/blobs lists them.`, {
    blob: ref.slice(0, 80),
  });
}

export function blobRoutes(app: FastifyInstance, ctx: Context, store: BlobStore): void {
  void app.register(async (scope) => {
    // Only this scope reads octet-stream bodies, and it reads them as a stream (no parser buffers them).
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));
    const config: RouteConfig = { tooLarge: () => store.tooLarge() };
    scope.post('/v1/blobs', { config }, upload);
  });

  async function upload(req: FastifyRequest, reply: FastifyReply) {
    const body = req.body as Readable | undefined;
    if (body === undefined || typeof body.pipe !== 'function') {
      throw new AppError('UNSUPPORTED_MEDIA_TYPE', 'Upload a blob as the request body with content-type application/octet-stream.');
    }
    // Taken now: Node detaches the socket from a request whose body stream is destroyed (the spool's, past the limit).
    const socket = req.raw.socket;
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > store.maxBytes) return refuse(socket, reply, ctx.metrics, store.tooLarge());
    let put: { sha256: string; bytes: number };
    try {
      put = await store.put(body);
    } catch (err) {
      if (err instanceof AppError && err.code === 'BLOB_TOO_LARGE') return refuse(socket, reply, ctx.metrics, err);
      throw err;
    }
    const tenant = tenantOf(req);
    const { created, record } = ctx.journal.putBlob(put.sha256, put.bytes, tenant);
    if (created) ctx.journal.event('blob_uploaded', null, null, { sha256: put.sha256, bytes: put.bytes, tenant });
    void reply.code(created ? 201 : 200);
    return view(record);
  }

  app.get('/v1/blobs', async (req) => ({ blobs: ctx.journal.blobs(tenantOf(req)).map(view) }));

  app.get('/v1/blobs/:sha256', async (req, reply) => {
    const ref = (req.params as { sha256: string }).sha256;
    const hex = datasetHash(ref);
    if (hex === null) {
      throw new AppError('INVALID_ID', `A blob id is sha256:<64 hex digits> or the 64 hex digits, not ${JSON.stringify(ref.slice(0, 80))}.`, { blob: ref.slice(0, 80) });
    }
    const row = ctx.journal.blob(hex, readerTenant(req));
    // On a shared journal the bytes may have reached another coordinator: fetched from the journal once.
    const size = row === null || !(await store.ensure(hex, row.size)) ? null : store.size(hex);
    if (row === null || size === null) throw notFound(ref);
    const etag = `"${hex}"`;
    void reply
      .header('cache-control', 'private, max-age=31536000, immutable')
      .header('etag', etag)
      .header('x-blob-sha256', hex)
      .type('application/octet-stream');
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    void reply.header('content-length', String(size));
    // HEAD: an empty stream keeps the content-length set above (fastify answers a bare send() with 0).
    if (req.method === 'HEAD') return reply.send(Readable.from([]));
    return reply.send(store.open(hex));
  });
}

/**
 * An upload past the limit: answered at once with `connection: close`, the rest of the body never read (Node
 * would otherwise read and discard it to keep the connection), and the connection closed in stages
 * (server/http.ts answerAndClose) so that the client, still sending, reads the 413 rather than a reset.
 */
function refuse(socket: Socket | null, reply: FastifyReply, metrics: Metrics, err: AppError): FastifyReply {
  if (!answerAndClose(socket, reply, metrics, err)) {
    void reply.header('connection', 'close');
    throw err;
  }
  return reply;
}

/** Every `{ "blob": "sha256:<hex>" }` a spec's mounts name, with its JSON pointer. */
function blobRefs(spec: TaskSpec, prefix: string): Array<{ ref: unknown; at: string }> {
  if (spec.kind !== 'agent') return [];
  const mounts = (spec.payload as { mounts?: unknown }).mounts;
  if (mounts === null || typeof mounts !== 'object') return [];
  const refs: Array<{ ref: unknown; at: string }> = [];
  for (const [guest, mount] of Object.entries(mounts as Record<string, unknown>)) {
    const files = (mount as { files?: unknown } | null)?.files;
    if (files === null || typeof files !== 'object') continue;
    for (const [path, file] of Object.entries(files as Record<string, unknown>)) {
      if (file !== null && typeof file === 'object' && 'blob' in file) {
        refs.push({ ref: (file as { blob: unknown }).blob, at: `${prefix}/payload/mounts/${pointer(guest)}/files/${pointer(path)}/blob` });
      }
    }
  }
  return refs;
}

const pointer = (key: string): string => key.replace(/~/g, '~0').replace(/\//g, '~1');

/**
 * An agent task whose mounts name a blob that was not uploaded (or not by the caller's tenant) is refused
 * at submit with BLOB_NOT_FOUND and the JSON pointer of the reference, not on a node.
 */
export function checkBlobRefs(specs: readonly TaskSpec[], batch: boolean, ctx: Context, tenant: string | null): void {
  for (const [i, spec] of specs.entries()) {
    for (const { ref, at } of blobRefs(spec, batch ? `/tasks/${i}` : '')) {
      const text = typeof ref === 'string' ? ref : JSON.stringify(ref) ?? '';
      const hex = typeof ref === 'string' && ref.startsWith('sha256:') ? datasetHash(ref) : null;
      if (hex === null || ctx.journal.blob(hex, tenant) === null) {
        const err = notFound(text);
        throw new AppError('BLOB_NOT_FOUND', `${at}: ${err.message}`, { ...err.details, at });
      }
    }
  }
}
