#!/usr/bin/env node
// Produce a llama.cpp reference (via node-llama-cpp) for SmolLM2-135M-Instruct Q4_1,
// written to __test__/fixtures/llamacpp-smollm2.json, or with `--family gemma3` for Gemma 3 270M Q4_K_M,
// written to __test__/fixtures/llamacpp-gemma3.json. See README.md in this directory.
//
// Usage: node make-reference.mjs [--family smollm2|gemma3] [--model <path.gguf>] [--out <path.json>]
// Model path resolution: --model, then $SEEDINFER_DEFAULT_GGUF (smollm2), then
// ${SEEDINFER_CACHE:-~/.cache/seedinfer}/models/<the family's file>
//
// Determinism: single thread, CPU only, fixed context/batch size, greedy sampling.
// The only date in the output is a UTC day (or $SOURCE_DATE_EPOCH if set).

import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getLlama, getModuleVersion, LlamaLogLevel } from 'node-llama-cpp';

const here = path.dirname(fileURLToPath(import.meta.url));
const repoRoot = path.resolve(here, '..', '..');
// What differs between the model families: the file, its special tokens and chat format, and whether prompts and
// passages start with BOS (Gemma's quality depends on it; SmolLM2's reference was made without).
const FAMILIES = {
  smollm2: {
    file: 'SmolLM2-135M-Instruct.Q4_1.gguf',
    sha256: 'b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53',
    out: 'llamacpp-smollm2.json',
    bos: false,
    specialCases: [
      ['special_tokens_chat', '<|im_start|>user\nHi<|im_end|>'],
      ['special_token_eos', 'end<|endoftext|>start'],
      ['special_tokens_assistant', '<|im_start|>assistant\nThe answer is 42.<|im_end|>\n'],
    ],
    chatPrompt: '<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n',
  },
  gemma3: {
    file: 'gemma-3-270m-q4_k_m.gguf',
    sha256: 'a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818',
    out: 'llamacpp-gemma3.json',
    bos: true,
    teacherForceChunk: 16,
    specialCases: [
      ['special_tokens_chat', '<start_of_turn>user\nHi<end_of_turn>'],
      ['special_token_eos', 'end<eos>start'],
      ['special_tokens_model', '<start_of_turn>model\nThe answer is 42.<end_of_turn>\n'],
      ['byte_fallback_symbols', 'ℵ₀ ⊕ ∮ 𝔽 ␀ 🜁'],
      ['emoji_sequence', '👩‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 1️⃣ keycap'],
      ['korean_arabic', '안녕하세요 مرحبا بالعالم'],
      ['markdown', '# Title\n\n- item *one*\n- item **two**\n\n```js\nx = 1;\n```'],
      ['latex', 'Euler: $e^{i\\pi} + 1 = 0$, and $\\sum_{k=1}^{n} k = \\frac{n(n+1)}{2}$.'],
      ['repeated_chars', 'aaaaaaaaaaaaaaaaaaaa ---------- ==========    !!!!'],
      ['hindi_thai_greek', 'नमस्ते दुनिया สวัสดีชาวโลก Γειά σου Κόσμε'],
      ['unknown_like_tags', '<unk> <pad> <mask> <start_of_image> <image_soft_token>'],
    ],
    chatPrompt: '<start_of_turn>user\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\n',
  },
};
const CONTEXT_SIZE = 1024;
const BATCH_SIZE = 1024;
const THREADS = 1;
const GREEDY_TOKENS = 32;

// ---------------------------------------------------------------- args / paths
function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--family') out.family = argv[++i];
    else if (a === '--model') out.model = argv[++i];
    else if (a.startsWith('--model=')) out.model = a.slice('--model='.length);
    else if (a === '--out') out.out = argv[++i];
    else if (a.startsWith('--out=')) out.out = a.slice('--out='.length);
    else if (a === '-h' || a === '--help') out.help = true;
    else throw new Error(`unknown argument: ${a}`);
  }
  return out;
}

