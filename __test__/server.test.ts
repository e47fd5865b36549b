// The OpenAI-compatible server (src/server.ts) through the real `openai` npm client (v6), on loopback, with the
// default model: chat and completions (plain and streamed), usage, stop, seed determinism, logprobs, n, penalties,
// metrics, admission (429 with Retry-After), and OpenAI-shaped errors.
import test from 'ava';
import OpenAI from 'openai';
import type { AddressInfo } from 'node:net';
import { Model, SeedinferError, createServer, ensureDefaultModel } from '../src/index.js';

const MODEL_ID = 'smollm2';

const serverPromise = (async () => {
  const model = await Model.load(await ensureDefaultModel(), { threads: 2 });
  const app = createServer(model, { modelId: MODEL_ID, contextSize: 1024, bodyLimit: 64 * 1024 });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'unused', maxRetries: 0 });
  return { app, client, port, model };
})();

test.after.always(async () => {
  const { app } = await serverPromise;
  await app.close();
});

const question = [
  { role: 'system' as const, content: 'You are a helpful assistant.' },
  { role: 'user' as const, content: 'What is the capital of France?' },
];

test('GET /v1/models and /health', async (t) => {
  const { client, port } = await serverPromise;
  const models = await client.models.list();
  t.deepEqual(
    models.data.map((m) => m.id),
    [MODEL_ID],
  );
  const health = await fetch(`http://127.0.0.1:${port}/health`);
  t.like(await health.json(), { status: 'ok', queued: 0 });
});

test('chat completion: the answer, finish reason and usage', async (t) => {
  const { client } = await serverPromise;
  const completion = await client.chat.completions.create({ model: MODEL_ID, messages: question, temperature: 0, max_tokens: 40 });
  const choice = completion.choices[0];
  t.is(choice.message.role, 'assistant');
  t.regex(choice.message.content ?? '', /Paris/);
  t.is(choice.finish_reason, 'stop');
  t.true(completion.usage!.prompt_tokens > 5);
  t.is(completion.usage!.total_tokens, completion.usage!.prompt_tokens + completion.usage!.completion_tokens);
});

test('streamed chat completion: chunks add up to the plain answer, then usage', async (t) => {
  const { client } = await serverPromise;
  const plain = await client.chat.completions.create({ model: MODEL_ID, messages: question, temperature: 0, max_tokens: 40 });
  const stream = await client.chat.completions.create({
    model: MODEL_ID,
    messages: question,
    temperature: 0,
    max_tokens: 40,
    stream: true,
    stream_options: { include_usage: true },
  });
  let text = '';
  let finish: string | null = null;
  let usage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
    usage = chunk.usage ?? usage;
  }
  t.is(text, plain.choices[0].message.content ?? '');
  t.is(finish, 'stop');
  t.deepEqual(usage?.completion_tokens, plain.usage?.completion_tokens);
});

test('max_tokens ends with finish_reason length; stop strings cut the text; a seed repeats a sample', async (t) => {
  const { client } = await serverPromise;
  const short = await client.chat.completions.create({ model: MODEL_ID, messages: question, temperature: 0, max_tokens: 3 });
  t.is(short.choices[0].finish_reason, 'length');
  t.is(short.usage!.completion_tokens, 3);
  const stopped = await client.chat.completions.create({ model: MODEL_ID, messages: question, temperature: 0, max_tokens: 40, stop: ['Paris'] });
  t.false((stopped.choices[0].message.content ?? '').includes('Paris'));
  const sample = () =>
    client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'user', content: 'Tell me a story.' }], temperature: 1, seed: 42, max_tokens: 16 });
  const [a, b] = [await sample(), await sample()];
  t.is(a.choices[0].message.content, b.choices[0].message.content);
});

