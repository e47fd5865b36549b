// Malformed model files must fail with a typed SeedinferError (exact `code`), never crash the process, and leave
// the library usable: after every case a valid model still loads and generates.
import test, { type ExecutionContext } from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Model, SeedinferError } from '../src/index.js';
import { GGML_TYPE, encodeQ8_0, gguf, rng, tinyLlama, tinySpmVocab, writeGguf, type GgufSpec } from './helpers/gguf-writer.js';
import { storiesDir, tempDir } from './helpers/paths.js';
import { readSafetensors, writeSafetensors, type SafetensorsTensor } from './helpers/safetensors-writer.js';

const work = tempDir('seedinfer-bad-input-');
test.after.always(() => fs.rmSync(work, { recursive: true, force: true }));

let fileCounter = 0;
function writeTemp(name: string, bytes: Uint8Array): string {
  const file = path.join(work, `${fileCounter++}-${name}`);
  fs.writeFileSync(file, bytes);
  return file;
}

const valid = tinyLlama();
const validLayout = writeGguf(valid.spec);
const validPath = writeTemp('valid.gguf', validLayout.bytes);

/** A copy of the valid spec that `edit` may change (replace entries; tensor data is shared). */
function variant(edit: (spec: GgufSpec) => void): Buffer {
  const spec: GgufSpec = { ...valid.spec, kv: valid.spec.kv.map(([k, v]) => [k, v]), tensors: valid.spec.tensors.map((t) => ({ ...t })) };
  edit(spec);
  return writeGguf(spec).bytes;
}

/** The library still works: the valid tiny model loads and generates. */
async function stillWorks(t: ExecutionContext): Promise<void> {
  const model = await Model.load(validPath, { threads: 1 });
  const result = await model.createSession().generateText([1], { maxTokens: 3, temperature: 0, ignoreEos: true });
  t.is(result.tokenIds.length, 3);
  model.dispose();
}

/** Loading `target` rejects with a SeedinferError whose code is one of `codes`; returns it. */
async function expectLoadError(
  t: ExecutionContext,
  label: string,
  target: string,
  codes: string[],
  messageIncludes?: string,
): Promise<SeedinferError | undefined> {
  let error: unknown;
  try {
    const model = await Model.load(target, { threads: 1 });
    model.dispose();
  } catch (e) {
    error = e;
  }
  if (!(error instanceof SeedinferError)) {
    t.fail(`${label}: expected a SeedinferError with code ${codes.join(' or ')}, got ${error === undefined ? 'a successful load' : String(error)}`);
    return undefined;
  }
  t.log(`${label}: ${error.code} — ${error.message}`);
  t.true(codes.includes(error.code), `${label}: code ${error.code} (${error.message}), expected ${codes.join(' or ')}`);
  if (messageIncludes !== undefined) t.true(error.message.includes(messageIncludes), `${label}: message "${error.message}" does not name ${messageIncludes}`);
  return error;
}

// ---- GGUF ----

test('the valid tiny GGUF loads, reports its tensor formats and generates', async (t) => {
  const model = await Model.load(validPath, { threads: 1 });
  t.is(model.info.fileFormat, 'gguf');
  t.is(model.info.architecture, 'llama');
  t.is(model.info.ropeStyle, 'interleaved');
  t.true(model.info.tiedEmbeddings);
  t.is(model.info.vocabSize, valid.vocabSize);
  t.deepEqual({ ...model.info.fileTensorFormats }, valid.formats);
  t.deepEqual(valid.formats, { F32: 6, Q8_0: 14 });
  // SentencePiece merges in score order: "▁Once ▁upon ▁a ▁time".
  const { tokens } = tinySpmVocab();
  t.deepEqual(model.tokenize('Once upon a time'), [1, ...['▁Once', '▁upon', '▁a', '▁time'].map((p) => tokens.indexOf(p))]);
  const result = await model.createSession().generateText('Once upon a time', { maxTokens: 5, temperature: 0, ignoreEos: true });
  t.is(result.tokenIds.length, 5);
  t.true(result.tokenIds.every((id) => Number.isInteger(id) && id >= 0 && id < valid.vocabSize));
  model.dispose();
});

