/**
 * The API described: `GET /openapi.json` (the OpenAPI 3.1 document, server/openapi.ts) and `GET /docs`
 * (the same as a page). Both open, like /healthz: the document names routes, schemas and roles, nothing
 * secret (no token, tenant or node), and the routes it lists still check tokens themselves.
 * Built once per coordinator: the table does not change while it runs.
 */
import type { FastifyInstance } from 'fastify';
import { openApiDocument } from '../openapi';
import { openApiPage } from '../openapi-page';

export function openApiRoutes(app: FastifyInstance): void {
  const doc = openApiDocument();
  const json = JSON.stringify(doc);
  const page = openApiPage(doc);
  app.get('/openapi.json', async (_req, reply) => reply.type('application/json; charset=utf-8').send(json));
  app.get('/docs', async (_req, reply) => reply.type('text/html; charset=utf-8').send(page));
}
