// Serving throughput: aggregate decode tok/s of N concurrent greedy generations on one model, seedinfer next to
// node-llama-cpp (llama.cpp), same GGUF file, same prompts, same run.
//
//   npm run bench:serve -- [--model <file.gguf>] [--streams 1,2,4,8,16] [--tokens 128] [--runs 3] [--threads 2]
//                          [--engines seedinfer,node-llama-cpp]
//
// - seedinfer: `Promise.all` of N `generateText` calls on one model, each in its own session (what a TypeScript
//   server does; concurrent sessions batch their decode steps, crates/seedinfer-engine/src/batcher.rs).
// - node-llama-cpp 3.22.1 (bench/peers/node_modules, see bench/peers/README.md): one context with N sequences
//   (its own batching: evaluations of the sequences of one context share each `llama_decode`), flash attention
//   off, default batch size, greedy.
// - Each engine runs in its own child process, one after the other, per stream count: seedinfer, llama.cpp,
//   seedinfer, llama.cpp, ... (`--runs` times each, after a warm-up), so both see the same machine state.
// - Stream i's prompt is 32 fixed pseudo-random token ids (different per stream); it decodes `--tokens` tokens,
//   never stopping at an end-of-generation token. Aggregate tok/s = N × tokens / wall time from the first request
//   to the last completion (median of the runs). TTFT per stream = its request start to its first token (all
//   start together, so this includes waiting for the other streams' prefills); the median over streams and runs.
import { fork, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from './cli-args.js';

type Engine = 'seedinfer' | 'node-llama-cpp';

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}

interface RunRequest {
  streams: number;
  tokens: number;
  /** Only set up for this stream count. */
  prepare?: boolean;
}
interface RunResult {
  kind: 'result';
  wallMs: number;
  ttftMs: number[];
}
type ChildMessage = RunResult | { kind: 'ready'; description: string } | { kind: 'error'; message: string };

const PROMPT_TOKENS = 32;
const prompt = (stream: number) => Array.from({ length: PROMPT_TOKENS }, (_, t) => 100 + ((t * 37 + stream * 101) % 5000));

/** What a child engine does: N streams at once; `onFirst(i)` at stream i's first token. */
interface ChildEngine {
  description: string;
  /** Untimed set-up for a stream count (node-llama-cpp: a context with that many sequences). */
  prepare?(request: RunRequest): Promise<void>;
  run(request: RunRequest, onFirst: (stream: number) => void): Promise<void>;
}

async function seedinferChild(modelPath: string, threads: number): Promise<ChildEngine> {
  const { Model } = await import('../src/index.js');
  const model = await Model.load(modelPath, { threads });
  return {
    description: `seedinfer, ${model.info.computeFormat}, kernels ${model.info.kernelIsa}`,
    run: async ({ streams, tokens }, onFirst) => {
      const sessions = Array.from({ length: streams }, () => model.createSession({ contextSize: PROMPT_TOKENS + tokens + 16 }));
      await Promise.all(
        sessions.map((session, i) => {
          let first = true;
          return session.generateText(prompt(i), {
            maxTokens: tokens,
            temperature: 0,
            ignoreEos: true,
            onToken: () => {
              if (first) onFirst(i);
              first = false;
            },
          });
        }),
      );
      sessions.forEach((s) => s.dispose());
    },
  };
}

// The part of node-llama-cpp's API used here (bench/peers/node_modules, imported by a computed specifier).
interface LlamaSequence {
  evaluate(tokens: number[], options: { temperature: number; yieldEogToken: boolean }): AsyncGenerator<number>;
  clearHistory(): Promise<void>;
}
interface LlamaContext {
  batchSize: number;
  getSequence(): LlamaSequence;
  dispose(): Promise<void>;
}
interface NodeLlamaCpp {
  getLlama(options: { gpu: false; build: 'never'; maxThreads: number; logLevel: string }): Promise<{
    systemInfo: string;
    llamaCppRelease: { release: string };
    loadModel(options: { modelPath: string; gpuLayers: number }): Promise<{
      createContext(options: { contextSize: number; sequences: number; threads: number; flashAttention: boolean }): Promise<LlamaContext>;
    }>;
  }>;
  getModuleVersion(): Promise<string>;
  LlamaLogLevel: { error: string };
}

