/**
 * Model folders for the nodes: `GET /v1/models/:name/manifest` (sizes and SHA-256 digests) and
 * `GET /models/:name/<path>` (the files, with Range requests so downloads resume), from whichever
 * of the store's roots serves the name. (`GET /v1/models` is the OpenAI-shaped list in ./openai.)
 * The adapter registry's latest versions join the base's folder as `adapters/<name>/…` (they
 * replace a folder's own adapter of the same name).
 */
import fastifyStatic from '@fastify/static';
import type { FastifyPluginAsync } from 'fastify';
import { dirname } from 'node:path';
import { ADAPTER_FILES, type AdapterFileName, type AdapterRegistry } from '../adapters';
import type { ModelStore } from '../models';

const ADAPTER_PATH = /^adapters\/([^/]+)\/([^/]+)$/;

export function modelRoutes(
  store: ModelStore,
  setHeaders?: (res: { setHeader(name: string, value: string): unknown }) => void,
  adapters?: AdapterRegistry,
): FastifyPluginAsync {
  return async (app) => {
    // Only for reply.sendFile (Range, ETag, Last-Modified); each request names its own folder as the root.
    await app.register(fastifyStatic, { serve: false, ...(setHeaders ? { setHeaders } : {}) });
    app.get('/v1/models/:name/manifest', async (req) => {
      const m = await store.manifest((req.params as { name: string }).name);
      if (!adapters) return m;
      const extra = await adapters.manifestFiles(m.name);
      if (!extra.length) return m;
      const replaced = new Set(extra.map((f) => f.path.split('/')[1]));
      const files = [...m.files.filter((f) => !(ADAPTER_PATH.test(f.path) && replaced.has(f.path.split('/')[1]))), ...extra].sort((a, b) =>
        a.path < b.path ? -1 : a.path > b.path ? 1 : 0,
      );
      return { name: m.name, files, totalBytes: files.reduce((n, f) => n + f.size, 0) };
    });
    app.get('/models/:name/*', async (req, reply) => {
      const params = req.params as { name: string; '*': string };
      const a = adapters ? ADAPTER_PATH.exec(params['*']) : null;
      if (a && adapters && (ADAPTER_FILES as readonly string[]).includes(a[2]!)) {
        const folder = await store.locate(params.name);
        const v = await adapters.resolve(folder.name, a[1]!).catch(() => null);
        if (v) {
          const file = adapters.filePath(v, a[2] as AdapterFileName);
          return reply.sendFile(a[2]!, dirname(file));
        }
      }
      const f = await store.resolveFile(params.name, params['*']);
      return reply.sendFile(f.path, f.dir);
    });
  };
}