test('wrong magic → BAD_MAGIC', async (t) => {
  const bytes = Buffer.from(validLayout.bytes);
  bytes.write('GGUX', 0, 'latin1');
  await expectLoadError(t, 'magic GGUX', writeTemp('bad-magic.gguf', bytes), ['BAD_MAGIC']);
  await expectLoadError(t, 'text file named .gguf', writeTemp('text.gguf', Buffer.from('hello, I am not a model\n')), ['BAD_MAGIC']);
  await stillWorks(t);
});

test('truncated GGUF at several cut points → TRUNCATED_FILE', async (t) => {
  const { bytes, kvStart, tensorInfoStart, dataStart } = validLayout;
  const cuts: Array<[string, number]> = [
    ['inside the magic', 2],
    ['inside the header (tensor count)', 10],
    ['inside the header (kv count)', 20],
    ['inside the first metadata key length', kvStart + 5],
    ['inside the metadata (token array)', Math.floor((kvStart + tensorInfoStart) / 2)],
    ['at the end of the metadata', tensorInfoStart],
    ['inside the tensor table', tensorInfoStart + 20],
    ['inside the tensor table (middle)', Math.floor((tensorInfoStart + dataStart) / 2)],
    ['at the start of the tensor data', dataStart],
    ['inside the first tensor', dataStart + 100],
    ['inside the last tensor', bytes.length - 50],
  ];
  const observed: Record<string, string> = {};
  for (const [label, cut] of cuts) {
    const error = await expectLoadError(t, `cut ${label} (${cut} of ${bytes.length} bytes)`, writeTemp(`cut-${cut}.gguf`, bytes.subarray(0, cut)), [
      'TRUNCATED_FILE',
      'CORRUPT_FILE',
    ]);
    observed[label] = error?.code ?? 'none';
  }
  t.log(observed);
  await stillWorks(t);
});

test('GGUF versions 1 and 4 → UNSUPPORTED_GGUF_VERSION', async (t) => {
  for (const version of [1, 4]) {
    await expectLoadError(t, `version ${version}`, writeTemp(`v${version}.gguf`, variant((s) => (s.version = version))), ['UNSUPPORTED_GGUF_VERSION']);
  }
  await stillWorks(t);
});

test('an IQ2_XXS tensor → UNSUPPORTED_TENSOR_TYPE naming IQ2_XXS', async (t) => {
  const bytes = variant((spec) => {
    const i = spec.tensors.findIndex((x) => x.name === 'blk.0.ffn_down.weight');
    const elements = spec.tensors[i].shape.reduce((a, b) => a * b, 1);
    // IQ2_XXS: 256-element super-blocks of 66 bytes.
    spec.tensors[i] = { ...spec.tensors[i], type: GGML_TYPE.IQ2_XXS, data: new Uint8Array(Math.ceil(elements / 256) * 66) };
  });
  await expectLoadError(t, 'IQ2_XXS tensor', writeTemp('iq2xxs.gguf', bytes), ['UNSUPPORTED_TENSOR_TYPE'], 'IQ2_XXS');
  await stillWorks(t);
});

