// Bounded KV caches on an endless stream (METHODS.md, StreamingLLM and SirLLM): a long stretch of Moby-Dick is fed
// through one session whose cache holds at most `--max-tokens` tokens, scored token by token (teacher forcing:
// `session.scoreTokens`), and the perplexity of each 1K window is reported per policy, with the session's KV bytes
// and the process's RSS along the way. Policies: `streaming` (4 sink tokens + the latest), `window` (the latest
// only: a plain sliding window, StreamingLLM's foil), `sirllm` (sinks + the most surprising + the latest), and
// `dense` (an unbounded session of the model's context, for the windows that fit in it: the reference).
//
// Then a chat: the user states a 5-digit locker code in the first turn, then asks about `--chat-turns` passages of
// the novel (one-sentence answers), then asks for the code. Correct if the answer has its digits. Run for dense,
// streaming and sirllm with `--chat-samples` codes each (the fact is long evicted by StreamingLLM; SirLLM keeps
// surprising tokens, and a random code is surprising).
//
//   npm run bench:streaming                                      # 20,000 tokens through a 1,024-token cache
//   npm run bench:streaming -- --tokens 4096 --policies streaming,window --json
import os from 'node:os';
import type { SessionOptions } from '../../index.js';
import { Model, ensureDefaultModel } from '../../src/index.js';
import { argument } from '../cli-args.js';
import { loadCorpus } from './corpus.js';
import { TokenizedCorpus, seededRandom } from './tasks.js';

const list = (value: string | undefined, fallback: string) => (value ?? fallback).split(',').map((s) => s.trim()).filter(Boolean);
const total = Number(argument('tokens') ?? 20_000);
const maxTokens = Number(argument('max-tokens') ?? 1024);
const window = Number(argument('window') ?? 1024);
const piece = Number(argument('piece') ?? 256);
const threads = Number(argument('threads') ?? 2);
const policies = list(argument('policies'), 'dense,streaming,window,sirllm');
const json = process.argv.includes('--json');
const decay = argument('decay') === undefined ? undefined : Number(argument('decay'));
const chatTurns = Number(argument('chat-turns') ?? 10);
const chatSamples = Number(argument('chat-samples') ?? 4);
const chatPolicies = list(argument('chat-policies'), 'dense,streaming,sirllm');

