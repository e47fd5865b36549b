// A bounded load test of the OpenAI-compatible server on loopback: `clients` concurrent clients send `requests`
// requests in all, a mix of streamed and plain chat and text completions, through the `openai` npm client. A 429
// (queue full) is deliberate back-pressure: the client waits `Retry-After` and sends the request again. Any other
// error counts as a failure.
//
//   npm run bench:load -- [--clients 32] [--requests 200] [--max-tokens 24] [--parallel 8] [--max-queue 16]
//                         [--max-batch-tokens 32]
//
// Reports p50/p99 time to first token (streamed requests: request sent to first content chunk, queueing
// included), p50/p99 request latency, aggregate generated tokens/s over the whole run, the 429s, and whether
// every session and KV block came back. `__test__/load.test.ts` runs it and checks the outcome.
import OpenAI from 'openai';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Model } from '../index.js';

export interface LoadOptions {
  clients: number;
  requests: number;
  maxTokens: number;
  /** Server limits: sequences at once and requests waiting. */
  parallel: number;
  maxQueue: number;
}

export interface LoadReport {
  options: LoadOptions;
  completed: number;
  failures: string[];
  /** 429s answered (each retried). */
  rateLimited: number;
  seconds: number;
  generatedTokens: number;
  tokensPerSecond: number;
  ttftMs: { p50: number; p99: number };
  latencyMs: { p50: number; p99: number };
  /** After the run: KV blocks still held by sessions, and the server's running and queued counts. */
  leakedBlocks: number;
  running: number;
  queued: number;
}

const percentile = (values: number[], p: number) => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
};

const TOPICS = ['the sea', 'a robot', 'Paris', 'winter', 'a lost key', 'the moon', 'coffee', 'trains'];

export async function runLoad(model: Model, options: LoadOptions): Promise<LoadReport> {
  const { createServer } = await import('../src/index.js');
  const MODEL_ID = 'load';
  const app = createServer(model, {
    modelId: MODEL_ID,
    contextSize: 512,
    maxConcurrentSequences: options.parallel,
    maxQueuedRequests: options.maxQueue,
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const { port } = app.server.address() as AddressInfo;
  const client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: 'unused', maxRetries: 0 });
  const failures: string[] = [];
  const ttft: number[] = [];
  const latency: number[] = [];
  let rateLimited = 0;
  let generated = 0;
  let next = 0;

  /** Request `i`: which endpoint and whether it streams follow from i. */
  async function once(i: number): Promise<void> {
    const topic = TOPICS[i % TOPICS.length];
    const common = { model: MODEL_ID, max_tokens: options.maxTokens, temperature: 0.7, seed: i };
    const sent = performance.now();
    switch (i % 4) {
      case 0: {
        const stream = await client.chat.completions.create({
          ...common,
          messages: [{ role: 'user', content: `Write a short poem about ${topic}.` }],
          stream: true,
          stream_options: { include_usage: true },
        });
        let first = true;
        for await (const chunk of stream) {
          if (first && chunk.choices[0]?.delta?.content) {
            ttft.push(performance.now() - sent);
            first = false;
          }
          generated += chunk.usage?.completion_tokens ?? 0;
        }
        break;
      }
      case 1: {
        const reply = await client.chat.completions.create({ ...common, messages: [{ role: 'user', content: `Tell me about ${topic}.` }] });
        generated += reply.usage?.completion_tokens ?? 0;
        break;
      }
      case 2: {
        const stream = await client.completions.create({
          ...common,
          prompt: `A story about ${topic}: Once upon a time`,
          stream: true,
          stream_options: { include_usage: true },
        });
        let first = true;
        for await (const chunk of stream) {
          if (first && chunk.choices[0]?.text) {
            ttft.push(performance.now() - sent);
            first = false;
          }
          generated += chunk.usage?.completion_tokens ?? 0;
        }
        break;
      }
      default: {
        const reply = await client.completions.create({ ...common, prompt: `Facts about ${topic}:`, n: 2 });
        generated += reply.usage?.completion_tokens ?? 0;
      }
    }
    latency.push(performance.now() - sent);
  }

  async function worker(): Promise<void> {
    for (let i = next++; i < options.requests; i = next++) {
      for (;;) {
        try {
          await once(i);
          break;
        } catch (error) {
          if (error instanceof OpenAI.RateLimitError) {
            rateLimited++;
            const after = Number(error.headers?.get?.('retry-after') ?? 1);
            await new Promise((resolve) => setTimeout(resolve, after * 1000 * (0.5 + Math.random())));
            continue;
          }
          failures.push(`request ${i}: ${String(error)}`);
          break;
        }
      }
    }
  }

  const started = performance.now();
  await Promise.all(Array.from({ length: options.clients }, () => worker()));
  const seconds = (performance.now() - started) / 1000;
  const health = (await (await fetch(`http://127.0.0.1:${port}/health`)).json()) as { running: number; queued: number };
  await app.close();
  const stats = model.cacheStats();
  return {
    options,
    completed: latency.length,
    failures,
    rateLimited,
    seconds,
    generatedTokens: generated,
    tokensPerSecond: generated / seconds,
    ttftMs: { p50: percentile(ttft, 50), p99: percentile(ttft, 99) },
    latencyMs: { p50: percentile(latency, 50), p99: percentile(latency, 99) },
    leakedBlocks: stats.blocksUsed - stats.blocksCached,
    running: health.running,
    queued: health.queued,
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const option = (name: string, fallback: number) => {
    const i = process.argv.indexOf(`--${name}`);
    return i >= 0 ? Number(process.argv[i + 1]) : fallback;
  };
  const os = await import('node:os');
  const { Model, ensureDefaultModel } = await import('../src/index.js');
  const maxBatchTokens = option('max-batch-tokens', 0) || undefined;
  const model = await Model.load(await ensureDefaultModel(), { threads: Math.min(2, os.availableParallelism()), maxBatchTokens });
  const report = await runLoad(model, {
    clients: option('clients', 32),
    requests: option('requests', 200),
    maxTokens: option('max-tokens', 24),
    parallel: option('parallel', 8),
    maxQueue: option('max-queue', 16),
  });
  console.log(`CPU: ${os.cpus()[0]?.model ?? 'unknown'}, default model, 2 threads`);
  console.log(JSON.stringify(report, null, 2));
  process.exit(report.failures.length === 0 && report.leakedBlocks === 0 ? 0 : 1);
}
