// Long-context evaluation of prefill strategies (dense, lazyllm, promptdistill, feather, xattention, and a token
// strategy with XAttention: lazyllm+xattention) and of ThinK key pruning (`think`, or `think:<ratio>`: a dense
// prefill in a session with `kvCache: { think }`) on real text, against dense prefill in the same run: passkey
// retrieval at several depths, agreement with dense (first-token KL, top-1, 64-token greedy overlap), TTFT, the share
// of prompt tokens each layer computed, the share of attention blocks attended, decode speed and KV bytes per token.
// See README.md.
//
//   npm run bench:longctx                                          # every strategy, 1K-8K, markdown tables
//   npm run bench:longctx -- --strategies dense,lazyllm --lengths 1024,2048 --samples 1 --excerpts 2 --json
//   npm run bench:longctx -- --strategies lazyllm --schedule '[{"layer":10,"keep":0.7}]'
import os from 'node:os';
import type { GenerationResult, PrefillOptions } from '../../index.js';
import { Model, SeedinferError, ensureDefaultModel } from '../../src/index.js';
import type { Session } from '../../src/index.js';
import { argument } from '../cli-args.js';
import { loadCorpus } from './corpus.js';
import {
  TokenizedCorpus,
  greedyOverlap,
  klDivergence,
  passkeyFound,
  passkeyPrompt,
  seededRandom,
  type PasskeyFormat,
} from './tasks.js';

const OVERLAP_TOKENS = 64;
const PASSKEY_TOKENS = 8;

const list = (value: string | undefined, fallback: string) => (value ?? fallback).split(',').map((s) => s.trim()).filter(Boolean);
const threads = Number(argument('threads') ?? 2);
const lengths = list(argument('lengths'), '1024,2048,4096,8192').map(Number);
const depths = list(argument('depths'), '10,50,90').map((d) => (Number(d) > 1 ? Number(d) / 100 : Number(d)));
const samples = Number(argument('samples') ?? 1);
const excerpts = Number(argument('excerpts') ?? 2);
const seed = Number(argument('seed') ?? 1);
const format = (argument('format') ?? 'plain') as PasskeyFormat;
const json = process.argv.includes('--json');
const requested = list(argument('strategies'), 'dense,lazyllm,promptdistill,feather,xattention,lazyllm+xattention');
// Dense is the reference for speedup, KL and overlap, so it always runs.
const strategies = requested.includes('dense') ? requested : ['dense', ...requested];
const extraOptions = JSON.parse(argument('options') ?? '{}') as Record<string, Record<string, unknown>>;
const schedule = argument('schedule');
if (schedule !== undefined) extraOptions.lazyllm = { ...extraOptions.lazyllm, schedule: JSON.parse(schedule) };
// Unknown strategies and options are the engine's to refuse: such a strategy shows as errors. `<strategy>+xattention`
// is that strategy (with its options) with XAttention (with xattention's options).
const prefillFor = (name: string): PrefillOptions => {
  if (thinkFor(name)) return { strategy: 'dense' };
  const [strategy, sparse] = name.split('+');
  const options = { strategy, ...extraOptions[strategy] };
  if (sparse === undefined) return options as PrefillOptions;
  const { strategy: _, ...xattention } = { strategy: '', ...extraOptions.xattention };
  return (sparse === 'xattention' ? { ...options, xattention } : { strategy: name }) as PrefillOptions;
};
/** The strategy `result.prefill.strategy` names for a run of `name`. */
const reportedStrategy = (name: string) => (thinkFor(name) ? 'dense' : name.split('+')[0]);
/** ThinK's settings for `think` (the default ratio) or `think:<ratio>`; undefined for prefill strategies. */
function thinkFor(name: string): { ratio?: number } | undefined {
  const [what, ratio] = name.split(':');
  if (what !== 'think') return undefined;
  return ratio === undefined ? {} : { ratio: Number(ratio) };
}

if (![...lengths, ...depths, samples, excerpts, threads, seed].every(Number.isFinite) || !['plain', 'chat'].includes(format)) {
  console.error('usage: bench/longctx/run.ts [--strategies a,b] [--lengths 1024,2048] [--depths 10,50,90] [--samples N]');
  console.error('       [--excerpts N] [--threads N] [--seed N] [--format plain|chat] [--schedule JSON] [--options JSON] [--json]');
  process.exit(2);
}

