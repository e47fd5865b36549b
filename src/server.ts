// An OpenAI-compatible HTTP server for one loaded model, on Fastify (routing, JSON-schema validation, body limits).
// Each choice of each request gets its own session; concurrent requests batch their decode steps in the engine.
//
// Routes: GET /health, GET /metrics (Prometheus), GET /v1/models, POST /v1/chat/completions and POST
// /v1/completions (plain, or `stream: true` as server-sent events ending `data: [DONE]`). Requests wait for room
// in `Admission`; errors use OpenAI's error JSON with the HTTP status.
import crypto from 'node:crypto';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import type {
  ChatMessage,
  GenerateOptions,
  GeneratedToken,
  GenerationResult,
  Model,
  ResponseFormat,
  ServerOptions,
  TokenLogprobs,
  ToolCall,
  ToolChoice,
  ToolDefinition,
} from '../index.js';
import { ToolCallStream } from './tool-calls.js';
import { SeedinferError, checkNumberOption, toSeedinferError, checkOptionNames, optionNames } from './errors.js';
import { Admission } from './server/admission.js';
import { runChoices, type ChoicesRun } from './server/choices.js';
import { createMetrics } from './server/metrics.js';
import { DEFAULT_CONTEXT, type Model as ModelImpl, type PreparedChat } from './model.js';

/** Server defaults (`ServerOptions` documents each). */
export const SERVER_DEFAULTS = {
  bodyLimit: 1 << 20,
  maxTokens: 256,
  completionsMaxTokens: 16,
  maxConcurrentSequences: 16,
  maxQueuedRequests: 64,
  retryAfterSeconds: 1,
} as const;

/** Sampling fields both endpoints take. */
interface SamplingBody {
  model: string;
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  seed?: number;
  stop?: string | string[];
  n?: number;
  presence_penalty?: number;
  frequency_penalty?: number;
  response_format?: ResponseFormatBody | null;
}

/**
 * OpenAI's `response_format` (`text`, `json_object`, `json_schema` with `json_schema: { name, schema, strict }`),
 * llama-server's `json_schema` with `schema` beside `type`, and seedinfer's `regex` (`pattern`) and `grammar`
 * (`lark`).
 */
interface ResponseFormatBody {
  type: 'text' | 'json_object' | 'json_schema' | 'regex' | 'grammar';
  json_schema?: { name?: string; description?: string; schema?: Record<string, unknown>; strict?: boolean | null };
  schema?: Record<string, unknown>;
  pattern?: string;
  lark?: string;
}

interface ChatBody extends SamplingBody {
  messages: {
    role: string;
    content?: string | { type: string; text?: string }[] | null;
    tool_calls?: OpenAiToolCall[];
    tool_call_id?: string;
    name?: string;
  }[];
  max_completion_tokens?: number;
  logprobs?: boolean;
  top_logprobs?: number;
  tools?: ToolDefinition[];
  tool_choice?: 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } };
  parallel_tool_calls?: boolean;
}

/** A call as OpenAI writes it: arguments as JSON text. */
interface OpenAiToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

interface CompletionBody extends SamplingBody {
  prompt: string | string[] | number[];
  logprobs?: number;
  echo?: boolean;
  suffix?: string;
}

