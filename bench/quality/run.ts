// Perplexity of each weight format on the same real English prose, against a reference row: the table every weight
// format is judged by (issue 7). See README.md.
//
//   npm run bench:quality                                             # both models, every format, 20,480 tokens
//   npm run bench:quality -- --model stories --formats q8_0,q4_0      # the reference row always runs
//   npm run -s bench:quality -- --model smollm2 --tokens 4096 --json  # -s keeps npm's banner out of the JSON
//   npm run bench:quality -- --json-file quality.json                 # the table, and the JSON report in a file
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Model, defaultCacheDir, ensureDefaultModel, quantizeModel } from '../../src/index.js';
import type { LoadOptions, ModelInfo } from '../../index.js';
import { native } from '../../src/native.js';
import { argument } from '../cli-args.js';
import { loadCorpus } from '../longctx/corpus.js';

/** Where the evaluated text starts in the corpus; the slice is the first `--tokens` tokens from there. */
const SLICE_START = 'CHAPTER 1. Loomings.';
/** Characters tokenized from SLICE_START: more than enough for the tokens asked for (checked). */
const CHARACTERS_PER_TOKEN_BOUND = 8;

/** Formats converted from the model's own weights at load (`Model.load(path, { weights })`): every matrix, the
 * embedding and output head too. Not in the default table (the file rows below change the layer matrices only). */
const LOAD_FORMATS = ['load:q8_0', 'load:q4_0', 'load:q4_1', 'load:f16'] as const;
/** Formats written to a file by `quantizeModel` (the layer matrices; embedding, output head and norms as stored),
 * then loaded as stored. */
const FILE_FORMATS = ['q8_0', 'q4_0', 'q4_1', 'seedlm4', 'q3_rtn', 'seedlm3'] as const;
/** llama.cpp's mixes written by `quantizeModel` (the whole model, as llama-quantize writes it: embedding and head in
 * the mix's types too), then loaded as stored. GGUF sources only: the stories260K checkpoint has none. */
const MIX_FORMATS = ['q2_k', 'q3_k_m', 'q4_k_m', 'q5_k_m', 'q6_k', 'iq4_xs', 'iq4_nl'] as const;
const DEFAULT_FORMATS = ['reference', 'stored', ...FILE_FORMATS, ...MIX_FORMATS];
/** Bits per weight of the load-time formats (blocks of 32: 32 values plus an f16 scale, and an f16 minimum for q4_1). */
const FORMAT_BITS: Record<string, number> = { f32: 32, f16: 16, q8_0: 8.5, q4_0: 4.5, q4_1: 5 };

interface ModelSpec {
  key: 'smollm2' | 'stories';
  name: string;
  path: string;
  /** A remark on the reference row printed under the table. */
  referenceNote: string;
}

interface Row {
  format: string;
  status: 'ok' | 'unavailable' | 'error';
  note?: string;
  perplexity?: number;
  /** Percent change of perplexity against the reference row. */
  deltaPercent?: number;
  /** Summed negative log-likelihood, nats. */
  nll?: number;
  scoredTokens?: number;
  /** Bits per weight of the layer matrices (attention and MLP projections) as held for compute. */
  bitsPerWeight?: number;
  /** The same, as stored in the model file, for GGUF files. */
  fileBitsPerWeight?: number;
  /** Format of the token embedding as held for compute (also the output projection when they are tied). */
  embedding?: string;
  /** The file the row's weights were loaded from. */
  file?: string;
  fileBytes?: number;
  /** Resident weight bytes (all matrices, embedding and norms). */
  weightBytes?: number;
  computeFormat?: string;
  weightFallbacks?: string[];
  loadSeconds?: number;
  evalSeconds?: number;
  quantizeSeconds?: number;
}

const list = (value: string | undefined, fallback: string) =>
  (value ?? fallback)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
