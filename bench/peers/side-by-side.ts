// seedinfer and llama.cpp side by side on the same GGUF files and the same token ids: prefill and decode tokens/s,
// time to first token and peak RSS, plus the decode bound set by read bandwidth. Two peers: node-llama-cpp 3.22.1
// (its prebuilt llama.cpp) and, when installed, PyPI llama-cpp-python (the newest llama.cpp, built natively here).
//
//   npm run bench:peers                          # markdown tables with ratios ours/theirs
//   npm run -s bench:peers -- --json             # only a JSON array of rows on stdout (-s: no npm banner)
//   npm run bench:peers -- --quick               # one small configuration (smoke test)
//   options: --models q4_0,q8_0,q4_1 --prompts 128,512,2048 --threads 1,2 --runs 5 --decode 128
//   --peers node-llama-cpp,llama-cpp-python (default: both, the second when its Python exists)
//   --python <python with llama-cpp-python> (default $SEEDINFER_PEER_PYTHON, else bench/peers/.venv/bin/python)
//   --models also takes q4_k, q5_k, q6_k (synthetic K-quant copies) and paths of GGUF files (e.g. a Q4_K_M file
//   written by llama.cpp's quantiser), keyed by their file name.
//
// Needs node-llama-cpp in bench/peers/node_modules (see bench/peers/README.md) and the built addon (npm run build);
// llama-cpp-python in bench/peers/.venv (bench/peers/README.md) for the second peer.
//
// Method:
// - Models: q4_0 and q8_0 are synthetic random-weight copies of the default model (SmolLM2-135M-Instruct, same
//   shape and tokenizer; written once by `writeSyntheticModel` into `<cache>/synthetic/`); q4_1 is the real
//   default model file. The speed of a forward pass does not depend on the weights' values.
// - Each (model, threads, prompt length) gets two fresh child processes, one per engine. Each child loads the model
//   once with that many threads and holds one context of prompt + decode + 16 tokens, cleared before every run.
//   The parent asks for one warm-up run from each, then `--runs` measured runs alternating seedinfer, llama.cpp,
//   seedinfer, llama.cpp, ..., with a short pause between runs so the idle engine's threads go to sleep.
// - A run feeds the same fixed pseudo-random token ids to both (no tokenizer) and decodes greedily until
//   `--decode` tokens, never stopping at an end-of-generation token (ours: `ignoreEos`; llama.cpp: `yieldEogToken`
//   on `sequence.evaluate`, taking tokens until enough). Ours runs through the native session (what the public
//   `Session` wraps) so that every token is seen, including those that complete no text.
// - Both are timed identically in the child's JS thread: TTFT = request start to first token; prefill tokens/s =
//   prompt tokens / TTFT; decode tokens/s = (decoded tokens - 1) / (last token time - first token time). Each figure
//   is the median over the measured runs. Peak RSS is the child's `process.resourceUsage().maxRSS` at the end.
// - llama.cpp: `getLlama({ gpu: false, build: 'never', maxThreads })`, flash attention off, default batch size
//   (min(context, 512)), greedy (`temperature: 0`), as bench/peers/make-reference.mjs uses it.
// - llama-cpp-python: a Python child (`llama-cpp-python-child.py`, JSON lines on stdin/stdout instead of Node IPC),
//   the same settings (n_batch = n_ubatch = min(context, 512), flash attention off, greedy `Llama.generate`),
//   timed the same way in its own process; llama.cpp's own counters (`llama_perf_context`) are shown beside it.
//   Its peak RSS is a Python process's, the others' a Node process's (each includes its runtime).
// - Decode bound: `probeLimits` measures read bandwidth in this process for each thread count, in the same run; a
//   decoded token reads every weight in the file once (with tied embeddings token_embd is the output matrix; an
//   untied token_embd is read one row per token, so it is left out); bound = bandwidth / those bytes.
// - The first measured run's generated ids of both engines are compared ("same tokens"): a check that both ran the
//   same model, not a pass/fail (greedy near-ties may differ).
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