test('K-quant tensors load as stored; short data, partial super-blocks and a NaN super-block scale are typed errors naming the tensor', async (t) => {
  // A model 256 wide, so that its rows are whole 256-element super-blocks.
  const wide = tinyLlama({ hidden: 256, ffn: 256, heads: 4, kvHeads: 2 });
  for (const [type, blockBytes, scaleAt] of [['Q4_K', 144, 0], ['Q5_K', 176, 0], ['Q6_K', 210, 208]] as const) {
    const withType = (base: typeof wide, extraBlocks: number, edit?: (data: Buffer) => void) => {
      const spec: GgufSpec = { ...base.spec, tensors: base.spec.tensors.map((x) => ({ ...x })) };
      const i = spec.tensors.findIndex((x) => x.name === 'blk.0.ffn_gate.weight');
      const [rows, cols] = spec.tensors[i].shape;
      // Random weight bits and sub-block scales, super-block scales 2^-10 (f16 0x1400).
      const random = rng(7);
      const data = Buffer.from(Uint8Array.from({ length: Math.max(0, (Math.floor((rows * cols) / 256) + extraBlocks) * blockBytes) }, () => Math.floor(random() * 256)));
      for (let at = 0; at + blockBytes <= data.length; at += blockBytes) {
        data.writeUInt16LE(0x1400, at + scaleAt);
        if (type !== 'Q6_K') data.writeUInt16LE(0x1400, at + 2);
      }
      edit?.(data);
      spec.tensors[i] = { ...spec.tensors[i], type: GGML_TYPE[type], data };
      return writeGguf(spec).bytes;
    };
    const model = await Model.load(writeTemp(`${type}.gguf`, withType(wide, 0)), { threads: 1 });
    t.is(model.info.fileTensorFormats[type], 1, JSON.stringify(model.info.fileTensorFormats));
    t.regex(model.info.computeFormat, new RegExp(`${type} x int8 ×1`));
    t.is((await model.createSession().generateText([1, 2, 3], { maxTokens: 2, temperature: 0 })).tokenIds.length, 2);
    model.dispose();
    await expectLoadError(t, `${type} four super-blocks short`, writeTemp(`${type}-short.gguf`, withType(wide, -4)), ['TENSOR_SHAPE_MISMATCH', 'CORRUPT_FILE', 'TRUNCATED_FILE'], 'blk.0.ffn_gate.weight');
    // The default tiny model is 64 wide: its rows are a quarter of a super-block.
    await expectLoadError(t, `${type} rows of 64`, writeTemp(`${type}-partial.gguf`, withType(valid, 1)), ['TENSOR_SHAPE_MISMATCH'], 'blk.0.ffn_gate.weight');
    const nan = withType(wide, 0, (data) => data.writeUInt16LE(0x7e00, blockBytes + scaleAt));
    await expectLoadError(t, `${type} NaN super-block scale`, writeTemp(`${type}-nan.gguf`, nan), ['CORRUPT_FILE'], 'blk.0.ffn_gate.weight');
  }
  await stillWorks(t);
});

test('a missing tensor → MISSING_TENSOR naming it', async (t) => {
  const bytes = variant((spec) => {
    spec.tensors = spec.tensors.filter((x) => x.name !== 'blk.1.ffn_up.weight');
  });
  await expectLoadError(t, 'no blk.1.ffn_up.weight', writeTemp('missing.gguf', bytes), ['MISSING_TENSOR'], 'blk.1.ffn_up.weight');
  await stillWorks(t);
});

test('a mis-shaped tensor → TENSOR_SHAPE_MISMATCH', async (t) => {
  const bytes = variant((spec) => {
    const i = spec.tensors.findIndex((x) => x.name === 'blk.0.attn_q.weight');
    const [, cols] = spec.tensors[i].shape;
    spec.tensors[i] = { ...spec.tensors[i], shape: [48, cols], data: encodeQ8_0(new Float32Array(48 * cols).fill(0.01)) };
  });
  await expectLoadError(t, 'attn_q with 48 rows', writeTemp('shape.gguf', bytes), ['TENSOR_SHAPE_MISMATCH'], 'blk.0.attn_q.weight');
  await stillWorks(t);
});

test('architecture falcon → UNSUPPORTED_ARCHITECTURE naming it', async (t) => {
  const bytes = variant((spec) => {
    spec.kv = spec.kv.map(([k, v]): [string, (typeof spec.kv)[number][1]] =>
      k === 'general.architecture' ? [k, gguf.str('falcon')] : [k.replace(/^llama\./, 'falcon.'), v],
    );
  });
  await expectLoadError(t, 'falcon', writeTemp('falcon.gguf', bytes), ['UNSUPPORTED_ARCHITECTURE'], 'falcon');
  await stillWorks(t);
});

test('missing llama.block_count → INVALID_CONFIG', async (t) => {
  const bytes = variant((spec) => {
    spec.kv = spec.kv.filter(([k]) => k !== 'llama.block_count');
  });
  await expectLoadError(t, 'no llama.block_count', writeTemp('no-block-count.gguf', bytes), ['INVALID_CONFIG'], 'block_count');
  await stillWorks(t);
});