const samplingProperties = {
  model: { type: 'string' },
  stream: { type: 'boolean' },
  stream_options: { type: ['object', 'null'], properties: { include_usage: { type: 'boolean' } } },
  max_tokens: { type: ['integer', 'null'], minimum: 1 },
  temperature: { type: ['number', 'null'], minimum: 0, maximum: 2 },
  top_p: { type: ['number', 'null'], exclusiveMinimum: 0, maximum: 1 },
  seed: { type: ['integer', 'null'], minimum: 0 },
  stop: { anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string', minLength: 1 }, maxItems: 4 }, { type: 'null' }] },
  n: { type: ['integer', 'null'], minimum: 1, maximum: 128 },
  presence_penalty: { type: ['number', 'null'], minimum: -2, maximum: 2 },
  frequency_penalty: { type: ['number', 'null'], minimum: -2, maximum: 2 },
  response_format: {
    type: ['object', 'null'],
    required: ['type'],
    properties: {
      type: { enum: ['text', 'json_object', 'json_schema', 'regex', 'grammar'] },
      json_schema: {
        type: 'object',
        properties: { name: { type: 'string' }, description: { type: 'string' }, schema: { type: 'object' }, strict: { type: ['boolean', 'null'] } },
      },
      schema: { type: 'object' },
      pattern: { type: 'string' },
      lark: { type: 'string' },
    },
  },
} as const;

const chatSchema = {
  type: 'object',
  required: ['model', 'messages'],
  properties: {
    ...samplingProperties,
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { type: 'string' },
          content: {
            anyOf: [
              { type: 'string' },
              { type: 'array', items: { type: 'object', required: ['type'], properties: { type: { const: 'text' }, text: { type: 'string' } } } },
              { type: 'null' },
            ],
          },
          tool_calls: {
            type: 'array',
            items: {
              type: 'object',
              required: ['id', 'function'],
              properties: {
                id: { type: 'string' },
                type: { const: 'function' },
                function: { type: 'object', required: ['name', 'arguments'], properties: { name: { type: 'string' }, arguments: { type: 'string' } } },
              },
            },
          },
          tool_call_id: { type: 'string' },
          name: { type: 'string' },
        },
      },
    },
    max_completion_tokens: { type: ['integer', 'null'], minimum: 1 },
    logprobs: { type: ['boolean', 'null'] },
    top_logprobs: { type: ['integer', 'null'], minimum: 0, maximum: 20 },
    tools: {
      type: ['array', 'null'],
      items: {
        type: 'object',
        required: ['type', 'function'],
        properties: {
          type: { const: 'function' },
          function: {
            type: 'object',
            required: ['name'],
            properties: { name: { type: 'string' }, description: { type: 'string' }, parameters: { type: 'object' }, strict: { type: ['boolean', 'null'] } },
          },
        },
      },
    },
    tool_choice: {
      anyOf: [
        { enum: ['none', 'auto', 'required'] },
        { type: 'object', required: ['function'], properties: { type: { const: 'function' }, function: { type: 'object', required: ['name'], properties: { name: { type: 'string' } } } } },
        { type: 'null' },
      ],
    },
    parallel_tool_calls: { type: ['boolean', 'null'] },
  },
} as const;

const completionSchema = {
  type: 'object',
  required: ['model', 'prompt'],
  properties: {
    ...samplingProperties,
    prompt: {
      anyOf: [
        { type: 'string' },
        { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: 1 },
        { type: 'array', items: { type: 'integer', minimum: 0 }, minItems: 1 },
      ],
    },
    logprobs: { type: ['integer', 'null'], minimum: 0, maximum: 5 },
    echo: { type: ['boolean', 'null'] },
    suffix: { type: ['string', 'null'] },
  },
} as const;

/** OpenAI's error body. */
function openAiError(message: string, type: string, param: string | null = null, code: string | null = null) {
  return { error: { message, type, param, code } };
}

/** HTTP status and OpenAI error type for a SeedinferError raised while serving a request. */
function errorStatus(code: string): { status: number; type: string } {
  switch (code) {
    case 'CONTEXT_OVERFLOW':
    case 'INVALID_OPTION':
    case 'INVALID_TOKEN_ID':
    case 'KV_BUDGET_EXCEEDED':
    case 'NO_CHAT_TEMPLATE':
      return { status: 400, type: 'invalid_request_error' };
    case 'QUEUE_FULL':
      return { status: 429, type: 'rate_limit_exceeded' };
    case 'SHUTTING_DOWN':
      return { status: 503, type: 'server_error' };
    default:
      return { status: 500, type: 'server_error' };
  }
}

/** The finish reason OpenAI reports for a stop reason. */
function finishReason(stop: GenerationResult['stopReason']): 'stop' | 'length' {
  return stop === 'maxTokens' || stop === 'contextFull' ? 'length' : 'stop';
}