type Engine = 'seedinfer' | 'node-llama-cpp' | 'llama-cpp-python';
type Peer = Exclude<Engine, 'seedinfer'>;
const PEERS: Peer[] = ['node-llama-cpp', 'llama-cpp-python'];
/** A synthetic format, `q4_1` (the real default model), or a GGUF file's name. */
type ModelKey = string;
const SYNTHETIC_FORMATS = ['q4_0', 'q8_0', 'q4_k', 'q5_k', 'q6_k'] as const;

interface Row {
  engine: Engine;
  model: string;
  format: ModelKey;
  threads: number;
  promptTokens: number;
  decodeTokens: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
  ttftMs: number;
  peakRssBytes: number;
  /** llama-cpp-python: prefill and decode tokens/s by llama.cpp's own counters (median). */
  ownPrefillTokensPerSecond?: number;
  ownDecodeTokensPerSecond?: number;
}

/** llama.cpp's own counters of one run (`llama_perf_context`). */
interface OwnCounters {
  promptMs: number;
  promptTokens: number;
  decodeMs: number;
  decodeTokens: number;
}

/** parent -> child */
interface RunRequest {
  prompt: number[];
  decodeTokens: number;
}

/** child -> parent */
type ChildMessage =
  | { kind: 'ready'; description: string }
  | { kind: 'result'; ttftMs: number; decodeMs: number; tokenIds: number[]; peakRssBytes: number; own?: OwnCounters }
  | { kind: 'error'; message: string };

const here = path.dirname(fileURLToPath(import.meta.url));
const CONTEXT_SLACK = 16;
const SYNTHETIC_SEED = 1;
const PAUSE_MS = 200;
const NOISY = 1.5;

// ------------------------------------------------------------------------------------------------ child side

interface ChildEngine {
  description: string;
  /** Token ids as they arrive, each with its `performance.now()` time; stops after `decodeTokens`. */
  run(request: RunRequest, onToken: (tokenId: number) => void): Promise<void>;
}

async function seedinferChild(modelPath: string, threads: number, contextSize: number): Promise<ChildEngine> {
  const { native } = await import('../../src/native.js');
  const binding = native();
  // f16 KV like llama.cpp's default; no prefix reuse between runs of the same prompt, so every run computes it.
  const model = await binding.loadModel(modelPath, { threads, kvCache: { dtype: 'f16', prefixCaching: false } });
  const session = model.createSession(contextSize);
  const info = model.info();
  return {
    description: `${info.computeFormat}; kernels ${info.kernelIsa}`,
    run: ({ prompt, decodeTokens }, onToken) => {
      session.reset();
      return new Promise<void>((resolve, reject) => {
        const options = {
          maxTokens: decodeTokens,
          temperature: 0,
          topK: 0,
          topP: 1,
          minP: 0,
          repetitionPenalty: 1,
          repetitionLastN: 0,
          presencePenalty: 0,
          frequencyPenalty: 0,
          seed: 0,
          stop: [],
          ignoreEos: true,
        };
        session.generate(
          Uint32Array.from(prompt),
          options,
          (event) => {
            if (event.kind === 'token') onToken(event.tokenId ?? -1);
            else if (event.kind === 'done') resolve();
            else reject(new Error(event.error ?? 'generation failed'));
          },
          new binding.NativeAbortFlag(),
        );
      });
    },
  };
}

// The part of node-llama-cpp's API used here. It lives in bench/peers/node_modules, which may not be installed,
// so it is imported by a computed specifier and typed locally (tsc never needs the package).
interface LlamaSequence {
  clearHistory(): Promise<void>;
  evaluate(tokens: number[], options: { temperature: number; yieldEogToken: boolean }): AsyncGenerator<number>;
}
interface NodeLlamaCpp {
  getLlama(options: { gpu: false; build: 'never'; maxThreads: number; logLevel: string }): Promise<{
    systemInfo: string;
    llamaCppRelease: { release: string };
    loadModel(options: { modelPath: string; gpuLayers: number }): Promise<{
      createContext(options: {
        contextSize: number;
        sequences: number;
        threads: number;
        flashAttention: boolean;
      }): Promise<{ batchSize: number; getSequence(): LlamaSequence }>;
    }>;
  }>;
  getModuleVersion(): Promise<string>;
  LlamaLogLevel: { error: string };
}

