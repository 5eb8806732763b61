/**
 * Model folders for the nodes: `GET /v1/models/:name/manifest` (sizes and SHA-256 digests) and
 * `GET /models/:name/<path>` (the files, with Range requests so downloads resume), from whichever
 * of the store's roots serves the name. (`GET /v1/models` is the OpenAI-shaped list in ./openai.)
 */
import fastifyStatic from '@fastify/static';
import type { FastifyPluginAsync } from 'fastify';
import type { ModelStore } from '../models';

export function modelRoutes(store: ModelStore, setHeaders?: (res: { setHeader(name: string, value: string): unknown }) => void): FastifyPluginAsync {
  return async (app) => {
    // Only for reply.sendFile (Range, ETag, Last-Modified); each request names its own folder as the root.
    await app.register(fastifyStatic, { serve: false, ...(setHeaders ? { setHeaders } : {}) });
    app.get('/v1/models/:name/manifest', async (req) => store.manifest((req.params as { name: string }).name));
    app.get('/models/:name/*', async (req, reply) => {
      const params = req.params as { name: string; '*': string };
      const f = await store.resolveFile(params.name, params['*']);
      return reply.sendFile(f.path, f.dir);
    });
  };
}