const modelChoice = argument('model') ?? 'all';
const tokenCount = Number(argument('tokens') ?? 20_480);
const window = Number(argument('window') ?? 512);
const threads = Number(argument('threads') ?? 2);
const json = process.argv.includes('--json');
const requested = list(argument('formats'), DEFAULT_FORMATS.join(','));
// The reference is what Δ% is measured against, so it always runs, first.
const formats = ['reference', ...requested.filter((f) => f !== 'reference')];
/** `--reference-perplexity X`: the reference row's perplexity from an earlier run of the same slice (one model only),
 * so that added rows need not pay for the f32 reference again. */
const givenReference = argument('reference-perplexity') === undefined ? undefined : Number(argument('reference-perplexity'));
const known = new Set<string>(['reference', 'stored', ...LOAD_FORMATS, ...FILE_FORMATS, ...MIX_FORMATS]);
if (
  !['smollm2', 'stories', 'all'].includes(modelChoice) ||
  ![tokenCount, window, threads].every((n) => Number.isInteger(n) && n >= 2) ||
  (givenReference !== undefined && (!(givenReference > 1) || modelChoice === 'all')) ||
  formats.some((f) => !known.has(f))
) {
  console.error('usage: bench/quality/run.ts [--model smollm2|stories|all] [--formats reference,stored,q8_0,q4_0,q4_1,seedlm4,q3_rtn,seedlm3,');
  console.error('       q2_k,q3_k_m,q4_k_m,q5_k_m,q6_k,iq4_xs,iq4_nl,load:q8_0,load:q4_0,load:q4_1,load:f16]');
  console.error('       [--tokens N (>= 2)] [--window N] [--threads N] [--stories DIR] [--json] [--json-file PATH]');
  process.exit(2);
}