test('errors have OpenAI shape and status: 400 naming the parameter, 404 for another model, 413 for a big body', async (t) => {
  const { client, port } = await serverPromise;
  const bad = await t.throwsAsync(client.chat.completions.create({ model: MODEL_ID, messages: question, temperature: 5 }));
  t.true(bad instanceof OpenAI.BadRequestError, String(bad));
  t.is((bad as InstanceType<typeof OpenAI.BadRequestError>).param, 'temperature');
  const missing = await t.throwsAsync(client.chat.completions.create({ model: 'gpt-4o', messages: question }));
  t.true(missing instanceof OpenAI.NotFoundError, String(missing));
  t.is((missing as InstanceType<typeof OpenAI.NotFoundError>).code, 'model_not_found');
  const big = await fetch(`http://127.0.0.1:${port}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ model: MODEL_ID, messages: [{ role: 'user', content: 'x'.repeat(100 * 1024) }] }),
  });
  t.is(big.status, 413);
  t.truthy(((await big.json()) as { error?: { message?: string } }).error?.message);
});

test.serial("a client that aborts a stream ends its generation and its session's blocks return", async (t) => {
  const { client, model } = await serverPromise;
  const controller = new AbortController();
  const stream = await client.chat.completions.create(
    { model: MODEL_ID, messages: [{ role: 'user', content: 'Write a long essay about the sea.' }], max_tokens: 900, stream: true },
    { signal: controller.signal },
  );
  let chunks = 0;
  try {
    for await (const _ of stream) {
      if (++chunks === 3) controller.abort();
    }
  } catch {
    // The client ends the iteration (or rejects it) once aborted.
  }
  t.true(chunks >= 3 && chunks < 50, `${chunks} chunks`);
  // The server notices the closed connection, aborts within a token and disposes of the session: well before the
  // 900 tokens asked for could have been generated (several seconds here).
  const deadline = Date.now() + 1500;
  let held = Infinity;
  while (Date.now() < deadline) {
    const stats = model.cacheStats();
    held = stats.blocksUsed - stats.blocksCached;
    if (held === 0) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  t.is(held, 0);
});

test('with apiKey, /v1 requests need the Bearer key (401 in OpenAI shape otherwise); /health stays open', async (t) => {
  const { model } = await serverPromise;
  const app = createServer(model, { modelId: MODEL_ID, apiKey: 'sk-local' });
  await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const { port } = app.server.address() as AddressInfo;
    const baseURL = `http://127.0.0.1:${port}/v1`;
    const wrong = await t.throwsAsync(new OpenAI({ baseURL, apiKey: 'sk-wrong', maxRetries: 0 }).models.list());
    t.true(wrong instanceof OpenAI.AuthenticationError, String(wrong));
    t.is((wrong as InstanceType<typeof OpenAI.AuthenticationError>).code, 'invalid_api_key');
    const models = await new OpenAI({ baseURL, apiKey: 'sk-local', maxRetries: 0 }).models.list();
    t.is(models.data[0].id, MODEL_ID);
    t.is((await fetch(`http://127.0.0.1:${port}/health`)).status, 200);
  } finally {
    await app.close();
  }
});