async function nodeLlamaCppChild(modelPath: string, threads: number, contextSize: number): Promise<ChildEngine> {
  const specifier = 'node-llama-cpp';
  const lib = (await import(specifier)) as NodeLlamaCpp;
  const llama = await lib.getLlama({ gpu: false, build: 'never', maxThreads: threads, logLevel: lib.LlamaLogLevel.error });
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const context = await model.createContext({ contextSize, sequences: 1, threads, flashAttention: false });
  const sequence = context.getSequence();
  const cpu = /CPU : (.*?)\s*\|?\s*$/m.exec(llama.systemInfo)?.[1] ?? llama.systemInfo.trim();
  return {
    description:
      `node-llama-cpp ${await lib.getModuleVersion()}, llama.cpp ${llama.llamaCppRelease.release}, ` +
      `batch ${context.batchSize}; ${cpu}`,
    run: async ({ prompt, decodeTokens }, onToken) => {
      await sequence.clearHistory();
      let count = 0;
      for await (const token of sequence.evaluate(prompt, { temperature: 0, yieldEogToken: true })) {
        onToken(token);
        if (++count >= decodeTokens) break;
      }
    },
  };
}

async function childMain(engine: Engine, modelPath: string, threads: number, contextSize: number): Promise<void> {
  const send = (message: ChildMessage) => process.send?.(message);
  try {
    const child = await (engine === 'seedinfer' ? seedinferChild : nodeLlamaCppChild)(modelPath, threads, contextSize);
    process.on('message', (request: RunRequest | 'exit') => {
      // Native thread pools may keep the event loop alive: leave explicitly.
      if (request === 'exit') process.exit(0);
      const tokenIds: number[] = [];
      const times: number[] = [];
      const start = performance.now();
      child
        .run(request, (tokenId) => {
          times.push(performance.now());
          tokenIds.push(tokenId);
        })
        .then(() => {
          if (tokenIds.length < 2) throw new Error(`only ${tokenIds.length} tokens were generated`);
          send({
            kind: 'result',
            ttftMs: times[0] - start,
            decodeMs: times[times.length - 1] - times[0],
            tokenIds,
            peakRssBytes: process.resourceUsage().maxRSS * 1024,
          });
        })
        .catch((error: unknown) => send({ kind: 'error', message: String((error as Error)?.stack ?? error) }));
    });
    send({ kind: 'ready', description: child.description });
  } catch (error) {
    process.send?.({ kind: 'error', message: String((error as Error)?.stack ?? error) } satisfies ChildMessage, () => process.exit(1));
  }
}

// ------------------------------------------------------------------------------------------------ parent side

const log = (message: string) => process.stderr.write(`${message}\n`);
const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** A child process running one engine on one model; requests are answered one at a time. Node children talk over
 * IPC, the Python one in JSON lines on its stdin and stdout. */
class EngineProcess {
  private pending: { resolve: (m: ChildMessage) => void; reject: (e: Error) => void } | undefined;
  private exited: Error | undefined;
  private readonly send: (message: RunRequest | 'exit') => void;
  private constructor(
    readonly engine: Engine,
    private readonly child: ChildProcess,
  ) {
    const receive = (message: ChildMessage) => {
      const pending = this.pending;
      this.pending = undefined;
      if (message.kind === 'error') pending?.reject(new Error(`${engine}: ${message.message}`));
      else pending?.resolve(message);
    };
    if (child.stdout) {
      const lines = createInterface({ input: child.stdout });
      lines.on('line', (line) => {
        if (line.startsWith('{')) receive(JSON.parse(line) as ChildMessage);
        else if (line.trim()) log(`${engine}: ${line}`);
      });
      this.send = (message) => child.stdin?.write(`${JSON.stringify(message)}\n`);
    } else {
      child.on('message', receive);
      this.send = (message) => child.send(message);
    }
    child.on('exit', (code, signal) => {
      this.exited = new Error(`${engine} child exited (code ${code}, signal ${signal})`);
      this.pending?.reject(this.exited);
      this.pending = undefined;
    });
  }