const started = Date.now();
const progress = (line: string) => process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(5)} s] ${line}\n`);
const seconds = (since: number) => (performance.now() - since) / 1000;

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const storiesDir = path.resolve(argument('stories') ?? process.env.SEEDINFER_STORIES_DIR ?? path.join(repoRoot, '..', 'shared', 'models', 'stories260K'));
const quantizedDir = path.join(defaultCacheDir(), 'quantized');
const ggufTools = native();

const models: ModelSpec[] = [];
if (modelChoice !== 'stories') {
  models.push({
    key: 'smollm2',
    name: 'SmolLM2-135M-Instruct (Q4_1 GGUF)',
    path: await ensureDefaultModel(),
    referenceNote:
      'The reference is the GGUF\'s weights dequantised to f32: its layer matrices are stored Q4_1 (5 bits per weight) ' +
      'and its embedding, tied to the output projection, Q8_0, so the reference is already a 4-bit model. `stored` ' +
      'computes with the file\'s own blocks. The container rows re-quantise the layer matrices only (quantizeModel; the ' +
      'Q8_0 embedding and output projection stay): the q4_1 row gets the same blocks of 32 back, so it is lossless ' +
      'against the reference and not a fair competitor. The llama.cpp mix rows (q2_k … iq4_nl) re-quantise every ' +
      'tensor as llama-quantize would (the tied embedding, 576 wide, stays Q8_0); SmolLM2\'s 576-wide matrices are ' +
      'not whole 256-element super-blocks, so only ffn_down takes the K-quant and the rest llama.cpp\'s 32-wide ' +
      'fallbacks (see the compute column), and the Q4_1 grid is quantised a second time.',
  });
}
if (modelChoice !== 'smollm2') {
  models.push({
    key: 'stories',
    name: 'stories260K (float32 safetensors)',
    path: storiesDir,
    referenceNote:
      'The reference is the float32 checkpoint. stories260K was trained on children\'s stories (TinyStories) with a ' +
      '512-token vocabulary, so its perplexity on Moby-Dick is high; the table compares formats, not models. Its down ' +
      'projections have 172 columns, not a multiple of 32: they stay f32 in the 32-block formats (q8_0, q4_0, q4_1, ' +
      'q3_rtn); SeedLM pads their last block (22 blocks of 8, 15 of 12).',
  });
}

const corpus = await loadCorpus();
const sliceAt = corpus.text.indexOf(SLICE_START);
if (sliceAt < 0) throw new Error(`the corpus has no "${SLICE_START}"`);
const sliceText = corpus.text.slice(sliceAt, sliceAt + tokenCount * CHARACTERS_PER_TOKEN_BOUND);

/** Bits per weight of `info`'s layer matrices when converted to `format`, matrices in `fallbacks` counted as f32. */
function convertedBits(info: ModelInfo, format: string): number {
  const qDim = info.attentionHeads * info.headDim;
  const kvDim = info.kvHeads * info.headDim;
  const roles: [RegExp, number][] = [
    [/(attn_q|q_proj)\.weight$/, info.hiddenSize * qDim],
    [/(attn_k|k_proj)\.weight$/, info.hiddenSize * kvDim],
    [/(attn_v|v_proj)\.weight$/, info.hiddenSize * kvDim],
    [/(attn_output|o_proj)\.weight$/, qDim * info.hiddenSize],
    [/(ffn_gate|gate_proj)\.weight$/, info.hiddenSize * info.intermediateSize],
    [/(ffn_up|up_proj)\.weight$/, info.hiddenSize * info.intermediateSize],
    [/(ffn_down|down_proj)\.weight$/, info.intermediateSize * info.hiddenSize],
  ];
  const perLayer = roles.reduce((sum, [, n]) => sum + n, 0);
  let bits = info.layers * perLayer * FORMAT_BITS[format];
  for (const fallback of info.weightFallbacks) {
    const name = fallback.split(':')[0];
    const role = roles.find(([pattern]) => pattern.test(name));
    if (role) bits += role[1] * (32 - FORMAT_BITS[format]);
  }
  return bits / (info.layers * perLayer);
}

const EMBEDDING = /^(token_embd\.weight|model\.embed_tokens\.weight)/;
const FILE_TYPE_BITS: Record<string, number> = { F32: 32, F16: 16, BF16: 16 };

/** Bits per weight of the layer matrices as a GGUF file stores them. */
function storedBits(file: string): number {
  const layerMatrix = /^blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$/;
  let bytes = 0;
  let weights = 0;
  for (const t of ggufTools.ggufTensors(file)) {
    if (!layerMatrix.test(t.name)) continue;
    bytes += t.bytes;
    weights += t.shape.reduce((a, b) => a * b, 1);
  }
  if (weights === 0) throw new Error(`${file} has no layer matrices named blk.N.*.weight`);
  return (bytes * 8) / weights;
}

const isGguf = (file: string) => fs.statSync(file).isFile();

/** The file holding `spec`'s model in `format`, written by `quantizeModel` unless cached; `undefined` (the row marked
 * unavailable) for a llama.cpp mix of a model without a GGUF file. */
async function quantizedFile(spec: ModelSpec, format: string, row: Row): Promise<string | undefined> {
  if ((MIX_FORMATS as readonly string[]).includes(format) && !isGguf(spec.path)) {
    row.status = 'unavailable';
    row.note = "llama.cpp's mixes are written from GGUF files; this checkpoint is a Hugging Face directory";
    return undefined;
  }
  const file = path.join(quantizedDir, `${spec.key}.${format}.gguf`);
  if (!fs.existsSync(file)) {
    fs.mkdirSync(quantizedDir, { recursive: true });
    progress(`${spec.key} ${format}: quantizeModel → ${file}`);
    const t0 = performance.now();
    let last = 0;
    await quantizeModel(spec.path, {
      format: format as (typeof FILE_FORMATS | typeof MIX_FORMATS)[number],
      out: file,
      onProgress: (e) => {
        if (Date.now() - last < 10_000) return;
        last = Date.now();
        progress(`${spec.key} ${format}: ${e.phase} ${e.name} ${e.completed}${e.total === undefined ? '' : `/${e.total}`}`);
      },
    });
    row.quantizeSeconds = seconds(t0);
  }
  return file;
}

/** Loads `spec` in `format` and scores `tokens`. */
async function runRow(spec: ModelSpec, format: string, tokens: number[], modelWindow: number): Promise<Row> {
  const row: Row = { format, status: 'ok' };
  let model: Model | undefined;
  try {
    let file = spec.path;
    const options: LoadOptions = { threads };
    if (format === 'reference') options.weights = 'f32';
    else if ((LOAD_FORMATS as readonly string[]).includes(format)) options.weights = format.slice('load:'.length) as LoadOptions['weights'];
    else if (format !== 'stored') {
      const quantized = await quantizedFile(spec, format, row);
      if (!quantized) return row;
      file = quantized;
    }
    progress(`${spec.key} ${format}: loading`);
    const t0 = performance.now();
    model = await Model.load(file, options);
    row.loadSeconds = seconds(t0);
    const info = model.info;
    row.file = file;
    row.fileBytes = info.fileBytes;
    row.weightBytes = info.weightBytes;
    row.computeFormat = info.computeFormat;
    row.weightFallbacks = info.weightFallbacks;
    const gguf = isGguf(file);
    if (gguf) row.fileBitsPerWeight = storedBits(file);
    const fileTypes = Object.keys(info.fileTensorFormats);
    // A checkpoint of one float type (stories260K: F32) holds every tensor in it.
    const singleType = fileTypes.length === 1 ? fileTypes[0] : undefined;
    if (options.weights) {
      row.bitsPerWeight = convertedBits(info, options.weights);
      const embeddingKept = info.weightFallbacks.some((f) => EMBEDDING.test(f));
      row.embedding = embeddingKept ? 'f32' : options.weights;
    } else {
      row.bitsPerWeight = gguf ? row.fileBitsPerWeight : FILE_TYPE_BITS[singleType ?? ''];
      row.embedding = gguf
        ? ggufTools.ggufTensors(file).find((t) => t.name === 'token_embd.weight')?.tensorType.toLowerCase()
        : singleType?.toLowerCase();
    }
    if (info.tiedEmbeddings && row.embedding) row.embedding += ' (tied)';
    progress(`${spec.key} ${format}: scoring ${tokens.length} tokens in windows of ${modelWindow}`);
    const t1 = performance.now();
    const result = await model.perplexity(tokens, { window: modelWindow });
    row.evalSeconds = seconds(t1);
    row.perplexity = result.perplexity;
    row.nll = result.nll;
    row.scoredTokens = result.tokens;
    progress(`${spec.key} ${format}: perplexity ${result.perplexity.toFixed(4)} in ${row.evalSeconds.toFixed(1)} s`);
  } catch (error) {
    row.status = 'error';
    const e = error as { code?: string; message?: string };
    row.note = `${e.code ?? 'ERROR'}: ${e.message ?? String(error)}`;
    progress(`${spec.key} ${format}: ${row.note}`);
  } finally {
    model?.dispose();
  }
  return row;
}

interface ModelResult {
  model: string;
  key: string;
  path: string;
  tokens: number;
  /** Characters of the corpus the tokens cover. */
  characters: number;
  window: number;
  windows: number;
  scoredTokens: number;
  referenceNote: string;
  kernelIsa?: string;
  rows: Row[];
}

const results: ModelResult[] = [];
for (const spec of models) {
  // Tokenized once, by the reference model: every row scores the same ids.
  const tokenizer = await Model.load(spec.path, { threads });
  const all = tokenizer.tokenize(sliceText, { addBos: true, special: false });
  if (all.length < tokenCount) throw new Error(`${spec.key}: the slice gives only ${all.length} tokens, fewer than --tokens ${tokenCount}`);
  const tokens = all.slice(0, tokenCount);
  const characters = tokenizer.detokenize(tokens, { skipSpecial: true }).length;
  const modelWindow = Math.min(window, tokenizer.info.contextLength);
  const kernelIsa = tokenizer.info.kernelIsa;
  tokenizer.dispose();
  progress(`${spec.key}: ${tokens.length} tokens (${characters} characters from "${SLICE_START}"), window ${modelWindow}`);
  const rows: Row[] = [];
  for (const format of formats) {
    if (format === 'reference' && givenReference !== undefined) {
      rows.push({ format, status: 'ok', perplexity: givenReference, note: 'given with --reference-perplexity (an earlier run)' });
    } else {
      rows.push(await runRow(spec, format, tokens, modelWindow));
    }
  }
  const reference = rows[0].perplexity;
  for (const row of rows) {
    if (row.perplexity !== undefined && reference !== undefined) row.deltaPercent = (row.perplexity / reference - 1) * 100;
  }
  const windows = Math.ceil(tokens.length / modelWindow);
  results.push({
    model: spec.name,
    key: spec.key,
    path: spec.path,
    tokens: tokens.length,
    characters,
    window: modelWindow,
    windows,
    scoredTokens: tokens.length - windows,
    referenceNote: spec.referenceNote,
    kernelIsa,
    rows,
  });
}

const report = {
  date: new Date().toISOString(),
  machine: { cpu: os.cpus()[0]?.model ?? 'unknown', logicalCpus: os.cpus().length, threads },
  corpus: {
    ...corpus.origin,
    slice: `the first --tokens tokens (BOS added as the tokenizer asks) of the normalised text from "${SLICE_START}" (the start of the novel's first chapter)`,
  },
  method:
    'model.perplexity: non-overlapping windows, each scored from an empty cache; perplexity = exp(summed NLL / scored tokens), ' +
    'scored tokens = tokens - windows; log-softmax in float64; KV cache f16 (the default)',
  window,
  models: results,
};