function usage(run: ChoicesRun) {
  const completion = run.results.reduce((sum, r) => sum + r.tokenIds.length, 0);
  return {
    prompt_tokens: run.promptTokens,
    completion_tokens: completion,
    total_tokens: run.promptTokens + completion,
    prompt_tokens_details: { cached_tokens: run.cachedTokens },
  };
}

/** A chat `logprobs.content` entry. */
function chatLogprob(l: TokenLogprobs) {
  const entry = (token: string, logprob: number) => ({ token, logprob, bytes: [...Buffer.from(token, 'utf8')] });
  return { ...entry(l.token, l.logprob), top_logprobs: l.topLogprobs.map((t) => entry(t.token, t.logprob)) };
}

/** The legacy completions `logprobs` object for `tokens`, offsets counted from `offset`. */
function completionLogprobs(tokens: TokenLogprobs[], offset: number) {
  const textOffset: number[] = [];
  for (const t of tokens) {
    textOffset.push(offset);
    offset += t.token.length;
  }
  return {
    tokens: tokens.map((t) => t.token),
    token_logprobs: tokens.map((t) => t.logprob),
    top_logprobs: tokens.map((t) => Object.fromEntries(t.topLogprobs.map((x) => [x.token, x.logprob]))),
    text_offset: textOffset,
  };
}

/** The engine's output constraint for a request's `response_format` (undefined: free text). */
function responseFormat(body: ResponseFormatBody | null | undefined): ResponseFormat | undefined {
  switch (body?.type) {
    case undefined:
    case 'text':
      return undefined;
    case 'json_object':
      return { type: 'json_object' };
    case 'json_schema': {
      const schema = body.json_schema?.schema ?? body.schema;
      // OpenAI's schema is optional: without one, any JSON object.
      if (schema === undefined) return { type: 'json_object' };
      return { type: 'json_schema', schema, strict: body.json_schema?.strict ?? false };
    }
    case 'regex':
      return { type: 'regex', pattern: body.pattern ?? '' };
    case 'grammar':
      return { type: 'grammar', lark: body.lark ?? '' };
  }
}

/** Text of a message's content: a string, or the text parts of an array. */
function messageText(content: ChatBody['messages'][number]['content']): string | null {
  if (content == null) return null;
  return typeof content === 'string' ? content : content.map((part) => part.text ?? '').join('');
}

/** A request message as the engine's chat takes it (calls' arguments parsed). */
function chatMessage(m: ChatBody['messages'][number], index: number): ChatMessage {
  const toolCalls = m.tool_calls?.map((c, k): ToolCall => {
    let args: unknown;
    try {
      args = JSON.parse(c.function.arguments);
    } catch {
      args = undefined;
    }
    if (typeof args !== 'object' || args === null || Array.isArray(args)) {
      throw new SeedinferError('INVALID_OPTION', `messages[${index}].tool_calls[${k}].function.arguments must be a JSON object`);
    }
    return { id: c.id, name: c.function.name, arguments: args as Record<string, unknown> };
  });
  return {
    role: m.role as ChatMessage['role'],
    content: messageText(m.content),
    ...(toolCalls ? { toolCalls } : {}),
    ...(m.tool_call_id ? { toolCallId: m.tool_call_id } : {}),
    ...(m.name ? { name: m.name } : {}),
  };
}

/** A call in OpenAI's shape. */
function openAiToolCall(call: ToolCall): OpenAiToolCall {
  return { id: call.id, type: 'function', function: { name: call.name, arguments: JSON.stringify(call.arguments) } };
}

/** The id the server lists and requests must name: `options.modelId`, else the model file's name. */
export function servedModelId(model: Model, options: ServerOptions = {}): string {
  return options.modelId ?? model.info.path.split(/[\\/]/).pop() ?? 'seedinfer';
}