function resolveModelPath(args, family) {
  if (args.model) return path.resolve(args.model);
  if (family.file === FAMILIES.smollm2.file && process.env.SEEDINFER_DEFAULT_GGUF) {
    return path.resolve(process.env.SEEDINFER_DEFAULT_GGUF);
  }
  const cache = process.env.SEEDINFER_CACHE || path.join(homedir(), '.cache', 'seedinfer');
  return path.join(cache, 'models', family.file);
}

function sha256File(p) {
  return createHash('sha256').update(readFileSync(p)).digest('hex');
}

function utcDay() {
  const epoch = process.env.SOURCE_DATE_EPOCH;
  const d = epoch ? new Date(Number(epoch) * 1000) : new Date();
  return d.toISOString().slice(0, 10);
}

// ---------------------------------------------------------------- inputs
// Order matters: it is the order in the fixture.
const TOKENIZATION_CASES = [
  ['plain_sentence', 'The quick brown fox jumps over the lazy dog.'],
  ['hello_world', 'Hello, world!'],
  ['casing', 'HELLO World hello WORLD hElLo'],
  ['long_word', 'antidisestablishmentarianism'],
  ['single_char', 'x'],
  ['leading_space', ' leading space'],
  ['trailing_space', 'trailing space '],
  ['leading_trailing_double_spaces', '  two leading and two trailing  '],
  ['whitespace_runs', 'a  b\n\n  c\t\td'],
  ['crlf_lines', 'line one\nline two\r\nline three\n'],
  ['only_space', ' '],
  ['only_newline', '\n'],
  ['mixed_whitespace_only', '   \n\t  \n'],
  ['digits', '12345 3.14159 1,000,000'],
  ['numbers_in_text', 'In 2024, 42% of 1000 users paid $9.99 (about €9.20).'],
  ['latin_accents', 'café naïve résumé über Müller façade'],
  ['chinese', '中文分词测试：你好，世界！'],
  ['japanese', '日本語のテキストです。カタカナも。'],
  ['emoji', 'Hi 👋🏽 there 🚀🎉 👨‍👩‍👧'],
  ['cyrillic', 'Привет, мир! Как дела?'],
  ['arabic', 'مرحبا بالعالم'],
  ['greek_hindi', 'Ελληνικά και हिन्दी'],
  ['python_code', 'def f(x):\n    return x**2'],
  ['js_arrow_fn', 'const add = (a, b) => a + b;\nconsole.log(add(1, 2));'],
  ['json', '{"key": "value", "list": [1, 2, 3], "nested": {"ok": true, "n": null}}'],
  ['contractions', "don't I'll we've they're it's O'Neil's"],
  ['punctuation_runs', '!!!???...;;; -- --- (([[{{}}]])) "quoted" \'single\''],
  ['url', 'https://example.com/path/to/page?query=1&lang=en#frag'],
  ['email', 'email: john.doe+test@example.org'],
  ['nbsp_zero_width', 'non\u00a0breaking and zero\u200bwidth'],
];

const GREEDY_PROMPTS = [
  ['capital_plain', 'The capital of France is'],
  ['story', 'Once upon a time, in a small village,'],
  ['code', 'def fibonacci(n):\n'],
  ['list', 'The three primary colors are'],
];

// Teacher-forced passage: the GPL-3 preamble, verbatim (1-based inclusive line range).
const PASSAGE_SOURCE = '/usr/share/common-licenses/GPL-3';
const PASSAGE_LINES = [10, 47];

function readPassage() {
  const raw = readFileSync(PASSAGE_SOURCE, 'utf8');
  const lines = raw.split('\n');
  const [from, to] = PASSAGE_LINES;
  return {
    fileSha256: createHash('sha256').update(raw).digest('hex'),
    text: lines.slice(from - 1, to).join('\n'),
  };
}

// A second passage of running prose: the GPL-3 preamble and its definitions (lines 10-92) with the
// hard line breaks inside paragraphs joined by spaces, paragraphs separated by a blank line.
const PROSE_LINES = [10, 92];

