// The OpenAI-compatible server (src/server.ts) through the real `openai` npm client (v6), on loopback, with the
// default model: chat (plain and streamed), usage, stop, seed determinism, and OpenAI-shaped errors.
import test from 'ava';
import OpenAI from 'openai';
import type { AddressInfo } from 'node:net';
import { Model, createServer, ensureDefaultModel } from '../src/index.js';

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
  t.deepEqual(await health.json(), { status: 'ok' });
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

test("a client that aborts a stream ends its generation and its session's blocks return", async (t) => {
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