/** Server-sent events on a hijacked reply. */
function eventStream(reply: FastifyReply) {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  return {
    send(data: object | string) {
      if (!raw.destroyed) raw.write(`data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    },
    end() {
      raw.end();
    },
  };
}

/**
 * A Fastify instance serving `source` (not listening yet: call `listen`, or mount it with `inject` in tests). Given
 * a promise of a model, it can listen while the model loads: `/health` and `/v1/*` answer 503 until it is ready.
 */
const SERVER_OPTIONS = optionNames<ServerOptions>()([
  'modelId',
  'bodyLimit',
  'contextSize',
  'maxTokens',
  'apiKey',
  'maxConcurrentSequences',
  'maxQueuedRequests',
]);

export function createServer(source: Model | Promise<Model>, options: ServerOptions = {}): FastifyInstance {
  checkOptionNames('createServer', options ?? {}, SERVER_OPTIONS);
  checkNumberOption('maxConcurrentSequences', options.maxConcurrentSequences, 1, 4096, true);
  checkNumberOption('maxQueuedRequests', options.maxQueuedRequests, 0, 1_000_000, true);
  checkNumberOption('maxTokens', options.maxTokens, 1, 10_000_000, true);
  const created = Math.floor(Date.now() / 1000);
  const app = Fastify({ bodyLimit: options.bodyLimit ?? SERVER_DEFAULTS.bodyLimit });
  const admission = new Admission(
    options.maxConcurrentSequences ?? SERVER_DEFAULTS.maxConcurrentSequences,
    options.maxQueuedRequests ?? SERVER_DEFAULTS.maxQueuedRequests,
  );
  // Set once the model is ready; `/v1/*` requests reach the handlers only after that (the onRequest hook below).
  let model!: Model;
  let modelId!: string;
  let contextSize!: number;
  let blockSize!: number;
  let load: { state: 'loading' } | { state: 'ready' } | { state: 'failed'; error: SeedinferError } = { state: 'loading' };
  const metrics = createMetrics(() => (load.state === 'ready' ? model : undefined), admission);
  const ready = (loaded: Model) => {
    checkNumberOption('contextSize', options.contextSize, 1, loaded.info.contextLength, true);
    const cache = loaded.cacheStats();
    model = loaded;
    modelId = servedModelId(loaded, options);
    contextSize = options.contextSize ?? Math.min(loaded.info.contextLength, DEFAULT_CONTEXT);
    blockSize = cache.blockSize;
    admission.setCapacity(Math.floor(cache.budgetBytes / cache.blockBytes));
    load = { state: 'ready' };
  };
  if (source instanceof Promise) {
    source.then(ready).catch((error: unknown) => (load = { state: 'failed', error: toSeedinferError(error) }));
  } else {
    ready(source);
  }

  app.setErrorHandler((error: FastifyError, _request, reply) => {
    if (error.validation) {
      const first = error.validation[0];
      const param = (first?.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.') || String(first?.params?.missingProperty ?? '') || null;
      return reply.status(400).send(openAiError(error.message, 'invalid_request_error', param, 'invalid_value'));
    }
    if (error.statusCode === 413) return reply.status(413).send(openAiError(error.message, 'invalid_request_error', null, 'body_too_large'));
    if (error instanceof SeedinferError) {
      const { status, type } = errorStatus(error.code);
      if (status === 429 || status === 503) reply.header('retry-after', String(SERVER_DEFAULTS.retryAfterSeconds));
      return reply.status(status).send(openAiError(error.message, type, null, error.code));
    }
    const status = error.statusCode && error.statusCode >= 400 ? error.statusCode : 500;
    return reply.status(status).send(openAiError(error.message, status < 500 ? 'invalid_request_error' : 'server_error'));
  });

  app.addHook('onRequest', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    reply.raw.once('finish', () => {
      metrics.requests.inc({ route, status: String(reply.raw.statusCode) });
      // Shutting down: a kept-alive connection would hold `close` open until it times out.
      if (admission.isClosed) setImmediate(() => app.server.closeIdleConnections());
    });
  });
  app.addHook('onSend', async (_request, reply) => {
    if (admission.isClosed) reply.header('connection', 'close');
  });
  app.addHook('preClose', async () => admission.close());
  app.addHook('onRequest', async (request, reply) => {
    if (!request.url.startsWith('/v1/') || load.state === 'ready') return;
    reply.header('retry-after', String(SERVER_DEFAULTS.retryAfterSeconds));
    const message = load.state === 'loading' ? 'the model is loading; retry shortly' : `the model failed to load: ${load.error.message}`;
    return reply.status(503).send(openAiError(message, 'server_error', null, load.state === 'loading' ? 'MODEL_LOADING' : 'MODEL_LOAD_FAILED'));
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

  app.get('/health', async (_request, reply) => {
    if (admission.isClosed) return reply.status(503).send({ status: 'shutting_down' });
    if (load.state === 'loading') return reply.status(503).send({ status: 'loading' });
    if (load.state === 'failed') return reply.status(503).send({ status: 'failed', error: load.error.message, code: load.error.code });
    return { status: 'ok', running: admission.active, queued: admission.queued };
  });

  app.get('/metrics', async (_request, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));

  app.get('/v1/models', async () => ({
    object: 'list',
    data: [{ id: modelId, object: 'model', created, owned_by: 'seedinfer' }],
  }));

  /** The generation options both endpoints share. */
  function requestOptions(body: SamplingBody, maxTokens: number, signal: AbortSignal): GenerateOptions {
    return {
      maxTokens: body.max_tokens ?? maxTokens,
      temperature: body.temperature ?? 1,
      topP: body.top_p ?? 1,
      topK: 0,
      minP: 0,
      seed: body.seed ?? undefined,
      stop: body.stop == null ? undefined : Array.isArray(body.stop) ? body.stop : [body.stop],
      presencePenalty: body.presence_penalty ?? 0,
      frequencyPenalty: body.frequency_penalty ?? 0,
      // OpenAI's penalties count every token so far.
      repetitionLastN: contextSize,
      signal,
      responseFormat: responseFormat(body.response_format),
    };
  }

  /** Waits for room, runs the choices, records metrics. `prompt` is token ids. */
  async function serve(
    prompt: number[],
    n: number,
    generate: GenerateOptions,
    signal: AbortSignal,
    arrived: number,
    events: {
      /** Once admitted, before the first token. */
      onStart?: () => void;
      onToken?: (index: number, token: GeneratedToken) => void;
      onDone?: (index: number, result: GenerationResult) => void;
    } = {},
    constraint?: PreparedChat['constraint'],
  ): Promise<ChoicesRun> {
    const newTokens = Math.max(1, Math.min(generate.maxTokens ?? 1, contextSize - prompt.length));
    const blocks = Math.ceil(prompt.length / blockSize) + n * (Math.ceil(newTokens / blockSize) + 1);
    const release = await admission.acquire({ sequences: n, blocks }, signal);
    const firstToken: (number | undefined)[] = new Array<number | undefined>(n).fill(undefined);
    try {
      events.onStart?.();
      const run = await runChoices(model, prompt, n, generate, contextSize, {
        onToken: (index, token) => {
          firstToken[index] ??= performance.now();
          events.onToken?.(index, token);
        },
        onDone: events.onDone,
      }, constraint);
      run.results.forEach((result, i) =>
        metrics.observe(result, {
          promptTokens: i === 0 ? run.promptTokens : 0,
          cachedTokens: i === 0 ? run.cachedTokens : 0,
          ttftSeconds: firstToken[i] === undefined ? undefined : ((firstToken[i] as number) - arrived) / 1000,
        }),
      );
      return run;
    } finally {
      release();
    }
  }

  /** An AbortSignal that fires when the client goes away before the reply is finished. */
  function clientSignal(reply: FastifyReply): AbortSignal {
    const abort = new AbortController();
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) abort.abort();
    });
    return abort.signal;
  }

  /** 404 in OpenAI's shape for a request naming another model. */
  function modelNotFound(reply: FastifyReply, requested: string) {
    const message = `The model '${requested}' does not exist; this server has '${modelId}'`;
    return reply.status(404).send(openAiError(message, 'invalid_request_error', 'model', 'model_not_found'));
  }

  app.post<{ Body: ChatBody }>('/v1/chat/completions', { schema: { body: chatSchema } }, async (request, reply) => {
    const arrived = performance.now();
    const body = request.body;
    if (body.model !== modelId) return modelNotFound(reply, body.model);
    const signal = clientSignal(reply);
    const generate = requestOptions(body, options.maxTokens ?? SERVER_DEFAULTS.maxTokens, signal);
    // OpenAI's newer name wins over `max_tokens`.
    if (body.max_completion_tokens != null) generate.maxTokens = body.max_completion_tokens;
    if (body.top_logprobs != null && !body.logprobs) {
      return reply.status(400).send(openAiError('top_logprobs needs logprobs: true', 'invalid_request_error', 'top_logprobs', 'invalid_value'));
    }
    if (body.logprobs) {
      generate.logprobs = true;
      generate.topLogprobs = body.top_logprobs ?? 0;
    }
    const messages = body.messages.map(chatMessage);
    const toolChoice: ToolChoice | undefined =
      body.tool_choice == null ? undefined : typeof body.tool_choice === 'string' ? body.tool_choice : { name: body.tool_choice.function.name };
    const chat = (model as unknown as ModelImpl).prepareChat(messages, body.tools ?? undefined, toolChoice);
    const tools = chat.constraint !== undefined || (body.tools != null && toolChoice !== 'none');
    const prompt = chat.prompt;
    const n = body.n ?? 1;
    const id = `chatcmpl-${crypto.randomUUID()}`;
    const now = Math.floor(Date.now() / 1000);
    /** The answer's message and finish reason, calls read from its text when tools were offered. */
    const answer = (result: GenerationResult) => {
      const { content, toolCalls } = tools ? chat.read(result.text) : { content: result.text, toolCalls: [] };
      return {
        message: { role: 'assistant', content, ...(toolCalls.length > 0 ? { tool_calls: toolCalls.map(openAiToolCall) } : {}) },
        finish: toolCalls.length > 0 ? 'tool_calls' : finishReason(result.stopReason),
        toolCalls,
      };
    };
    if (!body.stream) {
      const run = await serve(prompt, n, generate, signal, arrived, {}, chat.constraint);
      return {
        id,
        object: 'chat.completion',
        created: now,
        model: modelId,
        choices: run.results.map((result, index) => {
          const { message, finish } = answer(result);
          return {
            index,
            message,
            logprobs: result.logprobs ? { content: result.logprobs.map(chatLogprob), refusal: null } : null,
            finish_reason: finish,
          };
        }),
        usage: usage(run),
      };
    }
    const chunk = (index: number, delta: object, finish: string | null, logprobs: object | null = null) => ({
      id,
      object: 'chat.completion.chunk',
      created: now,
      model: modelId,
      choices: [{ index, delta, logprobs, finish_reason: finish }],
    });
    // With tools, text that may become a call is held back until it is known not to be one.
    const streams = Array.from({ length: n }, () => (tools ? new ToolCallStream(chat.format) : undefined));
    return streamRun(reply, async (events) => {
      // Each choice's role chunk goes out with its first token: a request that fails before any token (a schema
      // that does not compile) still gets a plain error reply.
      const opened = new Array<boolean>(n).fill(false);
      const open = (index: number) => {
        if (!opened[index]) events.send(chunk(index, { role: 'assistant', content: '' }, null));
        opened[index] = true;
      };
      const run = await serve(
        prompt,
        n,
        generate,
        signal,
        arrived,
        {
          onToken: (index, token) => {
            open(index);
            const text = streams[index] ? streams[index].push(token.text) : token.text;
            if (text || token.logprobs) {
              events.send(chunk(index, { content: text }, null, token.logprobs ? { content: [chatLogprob(token.logprobs)], refusal: null } : null));
            }
          },
          onDone: (index, result) => {
            open(index);
            const { finish, toolCalls } = answer(result);
            const held = streams[index]?.finish(toolCalls.length > 0);
            if (held) events.send(chunk(index, { content: held }, null));
            if (toolCalls.length > 0) {
              events.send(chunk(index, { tool_calls: toolCalls.map((c, k) => ({ index: k, ...openAiToolCall(c) })) }, null));
            }
            events.send(chunk(index, {}, finish));
          },
        },
        chat.constraint,
      );
      if (body.stream_options?.include_usage) {
        events.send({ id, object: 'chat.completion.chunk', created: now, model: modelId, choices: [], usage: usage(run) });
      }
    });
  });

  app.post<{ Body: CompletionBody }>('/v1/completions', { schema: { body: completionSchema } }, async (request, reply) => {
    const arrived = performance.now();
    const body = request.body;
    if (body.model !== modelId) return modelNotFound(reply, body.model);
    const signal = clientSignal(reply);
    const generate = requestOptions(body, options.maxTokens ?? SERVER_DEFAULTS.completionsMaxTokens, signal);
    if (body.suffix) {
      return reply.status(400).send(openAiError('suffix (fill-in-the-middle) is not supported', 'invalid_request_error', 'suffix', 'unsupported_value'));
    }
    if (body.logprobs != null) {
      generate.logprobs = true;
      generate.topLogprobs = body.logprobs;
    }
    const promptText = typeof body.prompt === 'string' ? body.prompt : typeof body.prompt[0] === 'string' ? (body.prompt[0] as string) : undefined;
    const prompt = promptText === undefined ? (body.prompt as number[]) : model.tokenize(promptText, { addBos: true, special: true });
    if (prompt.length === 0) {
      return reply.status(400).send(openAiError('the prompt is empty', 'invalid_request_error', 'prompt', 'invalid_value'));
    }
    const echo = body.echo ? (promptText ?? model.detokenize(prompt, { skipSpecial: true })) : '';
    const n = body.n ?? 1;
    const id = `cmpl-${crypto.randomUUID()}`;
    const now = Math.floor(Date.now() / 1000);
    const choice = (index: number, text: string, logprobs: object | null, finish: string | null) => ({ index, text, logprobs, finish_reason: finish });
    if (!body.stream) {
      const run = await serve(prompt, n, generate, signal, arrived);
      return {
        id,
        object: 'text_completion',
        created: now,
        model: modelId,
        choices: run.results.map((result, index) =>
          choice(index, echo + result.text, result.logprobs ? completionLogprobs(result.logprobs, echo.length) : null, finishReason(result.stopReason)),
        ),
        usage: usage(run),
      };
    }
    const chunk = (choices: object[], extra: object = {}) => ({ id, object: 'text_completion', created: now, model: modelId, choices, ...extra });
    return streamRun(reply, async (events) => {
      const offsets = new Array<number>(n).fill(echo.length);
      const run = await serve(prompt, n, generate, signal, arrived, {
        onStart: () => {
          if (echo) for (let i = 0; i < n; i++) events.send(chunk([choice(i, echo, null, null)]));
        },
        onToken: (index, token) => {
          if (!token.text && !token.logprobs) return;
          const logprobs = token.logprobs ? completionLogprobs([token.logprobs], offsets[index]) : null;
          offsets[index] += token.logprobs ? token.logprobs.token.length : 0;
          events.send(chunk([choice(index, token.text, logprobs, null)]));
        },
        onDone: (index, result) => events.send(chunk([choice(index, '', null, finishReason(result.stopReason))])),
      });
      if (body.stream_options?.include_usage) events.send(chunk([], { usage: usage(run) }));
    });
  });

  return app;
}

/**
 * Streams a run as server-sent events ending `data: [DONE]`. An error before the first event becomes a plain
 * OpenAI error reply (429, 503, 400…); after it, an error event in the stream.
 */
async function streamRun(reply: FastifyReply, run: (events: ReturnType<typeof eventStream>) => Promise<void>): Promise<void> {
  let events: ReturnType<typeof eventStream> | undefined;
  const lazy = {
    send(data: object | string) {
      events ??= eventStream(reply);
      events.send(data);
    },
    end() {
      events?.end();
    },
  };
  try {
    await run(lazy);
    lazy.send('[DONE]');
  } catch (error) {
    if (!events) throw error;
    const message = error instanceof Error ? error.message : String(error);
    events.send(openAiError(message, 'server_error', null, error instanceof SeedinferError ? error.code : null));
  } finally {
    lazy.end();
  }
}
