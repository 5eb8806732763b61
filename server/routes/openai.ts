/**
 * The OpenAI-compatible API: `GET /v1/models`, `GET /v1/models/:name`,
 * `POST /v1/chat/completions`, `POST /v1/completions`. Each completion request
 * becomes journaled `generate` tasks (one per choice). These routes answer
 * errors in OpenAI's shape, so they live in their own fastify scope with their
 * own error handler.
 */
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { tenantOf } from '../access';
import type { Context } from '../context';
import { toAppError } from '../http';
import type { AdapterRegistry } from '../adapters';
import type { ModelStore } from '../models';
import { badParam, openAiError } from '../openai/errors';
import { ModelCatalog } from '../openai/models';
import { planChat, planCompletion, type Plan } from '../openai/request';
import type { Api } from '../openai/response';
import { completeStream, completeWhole } from '../openai/run';
import { bindTenant } from './tasks';

export function openAiRoutes(ctx: Context, store: ModelStore | null, adapters: AdapterRegistry | null = null): FastifyPluginAsync {
  return async (app: FastifyInstance) => {
    const catalog = new ModelCatalog(ctx, store, adapters);

    app.setErrorHandler((err, req, reply) => {
      const appErr = toAppError(err, req);
      if (appErr.code === 'INTERNAL') req.log.error({ err }, 'internal error');
      if (appErr.code === 'RATE_LIMITED' || appErr.code === 'SHUTTING_DOWN') void reply.header('retry-after', '1');
      const { status, body } = openAiError(appErr);
      void reply.code(status).send(body);
    });

    app.get('/v1/models', async () => ({ object: 'list', data: await catalog.list() }));

    app.get('/v1/models/:name', async (req) => {
      const name = (req.params as { name: string }).name;
      const model = await catalog.get(name);
      if (!model) throw badParam('model', `The model \`${name}\` does not exist; GET /v1/models lists the models.`, 'MODEL_NOT_FOUND');
      return model;
    });

    const complete = (api: Api, plan: (body: unknown) => Plan) =>
      async (req: FastifyRequest, reply: FastifyReply) => {
        const p = plan(req.body);
        bindTenant(p.specs, false, tenantOf(req)); // the token's tenant owns the tasks
        if (!(await catalog.has(p.model.base))) {
          throw badParam('model', `The model \`${p.model.base}\` does not exist; GET /v1/models lists the models.`, 'MODEL_NOT_FOUND');
        }
        if (p.model.adapter !== undefined && !(await catalog.hasAdapter(p.model.base, p.model.adapter))) {
          throw badParam('model', `The model \`${p.model.id}\` does not exist: ${p.model.base} has no adapter ${p.model.adapter}; GET /v1/models lists the models.`, 'ADAPTER_NOT_FOUND');
        }
        if (!p.stream) return completeWhole(ctx, api, p, reply);
        completeStream(ctx, api, p, reply);
        return reply;
      };

    app.post('/v1/chat/completions', complete('chat', planChat));
    app.post('/v1/completions', complete('completion', planCompletion));
  };
}