  private next(): Promise<ChildMessage> {
    if (this.exited) return Promise.reject(this.exited);
    return new Promise((resolve, reject) => (this.pending = { resolve, reject }));
  }

  static async start(engine: Engine, modelPath: string, threads: number, contextSize: number, python: string) {
    const args = [modelPath, String(threads), String(contextSize)];
    const child =
      engine === 'llama-cpp-python'
        ? spawn(python, [path.join(here, 'llama-cpp-python-child.py'), ...args], { stdio: ['pipe', 'pipe', 'inherit'] })
        : // The child's stdout goes to our stderr: stdout carries only the results.
          fork(fileURLToPath(import.meta.url), ['--child', engine, ...args], { stdio: ['ignore', 2, 'inherit', 'ipc'] });
    const engineProcess = new EngineProcess(engine, child);
    const ready = await engineProcess.next();
    if (ready.kind !== 'ready') throw new Error(`${engine}: unexpected message ${ready.kind}`);
    return { engineProcess, description: ready.description };
  }

  async run(request: RunRequest) {
    const answer = this.next();
    this.send(request);
    const result = await answer;
    if (result.kind !== 'result') throw new Error(`${this.engine}: unexpected message ${result.kind}`);
    return result;
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.send('exit');
    await exited;
  }

  kill(): void {
    if (!this.exited) this.child.kill();
  }
}

function option(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return undefined;
  const value = process.argv[i + 1];
  if (value === undefined || value.startsWith('--')) throw new Error(`--${name} needs a value`);
  return value;
}

function numbers(name: string, fallback: number[]): number[] {
  const raw = option(name);
  if (raw === undefined) return fallback;
  const values = raw.split(',').map(Number);
  if (values.some((v) => !Number.isInteger(v) || v < 1)) throw new Error(`--${name} takes positive whole numbers, got ${raw}`);
  return values;
}

/** Fixed pseudo-random ids in [1000, vocabSize) (mulberry32 with a fixed seed): clear of special tokens. */
function promptIds(count: number, vocabSize: number): number[] {
  let state = 0x5eed;
  return Array.from({ length: count }, () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const unit = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    return 1000 + Math.floor(unit * (vocabSize - 1000));
  });
}