const mb = (bytes: number | undefined) => (bytes === undefined ? '' : (bytes / 1e6).toFixed(1));
const fixed = (n: number | undefined, digits: number) => (n === undefined ? '' : n.toFixed(digits));
const jsonFile = argument('json-file');
if (jsonFile) fs.writeFileSync(jsonFile, `${JSON.stringify(report, null, 2)}\n`);
if (json) {
  console.log(JSON.stringify(report, null, 2));
} else {
  const c = report.corpus;
  console.log(`# Perplexity by weight format\n`);
  console.log(`${report.date.slice(0, 10)}, ${report.machine.cpu} (${report.machine.logicalCpus} logical CPUs), ${threads} threads.`);
  console.log(`Corpus: ${c.title}, npm ${c.source} (file sha256 ${c.fileSha256.slice(0, 12)}…), ${c.slice}.\n`);
  for (const m of results) {
    console.log(`## ${m.model}\n`);
    console.log(`${m.tokens} tokens (${m.characters} characters), windows of ${m.window}: ${m.windows} windows, ${m.scoredTokens} scored tokens. Kernels: ${m.kernelIsa}.\n`);
    console.log(
      '| format | perplexity | Δ% vs reference | bits/weight (layer matrices) | embedding | file MB | weights MB | load s | eval s | eval tok/s | compute |',
    );
    console.log('|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---|');
    for (const r of m.rows) {
      if (r.status !== 'ok') {
        console.log(`| ${r.format} | ${r.status}: ${r.note} | | | | | | | | | |`);
        continue;
      }
      const bits =
        r.format === 'reference' && r.fileBitsPerWeight !== undefined
          ? `${fixed(r.bitsPerWeight, 2)} (file ${fixed(r.fileBitsPerWeight, 2)})`
          : fixed(r.bitsPerWeight, 2);
      const delta = r.format === 'reference' ? '—' : `${(r.deltaPercent ?? 0) >= 0 ? '+' : ''}${fixed(r.deltaPercent, 2)}`;
      const rate = r.evalSeconds ? (m.tokens / r.evalSeconds).toFixed(0) : '';
      console.log(
        `| ${r.format} | ${fixed(r.perplexity, 4)} | ${delta} | ${bits} | ${r.embedding ?? '?'} | ${mb(r.fileBytes)} | ${mb(r.weightBytes)} | ${fixed(r.loadSeconds, 1)} | ${fixed(r.evalSeconds, 1)} | ${rate} | ${r.computeFormat ?? ''} |`,
      );
    }
    console.log(`\n${m.referenceNote}`);
    // One line per kind of fallback: layer numbers and the requested format left out.
    const fallbacks = [...new Set(m.rows.flatMap((r) => (r.weightFallbacks ?? []).map((f) => f.replace(/\.\d+\./, '.*.').replace(/ instead of \S+$/, ''))))];
    if (fallbacks.length > 0) console.log(`\nweightFallbacks: ${fallbacks.join('; ')}.`);
    console.log();
  }
}