test('a metadata array claiming 2^40 elements → TRUNCATED_FILE or CORRUPT_FILE, no huge allocation', async (t) => {
  const rssBefore = process.memoryUsage().rss;
  for (const key of ['tokenizer.ggml.tokens', 'tokenizer.ggml.scores']) {
    const bytes = variant((spec) => {
      spec.kv = spec.kv.map(([k, v]) => (k === key && v.type === 'array' ? [k, { ...v, claimedCount: 2n ** 40n }] : [k, v]));
    });
    await expectLoadError(t, `${key} claims 2^40 elements`, writeTemp('huge-array.gguf', bytes), ['TRUNCATED_FILE', 'CORRUPT_FILE']);
  }
  t.true(process.memoryUsage().rss - rssBefore < 1024 * 1024 * 1024, 'resident memory grew by more than 1 GiB');
  await stillWorks(t);
});

test('more malformed GGUF structures → typed format errors', async (t) => {
  const { bytes, tensorInfoStart } = validLayout;
  const patched = (edit: (b: Buffer) => void) => {
    const copy = Buffer.from(bytes);
    edit(copy);
    return copy;
  };
  // The first tensor info: name (u64 length + bytes), n_dims u32, 2 dims u64, type u32, offset u64.
  const nDimsAt = tensorInfoStart + 8 + 'token_embd.weight'.length;
  const offsetAt = nDimsAt + 4 + 16 + 4;
  const cases: Array<[string, Buffer, string[]]> = [
    ['empty file', Buffer.alloc(0), ['TRUNCATED_FILE']],
    ['tensor count 2^60', patched((b) => b.writeBigUInt64LE(2n ** 60n, 8)), ['TRUNCATED_FILE', 'CORRUPT_FILE']],
    ['metadata count 2^60', patched((b) => b.writeBigUInt64LE(2n ** 60n, 16)), ['TRUNCATED_FILE', 'CORRUPT_FILE']],
    ['first key length 2^63', patched((b) => b.writeBigUInt64LE(2n ** 63n, 24)), ['TRUNCATED_FILE', 'CORRUPT_FILE']],
    ['tensor with 1000 dimensions', patched((b) => b.writeUInt32LE(1000, nDimsAt)), ['CORRUPT_FILE']],
    ['tensor dims whose product overflows', patched((b) => (b.writeBigUInt64LE(2n ** 62n, nDimsAt + 4), b.writeBigUInt64LE(2n ** 62n, nDimsAt + 12))), ['CORRUPT_FILE']],
    ['misaligned tensor offset', patched((b) => b.writeBigUInt64LE(3n, offsetAt)), ['CORRUPT_FILE']],
    ['tensor offset past the end', patched((b) => b.writeBigUInt64LE(2n ** 40n, offsetAt)), ['TRUNCATED_FILE', 'CORRUPT_FILE']],
    ['tensor offset near 2^64', patched((b) => b.writeBigUInt64LE(2n ** 64n - 32n, offsetAt)), ['TRUNCATED_FILE', 'CORRUPT_FILE']],
    ['duplicate tensor name', variant((s) => (s.tensors[1] = { ...s.tensors[1], name: s.tensors[0].name })), ['CORRUPT_FILE']],
    ['general.alignment 3', variant((s) => s.kv.push(['general.alignment', gguf.u32(3)])), ['CORRUPT_FILE']],
    [
      'NaN in a weight',
      variant((s) => {
        const i = s.tensors.findIndex((x) => x.name === 'output_norm.weight');
        const data = Buffer.from(s.tensors[i].data);
        data.writeFloatLE(NaN, 0);
        s.tensors[i] = { ...s.tensors[i], data };
      }),
      ['CORRUPT_FILE'],
    ],
    [
      'NaN scale in a Q8_0 block (kept quantised, so checked separately)',
      variant((s) => {
        const i = s.tensors.findIndex((x) => x.name === 'blk.0.attn_q.weight');
        const data = Buffer.from(s.tensors[i].data);
        data.writeUInt16LE(0x7e00, 0);
        s.tensors[i] = { ...s.tensors[i], data };
      }),
      ['CORRUPT_FILE'],
    ],
  ];
  for (const [label, file, codes] of cases) await expectLoadError(t, label, writeTemp('malformed.gguf', file), codes);
  await stillWorks(t);
});

