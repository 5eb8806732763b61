/**
 * Request bodies of the OpenAI-compatible routes, as TypeBox schemas (one definition
 * for the check and the type). Objects allow unknown fields, as OpenAI's API does;
 * optional fields also take `null`, which several clients send for "not given".
 */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { MAX_TOP_LOGPROBS } from '../../shared';

const Nullable = <S extends TSchema>(s: S) => Type.Optional(Type.Union([s, Type.Null()]));

/** Most choices one request may ask for (each is one `generate` task). */
export const MAX_CHOICES = 16;
/** Most prompts one `/v1/completions` request may carry. */
export const MAX_PROMPTS = 64;
/** Most generations (prompts × n) one request may start. */
export const MAX_GENERATIONS = 64;

const Stop = Type.Union([
  Type.String({ minLength: 1, maxLength: 256 }),
  Type.Array(Type.String({ minLength: 1, maxLength: 256 }), { maxItems: 16 }),
]);

const ResponseFormat = Type.Union([
  Type.Object({ type: Type.Literal('text') }),
  Type.Object({ type: Type.Literal('json_object') }),
  Type.Object({
    type: Type.Literal('json_schema'),
    json_schema: Type.Object({
      name: Type.String({ minLength: 1, maxLength: 64 }),
      description: Type.Optional(Type.String()),
      schema: Type.Optional(Type.Record(Type.String(), Type.Unknown())),
      /** Always on here: constrained decoding makes every output validate. */
      strict: Nullable(Type.Boolean()),
    }),
  }),
]);

const Common = {
  /** `BASE` or `BASE:ADAPTER`. */
  model: Type.String({ minLength: 1, maxLength: 257 }),
  n: Nullable(Type.Integer({ minimum: 1, maximum: MAX_CHOICES })),
  stop: Nullable(Stop),
  seed: Nullable(Type.Integer({ minimum: 0, maximum: 0xffffffff })),
  max_tokens: Nullable(Type.Integer({ minimum: 1, maximum: 4096 })),
  temperature: Nullable(Type.Number({ minimum: 0, maximum: 2 })),
  top_p: Nullable(Type.Number({ minimum: 0, maximum: 1 })),
  response_format: Nullable(ResponseFormat),
  stream: Nullable(Type.Boolean()),
  stream_options: Nullable(Type.Object({ include_usage: Type.Optional(Type.Boolean()) })),
  user: Type.Optional(Type.String()),
  frequency_penalty: Nullable(Type.Number({ minimum: -2, maximum: 2 })),
  presence_penalty: Nullable(Type.Number({ minimum: -2, maximum: 2 })),
  logit_bias: Nullable(Type.Record(Type.String(), Type.Number())),
  /** Not OpenAI's: the task priority, 0..9 (default 5). */
  priority: Type.Optional(Type.Integer({ minimum: 0, maximum: 9 })),
};

const TextPart = Type.Object({ type: Type.Literal('text'), text: Type.String() });

export const ChatMessageInSchema = Type.Object({
  role: Type.Union([Type.Literal('system'), Type.Literal('developer'), Type.Literal('user'), Type.Literal('assistant')]),
  content: Type.Union([Type.String(), Type.Array(TextPart, { maxItems: 256 }), Type.Null()]),
});

export const ChatCompletionRequestSchema = Type.Object({
  ...Common,
  messages: Type.Array(ChatMessageInSchema, { minItems: 1, maxItems: 256 }),
  max_completion_tokens: Nullable(Type.Integer({ minimum: 1, maximum: 4096 })),
  logprobs: Nullable(Type.Boolean()),
  top_logprobs: Nullable(Type.Integer({ minimum: 0, maximum: MAX_TOP_LOGPROBS })),
  tools: Nullable(Type.Array(Type.Unknown())),
});

export const CompletionRequestSchema = Type.Object({
  ...Common,
  prompt: Type.Union([Type.String(), Type.Array(Type.String(), { minItems: 1, maxItems: MAX_PROMPTS })]),
  logprobs: Nullable(Type.Integer({ minimum: 0, maximum: MAX_TOP_LOGPROBS })),
  echo: Nullable(Type.Boolean()),
  suffix: Nullable(Type.String()),
  best_of: Nullable(Type.Integer({ minimum: 1, maximum: MAX_CHOICES })),
});

export type ChatCompletionRequest = Static<typeof ChatCompletionRequestSchema>;
export type CompletionRequest = Static<typeof CompletionRequestSchema>;
export type ChatMessageIn = Static<typeof ChatMessageInSchema>;