test('completions: plain, streamed, echo and logprobs agree with each other and with the engine', async (t) => {
  const { client, model } = await serverPromise;
  const prompt = 'The capital of France is';
  const plain = await client.completions.create({ model: MODEL_ID, prompt, temperature: 0, max_tokens: 12, logprobs: 3 });
  const direct = await model.createSession().generateText(prompt, { maxTokens: 12, temperature: 0, logprobs: true, topLogprobs: 3 });
  t.is(plain.object, 'text_completion');
  t.is(plain.choices[0].text, direct.text);
  t.is(plain.usage?.prompt_tokens, model.tokenize(prompt).length);
  t.is(plain.usage?.completion_tokens, direct.tokenIds.length);
  const lp = plain.choices[0].logprobs!;
  t.deepEqual(lp.token_logprobs, direct.logprobs!.map((l) => l.logprob));
  t.deepEqual(lp.tokens, direct.logprobs!.map((l) => l.token));
  t.is(Object.keys(lp.top_logprobs![0]).length, 3);
  t.is(lp.text_offset![1], lp.tokens![0].length);
  const stream = await client.completions.create({ model: MODEL_ID, prompt, temperature: 0, max_tokens: 12, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish: string | null = null;
  let streamedUsage: OpenAI.CompletionUsage | undefined;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
    streamedUsage = chunk.usage ?? streamedUsage;
  }
  t.is(text, plain.choices[0].text);
  t.is(finish, plain.choices[0].finish_reason);
  t.is(streamedUsage?.completion_tokens, plain.usage?.completion_tokens);
  const echoed = await client.completions.create({ model: MODEL_ID, prompt, temperature: 0, max_tokens: 12, echo: true });
  t.is(echoed.choices[0].text, prompt + plain.choices[0].text);
  const ids = await client.completions.create({ model: MODEL_ID, prompt: model.tokenize(prompt), temperature: 0, max_tokens: 12 });
  t.is(ids.choices[0].text, plain.choices[0].text);
  const fim = await t.throwsAsync(client.completions.create({ model: MODEL_ID, prompt, suffix: 'Paris.' }));
  t.is((fim as InstanceType<typeof OpenAI.BadRequestError>).param, 'suffix');
});

test('chat logprobs: streamed and plain carry the same per-token logprobs, greedy picks the top one', async (t) => {
  const { client } = await serverPromise;
  const request = { model: MODEL_ID, messages: question, temperature: 0, max_tokens: 10, logprobs: true, top_logprobs: 2 };
  const plain = await client.chat.completions.create(request);
  const content = plain.choices[0].logprobs?.content ?? [];
  t.is(content.length, plain.usage!.completion_tokens);
  for (const entry of content) {
    t.is(entry.top_logprobs.length, 2);
    t.is(entry.top_logprobs[0].token, entry.token);
    t.is(entry.top_logprobs[0].logprob, entry.logprob);
    t.deepEqual(entry.bytes, [...Buffer.from(entry.token)]);
  }
  const streamed: OpenAI.Chat.ChatCompletionTokenLogprob[] = [];
  for await (const chunk of await client.chat.completions.create({ ...request, stream: true })) {
    streamed.push(...(chunk.choices[0]?.logprobs?.content ?? []));
  }
  t.deepEqual(streamed, content);
  const orphan = await t.throwsAsync(client.chat.completions.create({ model: MODEL_ID, messages: question, top_logprobs: 2 }));
  t.is((orphan as InstanceType<typeof OpenAI.BadRequestError>).param, 'top_logprobs');
});

test('n: choices fork one prefill; greedy choices equal the single answer, seeded ones differ and repeat', async (t) => {
  const { client } = await serverPromise;
  const single = await client.chat.completions.create({ model: MODEL_ID, messages: question, temperature: 0, max_tokens: 20 });
  const greedy = await client.chat.completions.create({ model: MODEL_ID, messages: question, temperature: 0, max_tokens: 20, n: 3 });
  t.deepEqual(greedy.choices.map((c) => c.index), [0, 1, 2]);
  for (const c of greedy.choices) t.is(c.message.content, single.choices[0].message.content);
  t.is(greedy.usage?.prompt_tokens, single.usage?.prompt_tokens);
  t.is(greedy.usage?.completion_tokens, 3 * single.usage!.completion_tokens);
  const story = { model: MODEL_ID, messages: [{ role: 'user' as const, content: 'Tell me a story.' }], temperature: 1, seed: 7, max_tokens: 16, n: 3 };
  const [a, b] = [await client.chat.completions.create(story), await client.chat.completions.create(story)];
  t.deepEqual(a.choices.map((c) => c.message.content), b.choices.map((c) => c.message.content));
  t.true(new Set(a.choices.map((c) => c.message.content)).size > 1, 'seeded choices differ from each other');
  const texts = ['', '', ''];
  const finishes: (string | null)[] = [null, null, null];
  for await (const chunk of await client.chat.completions.create({ ...story, stream: true })) {
    for (const c of chunk.choices) {
      texts[c.index] += c.delta?.content ?? '';
      finishes[c.index] = c.finish_reason ?? finishes[c.index];
    }
  }
  t.deepEqual(texts, a.choices.map((c) => c.message.content));
  t.deepEqual(finishes, a.choices.map((c) => c.finish_reason));
});

test('presence and frequency penalties reach the sampler', async (t) => {
  const { client } = await serverPromise;
  const ask = (extra: object) =>
    client.completions.create({ model: MODEL_ID, prompt: 'one one one one one one one', temperature: 0, max_tokens: 24, ...extra });
  const plain = await ask({});
  t.not((await ask({ frequency_penalty: 2 })).choices[0].text, plain.choices[0].text);
  t.not((await ask({ presence_penalty: 2 })).choices[0].text, plain.choices[0].text);
  t.is((await ask({ presence_penalty: 0, frequency_penalty: 0 })).choices[0].text, plain.choices[0].text);
});

test('admission: a full queue answers 429 with Retry-After; n beyond the sequence limit is a 400', async (t) => {
  const { model } = await serverPromise;
  const app = createServer(model, { modelId: MODEL_ID, maxConcurrentSequences: 1, maxQueuedRequests: 1 });
  await app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const { port } = app.server.address() as AddressInfo;
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'unused', maxRetries: 0 });
    const long = { model: MODEL_ID, prompt: 'Once upon a time', max_tokens: 200, temperature: 0 };
    const running = client.completions.create(long);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const waiting = client.completions.create(long);
    await new Promise((resolve) => setTimeout(resolve, 50));
    const health = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { running: number; queued: number };
    t.like(health, { running: 1, queued: 1 });
    const refused = await fetch(`http://127.0.0.1:${port}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(long),
    });
    t.is(refused.status, 429);
    t.is(refused.headers.get('retry-after'), '1');
    t.like(await refused.json(), { error: { type: 'rate_limit_exceeded', code: 'QUEUE_FULL' } });
    const [first, second] = await Promise.all([running, waiting]);
    t.is(first.choices[0].text, second.choices[0].text, 'the queued request ran after the first, unchanged');
    const tooMany = await t.throwsAsync(client.completions.create({ ...long, n: 2 }));
    t.true(tooMany instanceof OpenAI.BadRequestError, String(tooMany));
  } finally {
    await app.close();
  }
});

test('GET /metrics: Prometheus text with requests, tokens, batching, KV blocks and latency histograms', async (t) => {
  const { client, port } = await serverPromise;
  await Promise.all([1, 2, 3].map((i) => client.completions.create({ model: MODEL_ID, prompt: `Count to ${i}:`, max_tokens: 8, temperature: 0 })));
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  t.is(response.status, 200);
  t.regex(response.headers.get('content-type') ?? '', /text\/plain/);
  const text = await response.text();
  const value = (pattern: string) => Number(new RegExp(`^${pattern} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  t.true(value('seedinfer_requests_total\\{route="/v1/completions",status="200"\\}') >= 3);
  t.true(value('seedinfer_generated_tokens_total') >= 24);
  t.true(value('seedinfer_prompt_tokens_total') > 0);
  t.true(value('seedinfer_decode_steps_total') >= value('seedinfer_decode_passes_total'));
  t.true(value('seedinfer_time_to_first_token_seconds_count') >= 3);
  t.true(value('seedinfer_kv_blocks_capacity') > 0);
  t.false(Number.isNaN(value('seedinfer_batched_prompt_tokens_total')));
  t.false(Number.isNaN(value('seedinfer_queue_depth')));
});