const started = Date.now();
const progress = (line: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(5)} s] ${line}\n`);

const corpusText = await loadCorpus();
const modelPath = argument('model') ?? (await ensureDefaultModel());
const model = await Model.load(modelPath, { threads, kvCache: { prefixCaching: false } });
const corpus = new TokenizedCorpus(model, corpusText.text);
// From the start of the novel's text, with the model's BOS if it has one.
const bos = model.tokenize('', { addBos: true, special: false });
const stream = [...bos, ...corpus.ids.slice(0, total - bos.length)];
progress(`stream of ${stream.length} tokens from ${corpusText.origin.source}; cache bound ${maxTokens}`);

const sessionFor = (policy: string): SessionOptions => {
  const contextSize = Math.min(model.info.contextLength, policy === 'dense' ? stream.length : 2 * maxTokens);
  switch (policy) {
    case 'dense':
      return { contextSize };
    case 'window':
      return { contextSize, kvCache: { policy: 'streaming', maxTokens, sinks: 0 } };
    case 'streaming':
      return { contextSize, kvCache: { policy: 'streaming', maxTokens } };
    case 'sirllm':
      return { contextSize, kvCache: { policy: 'sirllm', maxTokens, decay } };
    default:
      throw new Error(`unknown policy ${policy} (dense, streaming, window, sirllm)`);
  }
};

interface PolicyRun {
  policy: string;
  /** Perplexity of each window of the stream (null where the policy stopped: dense past the model's context). */
  perplexity: (number | null)[];
  /** After each window: the session's KV bytes and the process's resident set, in MiB. */
  kvMiB: number[];
  rssMiB: number[];
  evictedTokens: number;
  seconds: number;
}

const runs: PolicyRun[] = [];
for (const policy of policies) {
  const options = sessionFor(policy);
  const session = model.createSession(options);
  const nll: number[] = [];
  const kvMiB: number[] = [];
  const rssMiB: number[] = [];
  const t0 = Date.now();
  const limit = policy === 'dense' ? (options.contextSize ?? 0) : stream.length;
  for (let at = 0; at < limit; at += piece) {
    nll.push(...(await session.scoreTokens(stream.slice(at, Math.min(at + piece, limit)))));
    if (Math.floor((at + piece) / window) > Math.floor(at / window) || at + piece >= limit) {
      kvMiB.push(session.kvBytes / 2 ** 20);
      rssMiB.push(process.memoryUsage().rss / 2 ** 20);
    }
  }
  const windows = Math.ceil(stream.length / window);
  const perplexity = Array.from({ length: windows }, (_, w) => {
    const scored = nll.slice(w * window, (w + 1) * window).filter((x) => Number.isFinite(x));
    // The stream's first token has nothing before it: its window scores one token fewer.
    return scored.length >= window - (w === 0 ? 1 : 0) || (scored.length > 0 && (w + 1) * window > stream.length)
      ? Math.exp(scored.reduce((a, b) => a + b, 0) / scored.length)
      : null;
  });
  runs.push({ policy, perplexity, kvMiB, rssMiB, evictedTokens: session.evictedTokens, seconds: (Date.now() - t0) / 1000 });
  progress(`${policy}: ${nll.length} tokens scored in ${((Date.now() - t0) / 1000).toFixed(1)} s, evicted ${session.evictedTokens}`);
  session.dispose();
}

interface ChatRun {
  policy: string;
  code: string;
  answer: string;
  correct: boolean;
  /** Whether the code's digit tokens were all still in the cache, in order, when the question came. */
  codeKept: boolean;
  /** Tokens of the whole conversation, and how many the session's cache evicted. */
  tokens: number;
  evictedTokens: number;
}

/** One conversation: the code, `chatTurns` passages, the question. The session is fed each turn's new text only. */
async function chatRecall(policy: string, sample: number): Promise<ChatRun> {
  const random = seededRandom(1000 + sample);
  const code = String(10000 + Math.floor(random() * 90000));
  const options = sessionFor(policy);
  const session = model.createSession(policy === 'dense' ? { contextSize: model.info.contextLength } : options);
  const messages: { role: 'user' | 'assistant'; content: string }[] = [];
  let held = '';
  let tokens = 0;
  const turn = async (content: string, maxTokens: number) => {
    messages.push({ role: 'user', content });
    const full = model.applyChatTemplate(messages, { addGenerationPrompt: true });
    // The session holds the previous answer and its end-of-turn token; the template's newline after it comes next.
    const delta = held === '' ? full : full.slice(held.length - 1);
    const result = await session.generateText(delta, { maxTokens, temperature: 0 });
    tokens += result.timings.promptTokens + result.tokenIds.length;
    messages.push({ role: 'assistant', content: result.text });
    held = model.applyChatTemplate(messages, { addGenerationPrompt: false });
    return result.text;
  };
  await turn(`Please remember my locker code: ${code}. I will ask you for it later. Just reply OK.`, 8);
  for (let i = 0; i < chatTurns; i++) {
    const start = corpus.excerptStart(220, random);
    const passage = model.detokenize(corpus.ids.slice(start, start + 220));
    await turn(`Here is a passage from a novel:\n\n${passage}\n\nIn one sentence, what happens in it?`, 32);
  }
  const digits = [...code].map((d) => model.tokenize(d, { addBos: false, special: false }).at(-1));
  let next = 0;
  for (const id of session.tokenIds) if (id === digits[next]) next++;
  const codeKept = next >= digits.length;
  const answer = await turn('What is my locker code?', 16);
  const correct = answer.replace(/\D/g, '').includes(code);
  const run = { policy, code, answer, correct, codeKept, tokens, evictedTokens: session.evictedTokens };
  session.dispose();
  return run;
}

const chats: ChatRun[] = [];
for (let sample = 0; sample < chatSamples; sample++) {
  for (const policy of chatPolicies) {
    const run = await chatRecall(policy, sample);
    chats.push(run);
    progress(`chat ${sample + 1}/${chatSamples}, ${policy}: ${run.correct ? 'recalled' : 'missed'} ${run.code} in ${JSON.stringify(run.answer)} (${run.tokens} tokens, evicted ${run.evictedTokens})`);
  }
}

const date = new Date().toISOString();
if (json) {
  console.log(
    JSON.stringify(
      {
        date,
        model: modelPath,
        machine: { threads, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model },
        corpus: corpusText.origin,
        config: { total: stream.length, maxTokens, window, piece, policies, chatTurns, chatSamples, chatPolicies },
        runs,
        chats,
      },
      null,
      2,
    ),
  );
} else {
  const fixed = (v: number | null | undefined, d = 2) => (v === null || v === undefined ? '—' : v.toFixed(d));
  console.log(`\n| tokens | ${runs.map((r) => r.policy).join(' | ')} |`);
  console.log(`|---:|${runs.map(() => '---:').join('|')}|`);
  const windows = Math.ceil(stream.length / window);
  for (let w = 0; w < windows; w++) {
    console.log(`| ${(w * window).toLocaleString('en-US')}–${Math.min((w + 1) * window, stream.length).toLocaleString('en-US')} | ${runs.map((r) => fixed(r.perplexity[w])).join(' | ')} |`);
  }
  console.log(`\n| policy | KV MiB after 2K / max / last | RSS MiB after 2K / max / last | evicted | seconds |`);
  console.log(`|---|---|---|---:|---:|`);
  for (const r of runs) {
    const span = (v: number[]) => `${fixed(v[1], 1)} / ${fixed(Math.max(...v), 1)} / ${fixed(v[v.length - 1], 1)}`;
    console.log(`| ${r.policy} | ${span(r.kvMiB)} | ${span(r.rssMiB)} | ${r.evictedTokens} | ${r.seconds.toFixed(1)} |`);
  }
  if (chats.length) {
    console.log(`\n| chat policy | recalled | code's digits still cached | mean conversation tokens | mean evicted |`);
    console.log(`|---|---:|---:|---:|---:|`);
    for (const policy of chatPolicies) {
      const of = chats.filter((c) => c.policy === policy);
      const mean = (f: (c: ChatRun) => number) => (of.reduce((a, c) => a + f(c), 0) / of.length).toFixed(0);
      console.log(`| ${policy} | ${of.filter((c) => c.correct).length}/${of.length} | ${of.filter((c) => c.codeKept).length}/${of.length} | ${mean((c) => c.tokens)} | ${mean((c) => c.evictedTokens)} |`);
    }
  }
  console.log(
    `\n${modelPath.split('/').pop()}, ${threads} threads, ${os.cpus()[0]?.model}, ${corpusText.origin.source}, perplexity per ${window}-token window, cache bound ${maxTokens}, ${date.slice(0, 10)}`,
  );
}
model.dispose();
