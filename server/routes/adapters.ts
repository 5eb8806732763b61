/**
 * The adapter registry's routes: `PUT /v1/adapters/:base/:name` (upload: the bytes of
 * adapter_model.safetensors as application/octet-stream, adapter_config.json in the `x-adapter-config`
 * header or the `config` query), `GET /v1/adapters`, `GET /v1/adapters/:base/:name` (`name@N` for
 * one version) and `GET /v1/adapters/:base/:name/:file` (the file of that version).
 */
import { readFile } from 'node:fs/promises';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type } from '@sinclair/typebox';
import { AppError, LIMITS } from '../../shared';
import type { RouteConfig } from '../http';
import { checkCompiled } from '../validate';
import { ADAPTER_FILES, MAX_ADAPTER_BYTES, parseAdapterRef, type AdapterFileName, type AdapterRecord, type AdapterRegistry, type AdapterVersion } from '../adapters';

/** The JSON form of an upload (small adapters: the JSON parser's string and body limits apply): adapter_config.json as an object or its text, the safetensors in base64. */
export const UploadSchema = Type.Object(
  {
    config: Type.Union([Type.String({ maxLength: 65_536 }), Type.Record(Type.String(), Type.Unknown())]),
    weights: Type.String(),
    fingerprint: Type.Optional(Type.String({ maxLength: 128 })),
  },
  { additionalProperties: false },
);

function versionView(v: AdapterVersion) {
  const ref = `${v.name}@${v.version}`;
  return {
    ...v,
    files: ADAPTER_FILES.map((f) => ({ path: f, url: `/v1/adapters/${v.base}/${ref}/${f}` })),
  };
}

function recordView(r: AdapterRecord) {
  return { id: `${r.base}:${r.name}`, base: r.base, name: r.name, latest: r.latest, versions: r.versions.map(versionView) };
}

const isRaw = (req: FastifyRequest): boolean => (req.headers['content-type'] ?? '').startsWith('application/octet-stream');

/** An upload over its limit: the raw form's 64 MiB, or the 1 MiB a JSON body keeps. */
function tooLarge(req: FastifyRequest): AppError {
  const raw = isRaw(req);
  const limit = raw ? MAX_ADAPTER_BYTES : LIMITS.maxBodyBytes;
  return new AppError('BODY_TOO_LARGE', `The adapter upload is larger than ${limit} bytes; ${raw ? 'the registry takes adapters up to that size' : 'send adapter_model.safetensors as application/octet-stream (config in x-adapter-config) instead of base64 JSON'}.`, { limit });
}

export function adapterRoutes(app: FastifyInstance, registry: AdapterRegistry, mergedDir: string, externalData: { above?: number; chunkBytes?: number } = {}): void {
  // The adapter merged into its base, written as a model folder of its own (safetensors and ONNX) and served under its id.
  app.post('/v1/adapters/:base/:name/merge', async (req, reply) => {
    const params = req.params as { base: string; name: string };
    const m = await registry.merge(params.base, params.name, mergedDir, externalData);
    void reply.code(m.created ? 201 : 200);
    return { model: m.model, base: m.version.base, adapter: `${m.version.base}:${m.version.name}@${m.version.version}`, files: m.files };
  });

  // Only this scope reads application/octet-stream (every other route refuses it with 415, server/http.ts).
  void app.register(async (scope) => {
    scope.addContentTypeParser('application/octet-stream', { parseAs: 'buffer', bodyLimit: MAX_ADAPTER_BYTES }, (_req, body, done) => done(null, body));
    // The route's limit is the raw upload's; a JSON body keeps the 1 MiB limit every other route has.
    scope.addHook('onRequest', async (req) => {
      const length = Number(req.headers['content-length'] ?? 0);
      if (length > LIMITS.maxBodyBytes && !isRaw(req)) throw tooLarge(req);
    });
    scope.put('/v1/adapters/:base/:name', { bodyLimit: MAX_ADAPTER_BYTES, config: { tooLarge } satisfies RouteConfig }, upload);
  });

  async function upload(req: FastifyRequest, reply: FastifyReply) {
    const params = req.params as { base: string; name: string };
    const q = req.query as { config?: string; fingerprint?: string };
    const header = (name: string): string | undefined => {
      const h = req.headers[name];
      return Array.isArray(h) ? h[0] : h;
    };
    let configJson: string | undefined;
    let bytes: Uint8Array;
    let fingerprint = q.fingerprint ?? header('x-base-fingerprint');
    if (Buffer.isBuffer(req.body)) {
      configJson = q.config ?? header('x-adapter-config');
      bytes = new Uint8Array(req.body.buffer, req.body.byteOffset, req.body.byteLength);
    } else {
      const body = checkCompiled(UploadSchema, req.body ?? {});
      configJson = typeof body.config === 'string' ? body.config : JSON.stringify(body.config, null, 2) + '\n';
      if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body.weights)) throw new AppError('ADAPTER_INVALID', 'Invalid LoRA adapter: weights is not base64.');
      bytes = new Uint8Array(Buffer.from(body.weights, 'base64'));
      fingerprint ??= body.fingerprint;
    }
    if (configJson === undefined || configJson === '') {
      throw new AppError('ADAPTER_INVALID', 'Invalid LoRA adapter: adapter_config.json is missing; send it in the x-adapter-config header (or the config query).');
    }
    const v = await registry.upload(params.base, params.name, configJson, bytes, fingerprint);
    void reply.code(201);
    return versionView(v);
  }

  app.get('/v1/adapters', async () => ({ adapters: (await registry.list()).map(recordView) }));

  app.get('/v1/adapters/:base/:name', async (req) => {
    const params = req.params as { base: string; name: string };
    const { version } = parseAdapterRef(params.name);
    if (version !== null) return versionView(await registry.resolve(params.base, params.name));
    const v = await registry.resolve(params.base, params.name); // ADAPTER_NOT_FOUND when none
    return recordView((await registry.get(v.base, v.name))!);
  });

  app.get('/v1/adapters/:base/:name/:file', async (req, reply) => {
    const params = req.params as { base: string; name: string; file: string };
    if (!(ADAPTER_FILES as readonly string[]).includes(params.file)) {
      throw new AppError('NOT_FOUND', `An adapter has only ${ADAPTER_FILES.join(' and ')}.`, { file: params.file.slice(0, 200) });
    }
    const v = await registry.resolve(params.base, params.name);
    const file = params.file as AdapterFileName;
    const etag = `"${file === 'adapter_config.json' ? v.configSha256 : v.sha256}"`;
    void reply.header('etag', etag);
    if (req.headers['if-none-match'] === etag) return reply.code(304).send();
    const bytes = await readFile(registry.filePath(v, file));
    return reply.type(file.endsWith('.json') ? 'application/json; charset=utf-8' : 'application/octet-stream').send(bytes);
  });
}