function readProsePassage() {
  const raw = readFileSync(PASSAGE_SOURCE, 'utf8');
  const [from, to] = PROSE_LINES;
  const paragraphs = raw
    .split('\n')
    .slice(from - 1, to)
    .join('\n')
    .split(/\n\s*\n/)
    .map((p) => p.split('\n').map((l) => l.trim()).filter(Boolean).join(' '))
    .filter(Boolean);
  return { fileSha256: createHash('sha256').update(raw).digest('hex'), text: paragraphs.join('\n\n') };
}

// ---------------------------------------------------------------- output formatting
const round = (x, digits = 6) => Number(x.toFixed(digits));

// Sorted keys, 2-space indent, arrays of primitives on one line.
function stableStringify(value, indent = '') {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  const next = indent + '  ';
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    if (value.every((v) => v === null || typeof v !== 'object')) {
      return '[' + value.map((v) => JSON.stringify(v)).join(', ') + ']';
    }
    return '[\n' + value.map((v) => next + stableStringify(v, next)).join(',\n') + '\n' + indent + ']';
  }
  const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort();
  if (keys.length === 0) return '{}';
  return (
    '{\n' +
    keys.map((k) => next + JSON.stringify(k) + ': ' + stableStringify(value[k], next)).join(',\n') +
    '\n' + indent + '}'
  );
}