test('200 seeded single-byte corruptions: each loads or throws a typed, non-INTERNAL error', async (t) => {
  const { bytes, dataStart } = validLayout;
  const random = rng(20240607);
  const codes: Record<string, number> = {};
  const internal: string[] = [];
  for (let i = 0; i < 200; i++) {
    // Half the corruptions hit the header, metadata and tensor table, where parsing happens.
    const position = Math.floor(random() * (i % 2 === 0 ? dataStart : bytes.length));
    const corrupt = Buffer.from(bytes);
    corrupt[position] ^= 1 + Math.floor(random() * 255);
    const file = writeTemp('corrupt.gguf', corrupt);
    let outcome: string;
    try {
      const model = await Model.load(file, { threads: 1 });
      try {
        const result = await model.createSession({ contextSize: 16 }).generateText([1], { maxTokens: 2, temperature: 0, ignoreEos: true });
        outcome = result.tokenIds.length === 2 ? 'loaded+generated' : 'loaded';
      } finally {
        model.dispose();
      }
    } catch (error) {
      if (!(error instanceof SeedinferError)) {
        internal.push(`byte ${position}: non-SeedinferError ${String(error)}`);
        outcome = 'untyped';
      } else {
        outcome = error.code;
        if (error.code === 'INTERNAL') internal.push(`byte ${position}: INTERNAL ${error.message}`);
      }
    }
    codes[outcome] = (codes[outcome] ?? 0) + 1;
    fs.rmSync(file);
  }
  t.log(codes);
  t.deepEqual(internal, []);
  await stillWorks(t);
});

// ---- Hugging Face directories ----

const storiesTensors = () => readSafetensors(fs.readFileSync(path.join(storiesDir, 'model.safetensors')));

/** A temp copy of the stories260K directory with the given model.safetensors / config.json / tokenizer.json. */
function hfDir(options: { safetensors?: Buffer | SafetensorsTensor[]; config?: string; dropTokenizer?: boolean }): string {
  const dir = fs.mkdtempSync(path.join(work, 'hf-'));
  for (const name of ['config.json', 'tokenizer.json', 'tokenizer_config.json']) {
    if (name === 'tokenizer.json' && options.dropTokenizer) continue;
    fs.copyFileSync(path.join(storiesDir, name), path.join(dir, name));
  }
  if (options.config !== undefined) fs.writeFileSync(path.join(dir, 'config.json'), options.config);
  const st = options.safetensors;
  if (st === undefined) fs.copyFileSync(path.join(storiesDir, 'model.safetensors'), path.join(dir, 'model.safetensors'));
  else fs.writeFileSync(path.join(dir, 'model.safetensors'), Buffer.isBuffer(st) ? st : writeSafetensors(st));
  return dir;
}

test('a copied stories260K directory loads (control for the variants below)', async (t) => {
  const model = await Model.load(hfDir({ safetensors: writeSafetensors(storiesTensors().tensors) }), { threads: 1 });
  t.is(model.info.fileFormat, 'safetensors');
  t.is(model.info.ropeStyle, 'half');
  const result = await model.createSession().generateText([1], { maxTokens: 5, temperature: 0, ignoreEos: true });
  t.deepEqual(result.tokenIds, [403, 407, 261, 378, 432]);
  model.dispose();
});

test('safetensors truncated → TRUNCATED_FILE or CORRUPT_FILE', async (t) => {
  const original = fs.readFileSync(path.join(storiesDir, 'model.safetensors'));
  const headerLength = Number(original.readBigUInt64LE(0));
  for (const [label, cut] of [
    ['inside the length prefix', 5],
    ['inside the header JSON', 8 + Math.floor(headerLength / 2)],
    ['inside the data', Math.floor(original.length / 2)],
    ['one byte short', original.length - 1],
  ] as const) {
    await expectLoadError(t, `safetensors cut ${label} (${cut} of ${original.length})`, hfDir({ safetensors: original.subarray(0, cut) }), [
      'TRUNCATED_FILE',
      'CORRUPT_FILE',
    ]);
  }
  await stillWorks(t);
});