test('given a model still loading, the server answers 503 with Retry-After (health: loading), then serves; a failed load stays 503', async (t) => {
  const { model } = await serverPromise;
  let resolve!: (m: typeof model) => void;
  const app = createServer(new Promise((r) => (resolve = r)), { modelId: MODEL_ID });
  try {
    const health = await app.inject({ method: 'GET', url: '/health' });
    t.is(health.statusCode, 503);
    t.deepEqual(health.json(), { status: 'loading' });
    const models = await app.inject({ method: 'GET', url: '/v1/models' });
    t.is(models.statusCode, 503);
    t.is(models.headers['retry-after'], '1');
    t.like(models.json(), { error: { code: 'MODEL_LOADING', type: 'server_error' } });
    resolve(model);
    await new Promise((r) => setImmediate(r));
    t.is((await app.inject({ method: 'GET', url: '/health' })).statusCode, 200);
    t.is((await app.inject({ method: 'GET', url: '/v1/models' })).json<{ data: { id: string }[] }>().data[0].id, MODEL_ID);
  } finally {
    await app.close();
  }
  const failed = createServer(Promise.reject(new SeedinferError('MODEL_NOT_FOUND', 'no such file')), { modelId: MODEL_ID });
  try {
    await new Promise((r) => setImmediate(r));
    t.like((await failed.inject({ method: 'GET', url: '/health' })).json(), { status: 'failed', code: 'MODEL_NOT_FOUND' });
    t.like((await failed.inject({ method: 'POST', url: '/v1/completions', payload: { model: MODEL_ID, prompt: 'x' } })).json(), {
      error: { code: 'MODEL_LOAD_FAILED' },
    });
  } finally {
    await failed.close();
  }
});

test('usage.prompt_tokens_details.cached_tokens counts a prompt prefix reused from the prefix cache', async (t) => {
  const { client } = await serverPromise;
  const system = 'You are a meticulous assistant. Answer in one short sentence, and never add anything else. '.repeat(3);
  const ask = (q: string) => client.chat.completions.create({ model: MODEL_ID, messages: [{ role: 'system', content: system }, { role: 'user', content: q }], temperature: 0, max_tokens: 4 });
  await ask('What is the capital of France?');
  const again = await ask('What is the capital of Spain?');
  t.true((again.usage?.prompt_tokens_details?.cached_tokens ?? 0) >= 32, JSON.stringify(again.usage));
});