async function nodeLlamaCppChild(modelPath: string, threads: number): Promise<ChildEngine> {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const lib = (await import(path.join(here, 'peers', 'node_modules', 'node-llama-cpp', 'dist', 'index.js'))) as NodeLlamaCpp;
  const llama = await lib.getLlama({ gpu: false, build: 'never', maxThreads: threads, logLevel: lib.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const cpu = /CPU : (.*?)\s*\|?\s*$/m.exec(llama.systemInfo)?.[1] ?? llama.systemInfo.trim();
  let prepared: { context: LlamaContext; sequences: LlamaSequence[] } | undefined;
  return {
    description: `node-llama-cpp ${await lib.getModuleVersion()}, llama.cpp ${llama.llamaCppRelease.release}; ${cpu}`,
    prepare: async ({ streams, tokens }) => {
      await prepared?.context.dispose();
      const context = await model.createContext({
        contextSize: streams * (PROMPT_TOKENS + tokens + 16),
        sequences: streams,
        threads,
        flashAttention: false,
      });
      prepared = { context, sequences: Array.from({ length: streams }, () => context.getSequence()) };
    },
    run: async ({ tokens }, onFirst) => {
      const sequences = prepared?.sequences ?? [];
      await Promise.all(sequences.map((s) => s.clearHistory()));
      await Promise.all(
        sequences.map(async (sequence, i) => {
          let count = 0;
          for await (const _ of sequence.evaluate(prompt(i), { temperature: 0, yieldEogToken: true })) {
            if (count === 0) onFirst(i);
            if (++count >= tokens) break;
          }
        }),
      );
    },
  };
}

async function childMain(engine: Engine, modelPath: string, threads: number): Promise<void> {
  const send = (message: ChildMessage) => process.send?.(message);
  try {
    const child = await (engine === 'seedinfer' ? seedinferChild : nodeLlamaCppChild)(modelPath, threads);
    process.on('message', (request: RunRequest | 'exit') => {
      if (request === 'exit') process.exit(0);
      if (request.prepare) {
        (child.prepare?.(request) ?? Promise.resolve())
          .then(() => send({ kind: 'result', wallMs: 0, ttftMs: [] }))
          .catch((error: unknown) => send({ kind: 'error', message: String((error as Error)?.stack ?? error) }));
        return;
      }
      const ttft: number[] = new Array<number>(request.streams).fill(NaN);
      const start = performance.now();
      child
        .run(request, (i) => (ttft[i] = performance.now() - start))
        .then(() => send({ kind: 'result', wallMs: performance.now() - start, ttftMs: ttft }))
        .catch((error: unknown) => send({ kind: 'error', message: String((error as Error)?.stack ?? error) }));
    });
    send({ kind: 'ready', description: child.description });
  } catch (error) {
    send({ kind: 'error', message: String((error as Error)?.stack ?? error) });
  }
}

class Child {
  private readonly process: ChildProcess;
  private waiting: ((message: ChildMessage) => void) | undefined;
  readonly ready: Promise<string>;

  constructor(engine: Engine, modelPath: string, threads: number) {
    this.process = fork(fileURLToPath(import.meta.url), ['--child', engine, modelPath, String(threads)], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.process.on('message', (message: ChildMessage) => this.waiting?.(message));
    this.ready = this.next().then((m) => {
      if (m.kind !== 'ready') throw new Error(`${engine}: ${m.kind === 'error' ? m.message : 'unexpected message'}`);
      return m.description;
    });
  }

  private next(): Promise<ChildMessage> {
    return new Promise((resolve) => (this.waiting = resolve));
  }

  async run(request: RunRequest): Promise<RunResult> {
    const reply = this.next();
    this.process.send(request);
    const m = await reply;
    if (m.kind !== 'result') throw new Error(m.kind === 'error' ? m.message : 'unexpected message');
    return m;
  }

  stop(): void {
    this.process.send('exit');
  }
}

async function main(): Promise<void> {
  const { ensureDefaultModel } = await import('../src/index.js');
  const modelPath = option('model', '') || (await ensureDefaultModel());
  const streams = option('streams', '1,2,4,8,16').split(',').map(Number);
  const tokens = Number(option('tokens', '128'));
  const runs = Number(option('runs', '3'));
  const threads = Number(option('threads', String(Math.min(2, os.availableParallelism()))));
  const engines = option('engines', 'seedinfer,node-llama-cpp').split(',') as Engine[];
  const children = new Map(engines.map((e) => [e, new Child(e, modelPath, threads)]));
  const descriptions = await Promise.all([...children.values()].map((c) => c.ready));
  console.log(`${path.basename(modelPath)}, ${threads} threads, ${tokens} tokens per stream after a ${PROMPT_TOKENS}-token prompt, median of ${runs}`);
  console.log(`CPU: ${os.cpus()[0]?.model ?? 'unknown'}`);
  engines.forEach((e, i) => console.log(`${e}: ${descriptions[i]}`));
  const pause = () => new Promise((resolve) => setTimeout(resolve, 300));
  const header = engines.map((e) => `${e} aggregate tok/s | ${e} vs its 1 stream | ${e} TTFT ms`).join(' | ');
  console.log(`\n| streams | ${header}${engines.length === 2 ? ' | ours / theirs' : ''} |`);
  console.log(`|---:|${engines.map(() => '---:|---:|---:|').join('')}${engines.length === 2 ? '---:|' : ''}`);
  const single = new Map<Engine, number>();
  for (const n of streams) {
    const aggregate = new Map<Engine, number[]>(engines.map((e) => [e, []]));
    const ttft = new Map<Engine, number[]>(engines.map((e) => [e, []]));
    for (const child of children.values()) {
      await child.run({ streams: n, tokens, prepare: true });
      await child.run({ streams: n, tokens: Math.min(tokens, 8) }); // warm-up
    }
    for (let run = 0; run < runs; run++) {
      for (const [e, child] of children) {
        await pause();
        const r = await child.run({ streams: n, tokens });
        aggregate.get(e)?.push((n * tokens) / (r.wallMs / 1000));
        ttft.get(e)?.push(...r.ttftMs);
      }
    }
    const cells = engines.map((e) => {
      const a = median(aggregate.get(e) ?? []);
      if (n === streams[0]) single.set(e, a);
      return `${a.toFixed(1)} | ${(a / (single.get(e) ?? a)).toFixed(2)}× | ${median(ttft.get(e) ?? []).toFixed(0)}`;
    });
    const ratio = engines.length === 2 ? ` | ${(median(aggregate.get(engines[0]) ?? []) / median(aggregate.get(engines[1]) ?? [])).toFixed(2)}×` : '';
    console.log(`| ${n} | ${cells.join(' | ')}${ratio} |`);
  }
  for (const child of children.values()) child.stop();
}

if (process.argv[2] === '--child') {
  await childMain(process.argv[3] as Engine, process.argv[4], Number(process.argv[5]));
} else {
  await main();
}