test('safetensors header JSON garbage → CORRUPT_FILE', async (t) => {
  const bytes = Buffer.from(fs.readFileSync(path.join(storiesDir, 'model.safetensors')));
  const headerLength = Number(bytes.readBigUInt64LE(0));
  bytes.fill(' ', 8, 8 + headerLength);
  bytes.write('{"model.norm.weight": [garbage', 8, 'utf8');
  await expectLoadError(t, 'garbage header', hfDir({ safetensors: bytes }), ['CORRUPT_FILE']);
  await stillWorks(t);
});

test('safetensors header length 2^63 or data offsets past the end → CORRUPT_FILE or TRUNCATED_FILE', async (t) => {
  const huge = Buffer.from(fs.readFileSync(path.join(storiesDir, 'model.safetensors')));
  huge.writeBigUInt64LE(2n ** 63n, 0);
  await expectLoadError(t, 'header length 2^63', hfDir({ safetensors: huge }), ['CORRUPT_FILE', 'TRUNCATED_FILE']);
  const { tensors } = storiesTensors();
  const bytes = writeSafetensors(tensors);
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8'));
  const last = tensors[tensors.length - 1].name;
  header[last].data_offsets[1] += 1 << 30;
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  const beyond = Buffer.concat([prefix, json, bytes.subarray(8 + headerLength)]);
  await expectLoadError(t, `${last} data past the end`, hfDir({ safetensors: beyond }), ['CORRUPT_FILE', 'TRUNCATED_FILE']);
  await stillWorks(t);
});

test('safetensors missing tensor → MISSING_TENSOR naming it', async (t) => {
  const name = 'model.layers.1.mlp.up_proj.weight';
  const tensors = storiesTensors().tensors.filter((x) => x.name !== name);
  await expectLoadError(t, `no ${name}`, hfDir({ safetensors: tensors }), ['MISSING_TENSOR'], name);
  await stillWorks(t);
});

test('safetensors tensor with a wrong shape → TENSOR_SHAPE_MISMATCH', async (t) => {
  const name = 'model.layers.0.self_attn.q_proj.weight';
  const tensors = storiesTensors().tensors.map((x) =>
    x.name === name ? { ...x, shape: [x.shape[0] / 2, x.shape[1]], data: x.data.subarray(0, x.data.length / 2) } : x,
  );
  await expectLoadError(t, `${name} with half the rows`, hfDir({ safetensors: tensors }), ['TENSOR_SHAPE_MISMATCH'], name);
  await stillWorks(t);
});

test('safetensors dtype I64 → UNSUPPORTED_TENSOR_TYPE', async (t) => {
  const tensors = storiesTensors().tensors.map((x) =>
    x.name === 'model.norm.weight' ? { ...x, dtype: 'I64', data: new Uint8Array(x.shape.reduce((a, b) => a * b, 1) * 8) } : x,
  );
  await expectLoadError(t, 'model.norm.weight as I64', hfDir({ safetensors: tensors }), ['UNSUPPORTED_TENSOR_TYPE'], 'I64');
  await stillWorks(t);
});

test('config.json of a GPT-2 → UNSUPPORTED_ARCHITECTURE', async (t) => {
  const config = JSON.parse(fs.readFileSync(path.join(storiesDir, 'config.json'), 'utf8'));
  const gpt2 = JSON.stringify({ ...config, model_type: 'gpt2', architectures: ['GPT2LMHeadModel'] });
  await expectLoadError(t, 'gpt2 config', hfDir({ config: gpt2 }), ['UNSUPPORTED_ARCHITECTURE']);
  await stillWorks(t);
});

test('config.json that is not JSON → INVALID_CONFIG', async (t) => {
  await expectLoadError(t, 'config not JSON', hfDir({ config: '{ "model_type": "llama", oops' }), ['INVALID_CONFIG']);
  await stillWorks(t);
});

test('tokenizer.json missing → a typed tokenizer/not-found code', async (t) => {
  await expectLoadError(t, 'no tokenizer.json', hfDir({ dropTokenizer: true }), ['TOKENIZER_LOAD_FAILED', 'MODEL_NOT_FOUND']);
  await stillWorks(t);
});