const started = Date.now();
const progress = (line: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(5)} s] ${line}\n`);

const corpusText = await loadCorpus();
const modelPath = argument('model') ?? (await ensureDefaultModel());
// No prefix reuse: every run computes its whole prompt, so strategies are timed and compared on equal terms.
const model = await Model.load(modelPath, { threads, kvCache: { prefixCaching: false } });
const corpus = new TokenizedCorpus(model, corpusText.text);
progress(`corpus: ${corpusText.origin.source}, ${corpus.ids.length.toLocaleString('en-US')} tokens`);

/** One prompt of one length, run by every strategy. */
interface Task {
  length: number;
  kind: 'passkey' | 'agreement';
  sample: number;
  tokens: number[];
  depth?: number;
  needleDepth?: number;
  key?: string;
}

/** One strategy's run of one task. */
interface SampleRow {
  length: number;
  promptTokens: number;
  task: Task['kind'];
  sample: number;
  depth?: number;
  needleDepth?: number;
  key?: string;
  strategy: string;
  ttftMs?: number;
  answer?: string;
  correct?: boolean;
  firstTokenKl?: number | null;
  top1Match?: boolean;
  overlapLeading?: number;
  overlapFraction?: number;
  /** Mean over layers of the share of prompt tokens computed there. */
  computedFraction?: number;
  /** Share of the causal (query block, key block) pairs attended (XAttention; 1 without it). */
  attentionDensity?: number;
  layerTokens?: number[];
  droppedTokens?: number;
  revivedTokens?: number;
  /** Tokens revived during the 64-token generation's decode steps (LazyLLM). */
  decodeRevivedTokens?: number;
  /** Decode speed of the 64-token generation (LazyLLM's revivals show here). */
  decodeTokensPerSecond?: number;
  /** The session's KV bytes per cached token after the 64-token generation (ThinK's pruning shows here). */
  kvBytesPerToken?: number;
  error?: string;
}

/** A generator seeded by the run's seed and `parts`, so adding samples or lengths leaves the other prompts as they were. */
const randomFor = (...parts: number[]) => seededRandom(parts.reduce((h, p) => Math.imul(h ^ p, 0x9e3779b1) >>> 0, seed));

function tasksFor(length: number): Task[] {
  // Room for what is generated after the prompt within the model's context (8K prompts are 64 tokens short).
  const promptLength = Math.min(length, model.info.contextLength - OVERLAP_TOKENS);
  const tasks: Task[] = [];
  // A sample is one key in one stretch of text; only the needle's depth differs between its prompts.
  for (const depth of depths) {
    for (let sample = 0; sample < samples; sample++) {
      const p = passkeyPrompt(corpus, model, { length: promptLength, depth, format, random: randomFor(length, 1, sample) });
      tasks.push({ length, kind: 'passkey', sample, tokens: p.tokens, depth, needleDepth: p.needleDepth, key: p.key });
    }
  }
  for (let sample = 0; sample < excerpts; sample++) {
    const start = corpus.excerptStart(promptLength, randomFor(length, 2, sample));
    tasks.push({ length, kind: 'agreement', sample, tokens: corpus.ids.slice(start, start + promptLength) });
  }
  return tasks;
}

interface Reference {
  logits: Float32Array | null;
  tokens: number[];
}

/**
 * Runs `task` with `strategy` in fresh sessions. Agreement needs two runs: one stopping after the first token, whose
 * logits are read, and one generating all 64 tokens in the same call (LazyLLM selects again, and may revive tokens,
 * at every decode step of the call that prefilled, so a continuation in a second call would not be the same run).
 */
async function runTask(task: Task, strategy: string, reference: Reference | undefined): Promise<{ row: SampleRow; output?: Reference }> {
  const row: SampleRow = {
    length: task.length,
    promptTokens: task.tokens.length,
    task: task.kind,
    sample: task.sample,
    depth: task.depth,
    needleDepth: task.needleDepth,
    key: task.key,
    strategy,
  };
  const prefill = prefillFor(strategy);
  const think = thinkFor(strategy);
  const generate = async (maxTokens: number, afterwards?: (session: Session) => void) => {
    const kvCache = think && { think };
    const session = model.createSession({ contextSize: task.tokens.length + maxTokens, kvCache });
    try {
      const result = await session.generate(task.tokens, { maxTokens, temperature: 0, ignoreEos: task.kind === 'agreement', prefill })
        .result;
      afterwards?.(session);
      return result;
    } finally {
      session.dispose();
    }
  };
  const describe = (result: GenerationResult) => {
    if (result.prefill.strategy !== reportedStrategy(strategy)) throw new Error(`the engine reports it ran ${result.prefill.strategy}`);
    row.attentionDensity = result.prefill.attentionDensity;
    row.layerTokens = result.prefill.layerTokens;
    row.droppedTokens = result.prefill.droppedTokens;
    row.revivedTokens = result.prefill.revivedTokens;
    row.computedFraction = mean(result.prefill.layerFractions);
  };
  try {
    if (task.kind === 'passkey') {
      const result = await generate(PASSKEY_TOKENS);
      row.ttftMs = result.timings.ttftMs;
      describe(result);
      row.answer = result.text;
      row.correct = passkeyFound(result.text, task.key ?? '');
      return { row };
    }
    let logits: Float32Array | null = null;
    const first = await generate(1, (session) => {
      const last = session.lastLogits();
      logits = last && Float32Array.from(last);
    });
    row.ttftMs = first.timings.ttftMs;
    describe(first);
    const full = await generate(OVERLAP_TOKENS, (session) => {
      row.kvBytesPerToken = session.kvBytes / session.tokenCount;
    });
    row.decodeRevivedTokens = full.prefill.decodeRevivedTokens;
    row.decodeTokensPerSecond = full.timings.decodeTokensPerSecond;
    const output: Reference = { logits, tokens: full.tokenIds };
    if (reference) {
      row.firstTokenKl = reference.logits && output.logits ? klDivergence(reference.logits, output.logits) : null;
      row.top1Match = first.tokenIds[0] === reference.tokens[0];
      const overlap = greedyOverlap(reference.tokens, output.tokens);
      row.overlapLeading = overlap.leading;
      row.overlapFraction = overlap.fraction;
    }
    return { row, output };
  } catch (error) {
    row.error = error instanceof SeedinferError ? `${error.code}: ${error.message}` : String(error);
    return { row };
  }
}

function mean(values: number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

// Warm-up: page in the weights before anything is timed.
const warmUp = model.createSession({ contextSize: 300 });
await warmUp.generateText(corpus.ids.slice(0, 256), { maxTokens: 1, temperature: 0 });
warmUp.dispose();

const rows: SampleRow[] = [];
for (const length of lengths) {
  const tasks = tasksFor(length);
  for (const [i, task] of tasks.entries()) {
    let reference: Reference | undefined;
    for (const strategy of strategies) {
      const { row, output } = await runTask(task, strategy, reference);
      if (strategy === 'dense') reference = output;
      rows.push(row);
      const what = task.kind === 'passkey' ? `passkey at ${Math.round((task.depth ?? 0) * 100)}%` : 'agreement';
      const outcome = row.error
        ? `error ${row.error}`
        : `TTFT ${row.ttftMs?.toFixed(0)} ms` +
          (row.correct !== undefined ? `, ${row.correct ? 'found' : 'missed'} ${row.key} in ${JSON.stringify(row.answer)}` : '') +
          (row.overlapLeading !== undefined ? `, KL ${row.firstTokenKl?.toExponential(2) ?? 'n/a'}, leading overlap ${row.overlapLeading}` : '');
      progress(`${length} tok, task ${i + 1}/${tasks.length} (${what}), ${strategy}: ${outcome}`);
    }
  }
}

interface SummaryRow {
  length: number;
  promptTokens: number;
  strategy: string;
  runs: number;
  errors: number;
  passkeyAccuracy: number | null;
  meanTtftMs: number | null;
  /** Mean dense TTFT over mean strategy TTFT, over the prompts both completed. */
  ttftSpeedup: number | null;
  meanFirstTokenKl: number | null;
  top1Agreement: number | null;
  meanOverlapLeading: number | null;
  meanOverlapFraction: number | null;
  meanComputedFraction: number | null;
  meanAttentionDensity: number | null;
  meanDecodeTokensPerSecond: number | null;
  meanKvBytesPerToken: number | null;
}

/** Mean decode speed over the 64-token generations of agreement rows (dense's included). */
const agreementDecode = (rows: SampleRow[]) =>
  meanOrNull(rows.filter((r) => r.task === 'agreement').map((r) => r.decodeTokensPerSecond));

const meanOrNull = (values: (number | null | undefined)[]) => {
  const present = values.filter((v): v is number => typeof v === 'number');
  return present.length === values.length && present.length > 0 ? mean(present) : null;
};

const summary: SummaryRow[] = [];
for (const length of lengths) {
  const atLength = rows.filter((r) => r.length === length);
  const dense = atLength.filter((r) => r.strategy === 'dense');
  for (const strategy of strategies) {
    const all = atLength.filter((r) => r.strategy === strategy);
    const ok = all.filter((r) => !r.error);
    const passkey = ok.filter((r) => r.task === 'passkey');
    // Dense is the reference: its agreement rows have nothing to compare with.
    const agreement = ok.filter((r) => r.task === 'agreement' && r.overlapLeading !== undefined);
    const paired = ok.flatMap((r) => {
      const d = dense.find((x) => x.task === r.task && x.sample === r.sample && x.depth === r.depth && !x.error);
      return d ? [[d.ttftMs as number, r.ttftMs as number]] : [];
    });
    summary.push({
      length,
      promptTokens: all[0]?.promptTokens ?? length,
      strategy,
      runs: all.length,
      errors: all.length - ok.length,
      passkeyAccuracy: passkey.length ? passkey.filter((r) => r.correct).length / passkey.length : null,
      meanTtftMs: ok.length ? mean(ok.map((r) => r.ttftMs as number)) : null,
      ttftSpeedup: paired.length ? mean(paired.map(([d]) => d)) / mean(paired.map(([, s]) => s)) : null,
      meanFirstTokenKl: agreement.length ? meanOrNull(agreement.map((r) => r.firstTokenKl)) : null,
      top1Agreement: agreement.length ? agreement.filter((r) => r.top1Match).length / agreement.length : null,
      meanOverlapLeading: agreement.length ? mean(agreement.map((r) => r.overlapLeading as number)) : null,
      meanOverlapFraction: agreement.length ? mean(agreement.map((r) => r.overlapFraction as number)) : null,
      meanComputedFraction: ok.length ? meanOrNull(ok.map((r) => r.computedFraction)) : null,
      meanAttentionDensity: ok.length ? meanOrNull(ok.map((r) => r.attentionDensity)) : null,
      meanDecodeTokensPerSecond: agreementDecode(ok),
      meanKvBytesPerToken: meanOrNull(ok.filter((r) => r.task === 'agreement').map((r) => r.kvBytesPerToken)),
    });
  }
}

const date = new Date().toISOString();
if (json) {
  console.log(
    JSON.stringify(
      {
        date,
        command: process.argv.slice(2).join(' '),
        model: { path: modelPath, layers: model.info.layers, contextLength: model.info.contextLength },
        machine: { threads, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, platform: `${os.platform()} ${os.arch()}` },
        corpus: { ...corpusText.origin, tokens: corpus.ids.length },
        config: {
          lengths,
          depths,
          samples,
          excerpts,
          seed,
          format,
          strategies: strategies.map((name) => ({ name, prefill: prefillFor(name), think: thinkFor(name) })),
          passkeyGeneratedTokens: PASSKEY_TOKENS,
          overlapTokens: OVERLAP_TOKENS,
        },
        elapsedSeconds: (Date.now() - started) / 1000,
        summary,
        samples: rows,
      },
      null,
      2,
    ),
  );
} else {
  const fixed = (v: number | null, digits: number, scale = 1) => (v === null ? 'n/a' : (v * scale).toFixed(digits));
  for (const length of lengths) {
    const at = summary.filter((s) => s.length === length);
    console.log(`\n### ${length} tokens (prompts of ${at[0]?.promptTokens} tokens)\n`);
    console.log(
      `| strategy | passkey % | mean TTFT ms | TTFT speedup vs dense | mean first-token KL | top-1 agree % | 64-token overlap: leading / fraction | computed token fraction | attention block density | decode tok/s | KV bytes/token | errors |`,
    );
    console.log(`|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|`);
    for (const s of at) {
      const agree = (text: string) => (s.strategy === 'dense' ? 'ref' : text);
      const computed = s.meanComputedFraction === null ? 'n/a' : s.meanComputedFraction.toFixed(3);
      console.log(
        `| ${s.strategy} | ${fixed(s.passkeyAccuracy, 0, 100)} | ${fixed(s.meanTtftMs, 0)} | ${s.ttftSpeedup === null ? 'n/a' : `${s.ttftSpeedup.toFixed(2)}×`} | ${agree(s.meanFirstTokenKl === null ? 'n/a' : s.meanFirstTokenKl.toExponential(2))} | ${agree(fixed(s.top1Agreement, 0, 100))} | ${agree(`${fixed(s.meanOverlapLeading, 1)} / ${fixed(s.meanOverlapFraction, 2)}`)} | ${computed} | ${fixed(s.meanAttentionDensity, 3)} | ${fixed(s.meanDecodeTokensPerSecond, 1)} | ${fixed(s.meanKvBytesPerToken, 0)} | ${s.errors}/${s.runs} |`,
      );
    }
    for (const strategy of strategies) {
      const failed = rows.filter((r) => r.length === length && r.strategy === strategy && r.error);
      const runs = rows.filter((r) => r.length === length && r.strategy === strategy).length;
      if (failed.length) console.log(`\n${strategy} failed ${failed.length} of ${runs} runs; the first: ${failed[0].error}`);
    }
  }
  console.log(
    `\n${modelPath.split('/').pop()}, ${threads} threads, ${corpusText.origin.source}, passkey ${format} format, depths ${depths.map((d) => `${Math.round(d * 100)}%`).join('/')} × ${samples} per length, ${excerpts} agreement excerpts per length, seed ${seed}, ${date.slice(0, 10)}, ${((Date.now() - started) / 60000).toFixed(1)} min`,
  );
}
model.dispose();
