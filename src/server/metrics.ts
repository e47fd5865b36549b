// The server's Prometheus metrics (prom-client, one registry per server): requests by route and status, tokens in
// and out, queue depth and running sequences, decode batching, KV blocks in use, and per-request time to first
// token and decode speed.
import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import type { GenerationResult, Model } from '../../index.js';
import type { Admission } from './admission.js';

export interface ServerMetrics {
  registry: Registry;
  requests: Counter<'route' | 'status'>;
  /** Records one finished sequence; `ttftSeconds` counts from the request's arrival (queueing included). */
  observe(result: GenerationResult, usage: { promptTokens: number; cachedTokens: number; ttftSeconds: number | undefined }): void;
}

/** `model()` is the served model, or undefined while it loads. */
export function createMetrics(model: () => Model | undefined, admission: Admission): ServerMetrics {
  const registry = new Registry();
  const registers = [registry];
  const requests = new Counter({
    name: 'seedinfer_requests_total',
    help: 'HTTP requests answered, by route and status code',
    labelNames: ['route', 'status'] as const,
    registers,
  });
  const promptTokens = new Counter({ name: 'seedinfer_prompt_tokens_total', help: 'Prompt tokens of finished requests', registers });
  const cachedTokens = new Counter({
    name: 'seedinfer_prompt_cached_tokens_total',
    help: 'Prompt tokens reused from the prefix cache instead of computed',
    registers,
  });
  const generatedTokens = new Counter({ name: 'seedinfer_generated_tokens_total', help: 'Tokens generated', registers });
  new Gauge({
    name: 'seedinfer_queue_depth',
    help: 'Requests waiting for room (sequences or KV budget)',
    registers,
    collect() {
      this.set(admission.queued);
    },
  });
  new Gauge({
    name: 'seedinfer_running_sequences',
    help: 'Sequences generating now',
    registers,
    collect() {
      this.set(admission.active);
    },
  });
  new Gauge({
    name: 'seedinfer_kv_blocks_used',
    help: 'KV-cache blocks allocated (sessions and prefix cache)',
    registers,
    collect() {
      const m = model();
      if (m) this.set(m.cacheStats().blocksUsed);
    },
  });
  new Gauge({
    name: 'seedinfer_kv_blocks_capacity',
    help: 'KV-cache blocks the budget holds',
    registers,
    collect() {
      this.set(admission.capacityBlocks);
    },
  });
  // The batcher counts since the model loaded; these counters follow them.
  const batchCounters = [
    ['passes', 'seedinfer_decode_passes_total', 'Batched forward passes of concurrent generations (steps / passes = mean decode batch)'],
    ['steps', 'seedinfer_decode_steps_total', 'Decode steps computed by batched passes'],
    ['promptTokens', 'seedinfer_batched_prompt_tokens_total', 'Prompt tokens fed through batched passes (chunked prefill)'],
  ] as const;
  for (const [field, name, help] of batchCounters) {
    let seen = 0;
    new Counter({
      name,
      help,
      registers,
      collect() {
        const now = model()?.batchStats()[field] ?? seen;
        this.inc(Math.max(0, now - seen));
        seen = now;
      },
    });
  }
  const ttft = new Histogram({
    name: 'seedinfer_time_to_first_token_seconds',
    help: 'Time from the start of a sequence to its first token',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers,
  });
  const decodeSpeed = new Histogram({
    name: 'seedinfer_decode_tokens_per_second',
    help: 'Decode speed of each finished sequence',
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
    registers,
  });
  return {
    registry,
    requests,
    observe(result, usage) {
      promptTokens.inc(usage.promptTokens);
      cachedTokens.inc(usage.cachedTokens);
      generatedTokens.inc(result.tokenIds.length);
      if (usage.ttftSeconds !== undefined) ttft.observe(usage.ttftSeconds);
      if (result.timings.decodeTokensPerSecond > 0) decodeSpeed.observe(result.timings.decodeTokensPerSecond);
    },
  };
}