test('response_format: json_schema (plain and streamed), json_object, a bad schema is a 400', async (t) => {
  const { client } = await serverPromise;
  const schema = {
    type: 'object',
    properties: { city: { type: 'string', maxLength: 30 }, country: { type: 'string', maxLength: 30 }, population: { type: 'integer', minimum: 0, maximum: 100000000 } },
    required: ['city', 'country', 'population'],
  };
  const reply = await client.chat.completions.create({
    model: MODEL_ID,
    messages: question,
    seed: 3,
    response_format: { type: 'json_schema', json_schema: { name: 'city', schema, strict: true } },
  });
  const parsed = JSON.parse(reply.choices[0].message.content ?? '') as Record<string, unknown>;
  t.deepEqual(Object.keys(parsed).sort(), ['city', 'country', 'population']);
  t.true(Number.isInteger(parsed.population));
  t.is(reply.choices[0].finish_reason, 'stop');

  const stream = await client.chat.completions.create({
    model: MODEL_ID,
    messages: question,
    seed: 3,
    stream: true,
    response_format: { type: 'json_schema', json_schema: { name: 'city', schema, strict: true } },
  });
  let streamed = '';
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? '';
  t.is(streamed, reply.choices[0].message.content ?? '');

  const object = await client.chat.completions.create({ model: MODEL_ID, messages: question, temperature: 0, max_tokens: 200, response_format: { type: 'json_object' } });
  if (object.choices[0].finish_reason === 'stop') t.is(typeof JSON.parse(object.choices[0].message.content ?? ''), 'object');

  const bad = await t.throwsAsync(
    client.chat.completions.create({
      model: MODEL_ID,
      messages: question,
      response_format: { type: 'json_schema', json_schema: { name: 'bad', schema: { type: 'no-such-type' }, strict: true } },
    }),
  );
  t.is((bad as InstanceType<typeof OpenAI.APIError>).status, 400);
  t.is((bad as InstanceType<typeof OpenAI.APIError>).code, 'INVALID_OPTION');
  // Streamed too: the schema fails to compile before any token, so the reply is a plain 400.
  const badStream = await t.throwsAsync(
    client.chat.completions.create({
      model: MODEL_ID,
      messages: question,
      stream: true,
      response_format: { type: 'regex', pattern: '(unclosed' } as never,
    }),
  );
  t.is((badStream as InstanceType<typeof OpenAI.APIError>).status, 400);
});

test('tools: a required call, streamed as a tool_calls delta, then the answer after its result (round trip)', async (t) => {
  const { client } = await serverPromise;
  const tools = [
    {
      type: 'function' as const,
      function: {
        name: 'get_weather',
        description: 'The current weather in a city',
        parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 30 } }, required: ['city'] },
      },
    },
  ];
  const messages = [{ role: 'user' as const, content: 'What is the weather in Paris?' }];
  const reply = await client.chat.completions.create({ model: MODEL_ID, messages, tools, tool_choice: 'required', seed: 1 });
  const choice = reply.choices[0];
  t.is(choice.finish_reason, 'tool_calls');
  t.is(choice.message.content, null);
  const call = choice.message.tool_calls?.[0];
  t.is(call?.type, 'function');
  if (call?.type !== 'function') return;
  t.is(call.function.name, 'get_weather');
  t.is(typeof JSON.parse(call.function.arguments).city, 'string');
  t.regex(call.id, /^call_/);

  // Streamed: no content deltas, one tool_calls delta with the same function and arguments.
  const stream = await client.chat.completions.create({ model: MODEL_ID, messages, tools, tool_choice: { type: 'function', function: { name: 'get_weather' } }, seed: 1, stream: true });
  let content = '';
  const deltas: { name?: string; arguments?: string }[] = [];
  let finish: string | null = null;
  for await (const chunk of stream) {
    const c = chunk.choices[0];
    content += c?.delta?.content ?? '';
    for (const d of c?.delta?.tool_calls ?? []) deltas.push({ name: d.function?.name, arguments: d.function?.arguments });
    finish = c?.finish_reason ?? finish;
  }
  t.is(content, '');
  t.is(finish, 'tool_calls');
  t.deepEqual(deltas, [{ name: 'get_weather', arguments: call.function.arguments }]);

  // The call and its result go back; the model answers (text or another call), and a bad arguments string is a 400.
  const followUp = await client.chat.completions.create({
    model: MODEL_ID,
    messages: [
      ...messages,
      { role: 'assistant', content: null, tool_calls: [call] },
      { role: 'tool', tool_call_id: call.id, content: JSON.stringify({ celsius: 21, sky: 'clear' }) },
    ],
    tools,
    temperature: 0,
    max_tokens: 40,
  });
  t.true(followUp.usage!.prompt_tokens > reply.usage!.prompt_tokens);
  t.true(typeof followUp.choices[0].message.content === 'string' || (followUp.choices[0].message.tool_calls?.length ?? 0) > 0);
  const bad = await t.throwsAsync(
    client.chat.completions.create({
      model: MODEL_ID,
      messages: [...messages, { role: 'assistant', content: null, tool_calls: [{ ...call, function: { ...call.function, arguments: 'not json' } }] }],
      tools,
    }),
  );
  t.is((bad as InstanceType<typeof OpenAI.APIError>).status, 400);
});
