// An OpenAI-compatible HTTP server for one loaded model, on Fastify (routing, JSON-schema validation, body limits).
// Each request gets its own session; concurrent requests batch their decode steps in the engine.
//
// Routes: GET /health, GET /v1/models, POST /v1/chat/completions (plain, or `stream: true` as server-sent events
// ending `data: [DONE]`, with `stream_options.include_usage`). Errors use OpenAI's error JSON with the HTTP status.
import crypto from 'node:crypto';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import type { ChatMessage, GenerateOptions, Generation, GenerationResult, Model, ServerOptions } from '../index.js';
import { SeedinferError } from './errors.js';

interface ChatBody {
  model: string;
  messages: ChatMessage[];
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  max_tokens?: number;
  max_completion_tokens?: number;
  temperature?: number;
  top_p?: number;
  seed?: number;
  stop?: string | string[];
}

const chatSchema = {
  type: 'object',
  required: ['model', 'messages'],
  properties: {
    model: { type: 'string' },
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role', 'content'],
        properties: { role: { type: 'string' }, content: { type: 'string' } },
      },
    },
    stream: { type: 'boolean' },
    stream_options: { type: 'object', properties: { include_usage: { type: 'boolean' } } },
    max_tokens: { type: 'integer', minimum: 1 },
    max_completion_tokens: { type: 'integer', minimum: 1 },
    temperature: { type: 'number', minimum: 0, maximum: 2 },
    top_p: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
    seed: { type: 'integer' },
    stop: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' }, maxItems: 4 }] },
  },
} as const;

/** OpenAI's error body. */
function openAiError(message: string, type: string, param: string | null = null, code: string | null = null) {
  return { error: { message, type, param, code } };
}

/** The finish reason OpenAI reports for a stop reason. */
function finishReason(stop: GenerationResult['stopReason']): 'stop' | 'length' {
  return stop === 'maxTokens' || stop === 'contextFull' ? 'length' : 'stop';
}

function usage(result: GenerationResult) {
  const prompt = result.timings.promptTokens;
  const completion = result.tokenIds.length;
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: result.timings.reusedPromptTokens },
  };
}

/** The id the server lists and requests must name: `options.modelId`, else the model file's name. */
export function servedModelId(model: Model, options: ServerOptions = {}): string {
  return options.modelId ?? model.info.path.split(/[\\/]/).pop() ?? 'seedinfer';
}

/** A Fastify instance serving `model` (not listening yet: call `listen`, or mount it with `inject` in tests). */
export function createServer(model: Model, options: ServerOptions = {}): FastifyInstance {
  const modelId = servedModelId(model, options);
  const created = Math.floor(Date.now() / 1000);
  const app = Fastify({ bodyLimit: options.bodyLimit ?? 1 << 20 });

  app.setErrorHandler((error: FastifyError, _request, reply) => {
    if (error.validation) {
      const first = error.validation[0];
      const param = (first?.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.') || String(first?.params?.missingProperty ?? '') || null;
      return reply.status(400).send(openAiError(error.message, 'invalid_request_error', param, 'invalid_value'));
    }
    if (error.statusCode === 413) return reply.status(413).send(openAiError(error.message, 'invalid_request_error', null, 'body_too_large'));
    if (error instanceof SeedinferError) {
      const status = error.code === 'CONTEXT_OVERFLOW' || error.code === 'INVALID_OPTION' ? 400 : 500;
      return reply.status(status).send(openAiError(error.message, status === 400 ? 'invalid_request_error' : 'server_error', null, error.code));
    }
    const status = error.statusCode && error.statusCode >= 400 ? error.statusCode : 500;
    return reply.status(status).send(openAiError(error.message, status < 500 ? 'invalid_request_error' : 'server_error'));
  });

  if (options.apiKey !== undefined) {
    const expected = Buffer.from(`Bearer ${options.apiKey}`);
    app.addHook('onRequest', async (request, reply) => {
      if (!request.url.startsWith('/v1/')) return;
      const given = Buffer.from(request.headers.authorization ?? '');
      if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
        return reply.status(401).send(openAiError('Incorrect or missing API key (Authorization: Bearer <key>)', 'invalid_request_error', null, 'invalid_api_key'));
      }
    });
  }

  app.get('/health', async () => ({ status: 'ok' }));

  app.get('/v1/models', async () => ({
    object: 'list',
    data: [{ id: modelId, object: 'model', created, owned_by: 'seedinfer' }],
  }));

  app.post<{ Body: ChatBody }>('/v1/chat/completions', { schema: { body: chatSchema } }, async (request, reply) => {
    const body = request.body;
    if (body.model !== modelId) {
      return reply
        .status(404)
        .send(openAiError(`The model '${body.model}' does not exist; this server has '${modelId}'`, 'invalid_request_error', 'model', 'model_not_found'));
    }
    const prompt = model.applyChatTemplate(body.messages);
    const abort = new AbortController();
    // A client that goes away aborts its generation; the session's blocks return to the pool.
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) abort.abort();
    });
    const generate: GenerateOptions = {
      maxTokens: body.max_completion_tokens ?? body.max_tokens ?? options.maxTokens ?? 256,
      temperature: body.temperature ?? 1,
      topP: body.top_p ?? 1,
      topK: 0,
      minP: 0,
      seed: body.seed,
      stop: body.stop === undefined ? undefined : Array.isArray(body.stop) ? body.stop : [body.stop],
      addBos: false,
      signal: abort.signal,
    };
    const id = `chatcmpl-${crypto.randomUUID()}`;
    const session = model.createSession(options.contextSize === undefined ? {} : { contextSize: options.contextSize });
    try {
      if (!body.stream) {
        const result = await session.generateText(prompt, generate);
        return {
          id,
          object: 'chat.completion',
          created: Math.floor(Date.now() / 1000),
          model: modelId,
          choices: [{ index: 0, message: { role: 'assistant', content: result.text }, logprobs: null, finish_reason: finishReason(result.stopReason) }],
          usage: usage(result),
        };
      }
      return await stream(reply, session.generate(prompt, generate), { id, model: modelId, includeUsage: body.stream_options?.include_usage === true });
    } finally {
      session.dispose();
    }
  });

  return app;
}

/** Streams a generation as OpenAI's `chat.completion.chunk` server-sent events. */
async function stream(
  reply: FastifyReply,
  generation: Generation,
  meta: { id: string; model: string; includeUsage: boolean },
): Promise<void> {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  const created = Math.floor(Date.now() / 1000);
  const chunk = (delta: object, finish: string | null, extra: object = {}) =>
    `data: ${JSON.stringify({ id: meta.id, object: 'chat.completion.chunk', created, model: meta.model, choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }], ...extra })}\n\n`;
  raw.write(chunk({ role: 'assistant', content: '' }, null));
  try {
    for await (const text of generation) if (text) raw.write(chunk({ content: text }, null));
    const result = await generation.result;
    raw.write(chunk({}, finishReason(result.stopReason)));
    if (meta.includeUsage) {
      raw.write(`data: ${JSON.stringify({ id: meta.id, object: 'chat.completion.chunk', created, model: meta.model, choices: [], usage: usage(result) })}\n\n`);
    }
    raw.write('data: [DONE]\n\n');
  } catch (error) {
    if (!raw.destroyed) {
      const message = error instanceof Error ? error.message : String(error);
      raw.write(`data: ${JSON.stringify(openAiError(message, 'server_error', null, error instanceof SeedinferError ? error.code : null))}\n\n`);
    }
  } finally {
    raw.end();
  }
}