test("numerics: an unknown value, or 'llamacpp' on a model whose layers are not Q4_1 → INVALID_OPTION", async (t) => {
  const unknown = await t.throwsAsync(Model.load(validPath, { numerics: 'fast' as never }));
  t.is((unknown as SeedinferError).code, 'INVALID_OPTION');
  t.regex(unknown!.message, /seedinfer, llamacpp/);
  const q8 = await t.throwsAsync(Model.load(validPath, { numerics: 'llamacpp' }));
  t.is((q8 as SeedinferError).code, 'INVALID_OPTION');
  t.regex(q8!.message, /Q4_1 GGUF layers/);
  await stillWorks(t);
});

test('nonexistent paths → MODEL_NOT_FOUND', async (t) => {
  await expectLoadError(t, 'missing .gguf', path.join(work, 'does-not-exist.gguf'), ['MODEL_NOT_FOUND']);
  await expectLoadError(t, 'missing directory', path.join(work, 'no-such-dir', 'model'), ['MODEL_NOT_FOUND']);
  await stillWorks(t);
});

test('Q5_0 / Q5_1 tensors load as stored; a Q5 tensor whose bytes do not match its shape is a typed error naming it', async (t) => {
  for (const [type, blockBytes] of [['Q5_0', 22], ['Q5_1', 24]] as const) {
    const withType = (extraBlocks: number) =>
      variant((spec) => {
        const i = spec.tensors.findIndex((x) => x.name === 'blk.0.ffn_gate.weight');
        const elements = spec.tensors[i].shape.reduce((a, b) => a * b, 1);
        // All-zero blocks are valid Q5 blocks (scale 0).
        spec.tensors[i] = { ...spec.tensors[i], type: GGML_TYPE[type], data: new Uint8Array((elements / 32 + extraBlocks) * blockBytes) };
      });
    const model = await Model.load(writeTemp(`${type}.gguf`, withType(0)), { threads: 1 });
    t.is(model.info.fileTensorFormats[type], 1, JSON.stringify(model.info.fileTensorFormats));
    t.regex(model.info.computeFormat, new RegExp(`${type} x int8 ×1`));
    t.is((await model.createSession().generateText([1, 2, 3], { maxTokens: 2, temperature: 0 })).tokenIds.length, 2);
    model.dispose();
    // Four blocks short: more than the 32-byte alignment padding, which could hide a shorter gap.
    await expectLoadError(t, `${type} four blocks short`, writeTemp(`${type}-short.gguf`, withType(-4)), ['TENSOR_SHAPE_MISMATCH', 'CORRUPT_FILE', 'TRUNCATED_FILE'], 'blk.0.ffn_gate.weight');
  }
  await stillWorks(t);
});

test('the native binding reports the code as a property of its errors, not inside the message', async (t) => {
  const { native } = await import('../src/native.js');
  const binding = native();
  // A rejection from a worker task.
  const bad = writeTemp('bad-magic-native.gguf', Buffer.from('NOPE0000000000000000000000000000'));
  const rejected = await t.throwsAsync(() => binding.loadModel(bad, {}));
  t.is((rejected as Error & { code?: string }).code, 'BAD_MAGIC');
  t.false(rejected!.message.startsWith('BAD_MAGIC'), rejected!.message);
  // A synchronous throw.
  const thrown = t.throws(() => binding.loadModel(validPath, { weights: 'q9_9' }));
  t.is((thrown as Error & { code?: string }).code, 'INVALID_OPTION');
  t.true(thrown!.message.startsWith('option weights must be one of'), thrown!.message);
  // An error event of a streamed generation (through the public API: code and message stay apart).
  const model = await Model.load(validPath, { threads: 1 });
  const controller = new AbortController();
  controller.abort();
  const aborted = await t.throwsAsync(model.createSession().generateText([1], { maxTokens: 3, signal: controller.signal }));
  t.true(aborted instanceof SeedinferError);
  t.is((aborted as SeedinferError).code, 'ABORTED');
  t.false(aborted!.message.startsWith('ABORTED'), aborted!.message);
  model.dispose();
});