function commonPrefix(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

async function parentMain(): Promise<void> {
  const json = process.argv.includes('--json');
  const quick = process.argv.includes('--quick');
  const models = (option('models') ?? (quick ? 'q4_0' : 'q4_0,q8_0,q4_1')).split(',') as ModelKey[];
  for (const m of models) {
    if (![...SYNTHETIC_FORMATS, 'q4_1'].includes(m) && !m.endsWith('.gguf')) {
      throw new Error(`--models takes ${SYNTHETIC_FORMATS.join(', ')}, q4_1 and paths of .gguf files, got ${m}`);
    }
  }
  const prompts = numbers('prompts', quick ? [128] : [128, 512, 2048]);
  const threadCounts = numbers('threads', quick ? [1] : [1, 2]);
  const runs = numbers('runs', [quick ? 3 : 5])[0];
  const decodeTokens = numbers('decode', [quick ? 32 : 128])[0];
  if (decodeTokens < 2) throw new Error('--decode must be at least 2');

  const python = option('python') ?? process.env.SEEDINFER_PEER_PYTHON ?? path.join(here, '.venv', 'bin', 'python');
  const peersOption = option('peers');
  const peers = (peersOption?.split(',') ?? PEERS.filter((p) => p !== 'llama-cpp-python' || existsSync(python))) as Peer[];
  for (const peer of peers) {
    if (!PEERS.includes(peer)) throw new Error(`--peers takes ${PEERS.join(', ')}, got ${peer}`);
  }
  if (peers.includes('node-llama-cpp') && !existsSync(path.join(here, 'node_modules', 'node-llama-cpp', 'package.json'))) {
    throw new Error('node-llama-cpp is not installed: cd bench/peers && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install');
  }
  if (peers.includes('llama-cpp-python') && !existsSync(python)) {
    throw new Error(`no Python at ${python} for llama-cpp-python: see bench/peers/README.md (or pass --python)`);
  }
  if (!peers.includes('llama-cpp-python')) {
    log(`llama-cpp-python: not run (no ${python}; bench/peers/README.md says how to install it)`);
  }
  const { ensureDefaultModel, defaultCacheDir } = await import('../../src/index.js');
  const { native } = await import('../../src/native.js');
  type Tools = import('../../src/native.js').NativeBinding;
  const tools = native() as ReturnType<typeof native> & Tools;

  // The model files.
  const defaultModel = await ensureDefaultModel();
  const files = new Map<ModelKey, string>();
  for (const key of models) {
    if (key === 'q4_1') {
      files.set(key, defaultModel);
      continue;
    }
    if (key.endsWith('.gguf')) {
      if (!existsSync(key)) throw new Error(`${key} does not exist`);
      files.set(path.basename(key), key);
      continue;
    }
    const dir = path.join(defaultCacheDir(), 'synthetic');
    const file = path.join(dir, `${path.basename(defaultModel, '.Q4_1.gguf')}.synthetic-seed${SYNTHETIC_SEED}.${key.toUpperCase()}.gguf`);
    if (!existsSync(file)) {
      log(`writing ${file}`);
      mkdirSync(dir, { recursive: true });
      await tools.writeSyntheticModel(defaultModel, file, key as (typeof SYNTHETIC_FORMATS)[number], SYNTHETIC_SEED);
    }
    files.set(key, file);
  }

  // Read bandwidth in this run, and the bytes a decoded token reads.
  const bandwidth = new Map<number, number>();
  for (const threads of threadCounts) {
    log(`probing read bandwidth, ${threads} thread(s)`);
    bandwidth.set(threads, (await tools.probeLimits(threads, quick ? 0.3 : 1)).readGbPerSecond * 1e9);
  }
  const bytesPerToken = new Map<ModelKey, number>();
  const vocabSizes = new Map<ModelKey, number>();
  for (const [key, file] of files) {
    const tensors = tools.ggufTensors(file);
    const tied = !tensors.some((t) => t.name === 'output.weight');
    const embedding = tensors.find((t) => t.name === 'token_embd.weight');
    if (!embedding) throw new Error(`${file} has no token_embd.weight`);
    vocabSizes.set(key, embedding.shape[0]);
    bytesPerToken.set(key, tensors.reduce((sum, t) => sum + (t === embedding && !tied ? 0 : t.bytes), 0));
  }

  const rows: Row[] = [];
  const sameTokens = new Map<string, string>();
  /** Configurations where an engine's slowest measured decode was more than NOISY× its fastest. */
  const noisy = new Set<string>();
  /** What each engine said it runs, per model (seedinfer: its compute formats and kernels). */
  const descriptions = new Map<string, string>();
  for (const key of files.keys()) {
    const file = files.get(key) as string;
    for (const threads of threadCounts) {
      for (const promptTokens of prompts) {
        const label = `${key} threads=${threads} prompt=${promptTokens}`;
        const contextSize = promptTokens + decodeTokens + CONTEXT_SLACK;
        const request: RunRequest = { prompt: promptIds(promptTokens, vocabSizes.get(key) as number), decodeTokens };
        const engines: EngineProcess[] = [];
        try {
          // Loaded one after the other, so that neither load competes with the other.
          for (const engine of ['seedinfer', ...peers] as const) {
            const started = await EngineProcess.start(engine, file, threads, contextSize, python);
            engines.push(started.engineProcess);
            descriptions.set(`${key}, ${engine}`, started.description);
          }
          const results = new Map<Engine, Awaited<ReturnType<EngineProcess['run']>>[]>(engines.map((e) => [e.engine, []]));
          for (let run = -1; run < runs; run++) {
            for (const engine of engines) {
              await sleep(PAUSE_MS);
              const result = await engine.run(request);
              const decodePerSecond = ((result.tokenIds.length - 1) / result.decodeMs) * 1e3;
              log(
                `${label} ${engine.engine} ${run < 0 ? 'warm-up' : `run ${run + 1}/${runs}`}: TTFT ${result.ttftMs.toFixed(0)} ms, ` +
                  `decode ${decodePerSecond.toFixed(1)} tok/s`,
              );
              if (run >= 0) results.get(engine.engine)?.push(result);
            }
          }
          const [ours, ...theirs] = engines.map((e) => results.get(e.engine) ?? []);
          sameTokens.set(label, theirs.map((t) => `${commonPrefix(ours[0].tokenIds, t[0].tokenIds)}/${decodeTokens}`).join(', '));
          for (const measured of [ours, ...theirs]) {
            const decodeMs = measured.map((r) => r.decodeMs);
            if (Math.max(...decodeMs) > NOISY * Math.min(...decodeMs)) noisy.add(label);
          }
          for (const engine of engines) {
            const measured = results.get(engine.engine) ?? [];
            rows.push({
              engine: engine.engine,
              model: path.basename(file),
              format: key,
              threads,
              promptTokens,
              decodeTokens,
              prefillTokensPerSecond: median(measured.map((r) => (promptTokens / r.ttftMs) * 1e3)),
              decodeTokensPerSecond: median(measured.map((r) => ((r.tokenIds.length - 1) / r.decodeMs) * 1e3)),
              ttftMs: median(measured.map((r) => r.ttftMs)),
              peakRssBytes: measured[measured.length - 1].peakRssBytes,
              ...(measured[0].own
                ? {
                    ownPrefillTokensPerSecond: median(measured.map((r) => (r.own as OwnCounters).promptTokens / (r.own as OwnCounters).promptMs * 1e3)),
                    ownDecodeTokensPerSecond: median(measured.map((r) => (r.own as OwnCounters).decodeTokens / (r.own as OwnCounters).decodeMs * 1e3)),
                  }
                : {}),
            });
          }
          for (const engine of engines) await engine.stop();
        } finally {
          for (const engine of engines) engine.kill();
        }
      }
    }
  }

  if (json) {
    console.log(JSON.stringify(rows, null, 2));
    return;
  }
  const find = (engine: Engine, key: ModelKey, threads: number, prompt: number) =>
    rows.find((r) => r.engine === engine && r.format === key && r.threads === threads && r.promptTokens === prompt) as Row;
  const fixed = (v: number, digits = 1) => v.toFixed(digits);
  const mb = (bytes: number) => (bytes / 1e6).toFixed(0);
  const pct = (v: number) => `${(v * 100).toFixed(0)}%`;
  console.log(
    `${new Date().toISOString().slice(0, 10)}, ${os.cpus()[0]?.model ?? 'unknown CPU'} (${os.availableParallelism()} CPUs)` +
      `${quick ? ', quick' : ''}; median of ${runs} runs after a warm-up, ${decodeTokens} decoded tokens.`,
  );
  for (const [what, description] of descriptions) console.log(`- ${what}: ${description}`);
  console.log('\n| model | bytes read per token | threads | read GB/s | decode bound tok/s |');
  console.log('|---|---:|---:|---:|---:|');
  for (const key of files.keys()) {
    for (const threads of threadCounts) {
      const bw = bandwidth.get(threads) as number;
      const bytes = bytesPerToken.get(key) as number;
      console.log(`| ${key} | ${mb(bytes)} MB | ${threads} | ${fixed(bw / 1e9)} | ${fixed(bw / bytes)} |`);
    }
  }
  // Per peer: its figure (llama-cpp-python: with llama.cpp's own counters in brackets); ratios against the faster peer.
  const peerCell = (row: Row | undefined, which: 'prefill' | 'decode') => {
    if (!row) return '–';
    const caller = which === 'prefill' ? row.prefillTokensPerSecond : row.decodeTokensPerSecond;
    const own = which === 'prefill' ? row.ownPrefillTokensPerSecond : row.ownDecodeTokensPerSecond;
    return own === undefined ? fixed(caller) : `${fixed(caller)} (${fixed(own)})`;
  };
  const names = peers.join(' | ');
  console.log(
    `\n| model | threads | prompt | prefill tok/s ours | ${names} | ours/faster | decode tok/s ours | ${names} | ours/faster | ` +
      `ours of bound | TTFT ms ours | peak RSS MB ours | ${names} | same tokens (${peers.join(', ')}) |`,
  );
  console.log(`|---|---:|---:|---:|${peers.map(() => '---:|').join('')}---:|---:|${peers.map(() => '---:|').join('')}---:|---:|---:|---:|${peers.map(() => '---:|').join('')}---:|`);
  for (const key of files.keys()) {
    for (const threads of threadCounts) {
      const bound = (bandwidth.get(threads) as number) / (bytesPerToken.get(key) as number);
      for (const prompt of prompts) {
        const ours = find('seedinfer', key, threads, prompt);
        const theirs = peers.map((peer) => find(peer, key, threads, prompt));
        const fastest = (pick: (r: Row) => number) => Math.max(...theirs.map(pick));
        const label = `${key} threads=${threads} prompt=${prompt}`;
        console.log(
          `| ${key} | ${threads} | ${prompt} | ${fixed(ours.prefillTokensPerSecond)} | ` +
            `${theirs.map((r) => peerCell(r, 'prefill')).join(' | ')} | ` +
            `${fixed(ours.prefillTokensPerSecond / fastest((r) => r.prefillTokensPerSecond), 2)}× | ` +
            `${fixed(ours.decodeTokensPerSecond)} | ${theirs.map((r) => peerCell(r, 'decode')).join(' | ')} | ` +
            `${fixed(ours.decodeTokensPerSecond / fastest((r) => r.decodeTokensPerSecond), 2)}× | ` +
            `${pct(ours.decodeTokensPerSecond / bound)} | ${fixed(ours.ttftMs, 0)} | ${mb(ours.peakRssBytes)} | ` +
            `${theirs.map((r) => mb(r.peakRssBytes)).join(' | ')} | ${sameTokens.get(label)}${noisy.has(label) ? ' (noisy)' : ''} |`,
        );
      }
    }
  }
  console.log(
    '\nq4_0, q8_0, q4_k, q5_k, q6_k: synthetic random-weight copies of SmolLM2-135M-Instruct (same shape and ' +
      "tokenizer; K-quants where rows are whole super-blocks, llama.cpp's fallbacks elsewhere); q4_1: the real file " +
      '(Q4_1 layers, Q8_0 token_embd); *.gguf: that file. Decode bound = read bandwidth / bytes read per token.',
  );
  if (noisy.size > 0) {
    console.log(
      `(noisy): an engine's measured runs differed by more than ${NOISY}× in decode time; the machine was probably busy ` +
        '(llama.cpp with as many threads as cores slows down sharply when anything else runs).',
    );
  }
}

const childAt = process.argv.indexOf('--child');
if (childAt >= 0) {
  const [engine, modelPath, threads, contextSize] = process.argv.slice(childAt + 1);
  await childMain(engine as Engine, modelPath, Number(threads), Number(contextSize));
} else {
  try {
    await parentMain();
  } catch (error) {
    log(String((error as Error)?.stack ?? error));
    process.exitCode = 1;
  }
}