// ---------------------------------------------------------------- main
async function main() {
  const args = parseArgs(process.argv.slice(2));
  if (args.help) {
    console.log('usage: node make-reference.mjs [--model <path.gguf>] [--out <path.json>]');
    return;
  }
  const familyName = args.family ?? 'smollm2';
  const family = FAMILIES[familyName];
  if (!family) throw new Error(`unknown family ${familyName}: ${Object.keys(FAMILIES).join(', ')}`);
  const MODEL_FILE = family.file;
  const EXPECTED_SHA256 = family.sha256;
  const modelPath = resolveModelPath(args, family);
  const outPath = path.resolve(args.out ?? path.join(repoRoot, '__test__', 'fixtures', family.out));
  if (!existsSync(modelPath)) {
    throw new Error(`model not found: ${modelPath} (pass --model or set SEEDINFER_DEFAULT_GGUF)`);
  }
  const modelSha256 = sha256File(modelPath);
  if (modelSha256 !== EXPECTED_SHA256) {
    console.warn(`warning: model sha256 ${modelSha256} != expected ${EXPECTED_SHA256}`);
  }

  const nodeLlamaCppVersion = await getModuleVersion();

  const llama = await getLlama({
    gpu: false,
    build: 'never',
    maxThreads: THREADS,
    logLevel: LlamaLogLevel.error,
  });
  const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: CONTEXT_SIZE,
    batchSize: BATCH_SIZE,
    sequences: 1,
    threads: THREADS,
    flashAttention: false,
  });
  const sequence = context.getSequence();
  const isEog = (t) => model.isEogToken(t);

  // ------------------------------------------------------------ tokenization
  const tokenizationCases = [...TOKENIZATION_CASES, ...family.specialCases].map(([name, text]) => ({
    name,
    text,
    noSpecial: model.tokenize(text, false),
    special: model.tokenize(text, true),
  }));

  // ------------------------------------------------------------ teacher forcing
  const bos = family.bos ? [model.tokens.bos] : [];
  async function teacherForce(text) {
    const tfTokens = [...bos, ...model.tokenize(text, false)];
    if (tfTokens.length < 300) throw new Error(`passage too short: ${tfTokens.length} tokens`);
    if (tfTokens.length > CONTEXT_SIZE) throw new Error(`passage too long: ${tfTokens.length} tokens`);
    return teacherForceTokens(tfTokens);
  }
  async function teacherForceTokens(tfTokens) {
    await sequence.clearHistory();
    // Gemma's 262,144-token probability maps exhaust the JS heap over a whole passage: it is evaluated in chunks
    // of positions, each continuing the sequence, and reduced to what the fixture keeps before the next.
    const chunk = family.teacherForceChunk ?? tfTokens.length;
    const tfResults = [];
    for (let start = 0; start < tfTokens.length; start += chunk) {
      const results = await sequence.controlledEvaluate(
        tfTokens.slice(start, start + chunk).map((token) => [
          token,
          {
            generateNext: {
              token: true,
              probabilities: true,
              logits: { filter: { tokens: [], includeTop: 2 } },
              options: { temperature: 0 },
            },
          },
        ]),
      );
      for (const r of results) {
        if (r == null || r.next?.probabilities == null) {
          tfResults.push(r);
          continue;
        }
        const it = r.next.probabilities.entries();
        const top = [it.next().value, it.next().value];
        tfResults.push({
          next: { token: r.next.token, probabilities: new Map(top), logits: r.next.logits },
        });
      }
    }
    const out = { tokens: tfTokens, argmax: [], top1Prob: [], top2: [], top2Margin: [], top2LogitMargin: [] };
    for (let i = 0; i < tfTokens.length; i++) {
      const r = tfResults[i];
      if (r == null || r.next?.probabilities == null) throw new Error(`no output at position ${i}`);
      const it = r.next.probabilities.entries();
      const [t1, p1] = it.next().value;
      const [t2, p2] = it.next().value;
      if (r.next.token !== t1) {
        // greedy sampler and probability ordering disagree only on exact ties
        throw new Error(`position ${i}: sampled ${r.next.token} but top prob token ${t1}`);
      }
      const logitEntries = [...(r.next.logits?.entries() ?? [])];
      out.argmax.push(t1);
      out.top1Prob.push(round(p1));
      out.top2.push(t2);
      out.top2Margin.push(round(p1 - p2));
      out.top2LogitMargin.push(logitEntries.length >= 2 ? round(logitEntries[0][1] - logitEntries[1][1], 4) : null);
    }
    return out;
  }
  const passage = readPassage();
  const { tokens: tfTokens, argmax, top1Prob, top2, top2Margin, top2LogitMargin } = await teacherForce(passage.text);
  const prosePassage = readProsePassage();
  const prose = await teacherForce(prosePassage.text);

  // ------------------------------------------------------------ greedy generation
  const greedy = [];
  for (const [name, prompt] of [...GREEDY_PROMPTS, ['chat_template', family.chatPrompt]]) {
    await sequence.clearHistory();
    const promptTokens = [...bos, ...model.tokenize(prompt, true)];
    const generated = [];
    let stoppedAtEog = false;
    for await (const token of sequence.evaluate(promptTokens, {
      temperature: 0,
      yieldEogToken: true,
      // explicitly no repeat / DRY penalties, no token bias, no grammar
    })) {
      generated.push(token);
      if (isEog(token)) {
        stoppedAtEog = true;
        break;
      }
      if (generated.length >= GREEDY_TOKENS) break;
    }
    // llama.cpp's confidence at each greedy step: the top-2 probability margin when its own continuation is
    // teacher-forced, so a consumer can tell decisive steps from near-ties.
    const forced = await teacherForceTokens([...promptTokens, ...generated.slice(0, -1)]);
    const stepTop2Margin = forced.top2Margin.slice(promptTokens.length - 1);
    greedy.push({
      name,
      prompt,
      promptTokens,
      tokens: generated,
      stepTop2Margin,
      text: model.detokenize(generated, false),
      stoppedAtEog,
    });
  }

  const release = llama.llamaCppRelease;
  const fixture = {
    generatedBy: {
      command:
        `cd bench/peers && NODE_LLAMA_CPP_SKIP_DOWNLOAD=true npm install && node make-reference.mjs --family ${familyName} [--model <${MODEL_FILE}>]`,
      date: utcDay(),
      nodeLlamaCpp: nodeLlamaCppVersion,
      llamaCpp: {
        repo: release.repo,
        release: release.release,
        buildType: llama.buildType,
        gpu: llama.gpu,
        // CPU feature line of the dynamically selected ggml CPU backend; outputs may differ
        // in the last bits on machines that select a different backend variant.
        systemInfo: llama.systemInfo.trim(),
      },
      node: process.version,
      model: {
        file: MODEL_FILE,
        sha256: modelSha256,
        sizeBytes: statSync(modelPath).size,
        vocabularyType: model.vocabularyType ?? null,
        trainContextSize: model.trainContextSize,
        tokens: {
          bos: model.tokens.bos,
          eos: model.tokens.eos,
          eot: model.tokens.eot,
          nl: model.tokens.nl,
          shouldPrependBosToken: model.tokens.shouldPrependBosToken,
          shouldAppendEosToken: model.tokens.shouldAppendEosToken,
        },
      },
      settings: {
        contextSize: CONTEXT_SIZE,
        batchSize: BATCH_SIZE,
        threads: THREADS,
        flashAttention: false,
        gpuLayers: 0,
        bos: family.bos
          ? 'prepended to passages and prompts (token arrays are [bos, ...tokenize()]); tokenization cases have none'
          : 'never prepended (all token arrays below are exactly what tokenize() returned; no BOS/EOS added)',
      },
    },
    tokenization: {
      api: 'model.tokenize(text, specialTokens) -> native common_tokenize(vocab, text, add_special=false, parse_special=specialTokens)',
      fields: {
        noSpecial: 'model.tokenize(text, false): add_special=false (no BOS), parse_special=false (special-token text is tokenized as plain text)',
        special: 'model.tokenize(text, true): add_special=false (no BOS), parse_special=true (special-token text maps to special token ids)',
      },
      cases: tokenizationCases,
    },
    teacherForcedProse: {
      source: {
        path: PASSAGE_SOURCE,
        lines: PROSE_LINES,
        fileSha256: prosePassage.fileSha256,
        description: 'GPL-3 preamble and terms 0-1 as running prose: lines joined within paragraphs by spaces, paragraphs separated by a blank line',
      },
      text: prosePassage.text,
      tokenizeFlags: { specialTokens: false, bos: family.bos },
      ...prose,
    },
    teacherForced: {
      source: {
        path: PASSAGE_SOURCE,
        lines: PASSAGE_LINES,
        fileSha256: passage.fileSha256,
        description: 'GPL-3 preamble, verbatim lines (1-based, inclusive) joined with "\\n", no trailing newline',
      },
      text: passage.text,
      tokenizeFlags: { specialTokens: false, bos: family.bos },
      tokens: tfTokens,
      api: 'sequence.controlledEvaluate(tokens.map(t => [t, {generateNext: {token: true, probabilities: true, logits: {filter: {tokens: [], includeTop: 2}}, options: {temperature: 0}}}])) in one call on an empty sequence',
      fields: {
        argmax: 'argmax[i] = greedy next token given tokens[0..=i]',
        top1Prob: 'softmax probability of argmax[i] (rounded to 1e-6)',
        top2: 'second most probable next token',
        top2Margin: 'p(top1) - p(top2) (rounded to 1e-6); small values mean near-ties',
        top2LogitMargin: 'logit(top1) - logit(top2) (rounded to 1e-4)',
      },
      argmax,
      top1Prob,
      top2,
      top2Margin,
      top2LogitMargin,
    },
    greedy: {
      api: 'sequence.clearHistory(); sequence.evaluate(promptTokens, {temperature: 0, yieldEogToken: true}) -> greedy sampler only (no top-k/top-p/min-p, no repeat or DRY penalty, no token bias); stop after 32 tokens or at the first EOG token (included)',
      promptTokenizeFlags: { specialTokens: true, bos: family.bos },
      maxTokens: GREEDY_TOKENS,
      detokenize: 'model.detokenize(tokens, false)',
      cases: greedy,
    },
  };

  writeFileSync(outPath, stableStringify(fixture) + '\n');
  console.log(
    `wrote ${path.relative(process.cwd(), outPath)}: ${tokenizationCases.length} tokenization cases, ` +
      `${tfTokens.length} teacher-forced positions, ${greedy.length} greedy prompts`,
  );

  await context.dispose();
  await model.dispose();
  await llama.dispose();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
