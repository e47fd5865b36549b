// A tiny, test-only GGUF v3 writer, plus a builder for a small valid Llama GGUF with deterministic random weights.
// Independent of the Rust writer on purpose: the tests feed its output (and corrupted variants) to the loader.

/** ggml type ids (ggml.h `enum ggml_type`). */
export const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q5_0: 6, Q5_1: 7, Q8_0: 8, Q2_K: 10, Q3_K: 11, Q4_K: 12, Q5_K: 13, Q6_K: 14, IQ2_XXS: 16, BF16: 30 } as const;

/** GGUF metadata value type tags (gguf.h `enum gguf_type`). */
const VALUE_TYPE = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12,
} as const;

export type GgufScalarType = Exclude<keyof typeof VALUE_TYPE, 'array'>;
export type GgufScalar = number | bigint | boolean | string;

export type GgufValue =
  | { type: GgufScalarType; value: GgufScalar }
  /** `claimedCount` overrides the element count written to the file (to build corrupt files). */
  | { type: 'array'; elementType: GgufScalarType; values: GgufScalar[]; claimedCount?: bigint };

export const gguf = {
  u32: (value: number): GgufValue => ({ type: 'u32', value }),
  i32: (value: number): GgufValue => ({ type: 'i32', value }),
  u64: (value: number | bigint): GgufValue => ({ type: 'u64', value }),
  f32: (value: number): GgufValue => ({ type: 'f32', value }),
  bool: (value: boolean): GgufValue => ({ type: 'bool', value }),
  str: (value: string): GgufValue => ({ type: 'string', value }),
  array: (elementType: GgufScalarType, values: GgufScalar[]): GgufValue => ({ type: 'array', elementType, values }),
};

export interface GgufTensor {
  name: string;
  /** Outermost first (row-major, like PyTorch); written innermost first as GGUF wants. */
  shape: number[];
  /** ggml type id, see GGML_TYPE. */
  type: number;
  data: Uint8Array;
}

export interface GgufSpec {
  /** Default 3. */
  version?: number;
  /** Metadata in file order. */
  kv: Array<[string, GgufValue]>;
  tensors: GgufTensor[];
  /** Default 32 (written as general.alignment only if the caller adds that key). */
  alignment?: number;
}

export interface GgufLayout {
  bytes: Buffer;
  /** Offset of the first metadata key (right after the 24-byte header). */
  kvStart: number;
  /** Offset of the first tensor info. */
  tensorInfoStart: number;
  /** Offset of the (aligned) tensor data section. */
  dataStart: number;
}

class ByteSink {
  private chunks: Buffer[] = [];
  length = 0;

  push(buf: Buffer): void {
    this.chunks.push(buf);
    this.length += buf.length;
  }
  u8(v: number): void {
    this.push(Buffer.from([v & 0xff]));
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v >>> 0);
    this.push(b);
  }
  u64(v: number | bigint): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  str(s: string): void {
    const bytes = Buffer.from(s, 'utf8');
    this.u64(bytes.length);
    this.push(bytes);
  }
  pad(alignment: number): void {
    const rem = this.length % alignment;
    if (rem !== 0) this.push(Buffer.alloc(alignment - rem));
  }
  concat(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

function writeScalar(sink: ByteSink, type: GgufScalarType, value: GgufScalar): void {
  const b8 = Buffer.alloc(8);
  switch (type) {
    case 'u8':
      sink.push(Buffer.from([Number(value) & 0xff]));
      return;
    case 'i8':
      b8.writeInt8(Number(value));
      sink.push(b8.subarray(0, 1));
      return;
    case 'u16':
      b8.writeUInt16LE(Number(value));
      sink.push(b8.subarray(0, 2));
      return;
    case 'i16':
      b8.writeInt16LE(Number(value));
      sink.push(b8.subarray(0, 2));
      return;
    case 'u32':
      b8.writeUInt32LE(Number(value));
      sink.push(b8.subarray(0, 4));
      return;
    case 'i32':
      b8.writeInt32LE(Number(value));
      sink.push(b8.subarray(0, 4));
      return;
    case 'f32':
      b8.writeFloatLE(Number(value));
      sink.push(b8.subarray(0, 4));
      return;
    case 'bool':
      sink.push(Buffer.from([value ? 1 : 0]));
      return;
    case 'string':
      sink.str(String(value));
      return;
    case 'u64':
      b8.writeBigUInt64LE(BigInt(value));
      sink.push(b8);
      return;
    case 'i64':
      b8.writeBigInt64LE(BigInt(value));
      sink.push(b8);
      return;
    case 'f64':
      b8.writeDoubleLE(Number(value));
      sink.push(b8);
      return;
  }
}

/** Serializes a GGUF file: magic, version, counts, metadata, tensor infos, padding, aligned tensor data. */
export function writeGguf(spec: GgufSpec): GgufLayout {
  const alignment = spec.alignment ?? 32;
  const sink = new ByteSink();
  sink.push(Buffer.from('GGUF', 'latin1'));
  sink.u32(spec.version ?? 3);
  sink.u64(spec.tensors.length);
  sink.u64(spec.kv.length);
  const kvStart = sink.length;
  for (const [key, value] of spec.kv) {
    sink.str(key);
    sink.u32(VALUE_TYPE[value.type]);
    if (value.type === 'array') {
      sink.u32(VALUE_TYPE[value.elementType]);
      sink.u64(value.claimedCount ?? value.values.length);
      for (const item of value.values) writeScalar(sink, value.elementType, item);
    } else {
      writeScalar(sink, value.type, value.value);
    }
  }
  const tensorInfoStart = sink.length;
  let offset = 0;
  for (const t of spec.tensors) {
    sink.str(t.name);
    sink.u32(t.shape.length);
    for (const dim of [...t.shape].reverse()) sink.u64(dim);
    sink.u32(t.type);
    sink.u64(offset);
    offset += t.data.length;
    offset = Math.ceil(offset / alignment) * alignment;
  }
  sink.pad(alignment);
  const dataStart = sink.length;
  for (const t of spec.tensors) {
    sink.push(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    sink.pad(alignment);
  }
  return { bytes: sink.concat(), kvStart, tensorInfoStart, dataStart };
}

// ---- encoding helpers ----

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half bits of `v`, rounded to nearest even. */
export function f32ToF16Bits(v: number): number {
  f32Scratch[0] = v;
  const x = u32Scratch[0];
  const sign = (x >>> 16) & 0x8000;
  const rawExp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (rawExp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const exp = rawExp - 127 + 15;
  if (exp >= 0x1f) return sign | 0x7c00;
  if (exp <= 0) {
    if (exp < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - exp;
    let h = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && h & 1)) h++;
    return sign | h;
  }
  let h = (exp << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++; // a carry into the exponent is the correct rounding
  return sign | h;
}

export function encodeF32(values: ArrayLike<number>): Uint8Array {
  const out = Buffer.alloc(values.length * 4);
  for (let i = 0; i < values.length; i++) out.writeFloatLE(values[i], i * 4);
  return out;
}

/** ggml Q8_0: blocks of 32 values as (f16 scale d = max|x| / 127, 32 x int8 round(x / d)). */
export function encodeQ8_0(values: ArrayLike<number>): Uint8Array {
  if (values.length % 32 !== 0) throw new Error(`Q8_0 needs a multiple of 32 values, got ${values.length}`);
  const blocks = values.length / 32;
  const out = Buffer.alloc(blocks * 34);
  for (let b = 0; b < blocks; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(values[b * 32 + i]));
    const d = amax / 127;
    const id = d ? 1 / d : 0;
    out.writeUInt16LE(f32ToF16Bits(d), b * 34);
    for (let i = 0; i < 32; i++) {
      const x = values[b * 32 + i] * id;
      out.writeInt8(Math.max(-127, Math.min(127, Math.sign(x) * Math.round(Math.abs(x)))), b * 34 + 2 + i);
    }
  }
  return out;
}

/** mulberry32: a small deterministic PRNG returning floats in [0, 1). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ---- a tiny valid Llama model ----

export interface TinyLlamaOptions {
  seed?: number;
  layers?: number;
  hidden?: number;
  heads?: number;
  kvHeads?: number;
  ffn?: number;
  /** Storage of the 2-D layer matrices (attention and feed-forward). Default Q8_0. */
  matrixType?: 'F32' | 'Q8_0';
}

export interface TinyLlama {
  spec: GgufSpec;
  /** Tensor count per storage format, as ModelInfo.fileTensorFormats should report it. */
  formats: Record<string, number>;
  vocabSize: number;
}

/**
 * A SentencePiece ("llama") vocabulary: <unk>, <s>, </s>, the 256 byte tokens, "▁", the letters a-z and a few
 * merges, with scores so that merges apply in order.
 */
export function tinySpmVocab(): { tokens: string[]; scores: number[]; types: number[] } {
  const tokens = ['<unk>', '<s>', '</s>'];
  const types = [2, 3, 3];
  const scores = [0, 0, 0];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
    types.push(6);
    scores.push(0);
  }
  const singles = ['▁', ...'abcdefghijklmnopqrstuvwxyz', ...'ABCDEFGHIJKLMNOPQRSTUVWXYZ', '.', ','];
  for (const s of singles) {
    tokens.push(s);
    types.push(1);
    scores.push(-1000);
  }
  const merges = ['▁t', 'he', '▁a', 'in', '▁the', 'on', 'ce', '▁O', 'nce', '▁Once', 'up', '▁up', '▁upon', 'im', '▁tim', '▁time'];
  merges.forEach((m, rank) => {
    tokens.push(m);
    types.push(1);
    scores.push(-rank);
  });
  return { tokens, scores, types };
}

/** A valid small Llama GGUF (deterministic weights); callers may edit `spec` before `writeGguf`. */
export function tinyLlama(options: TinyLlamaOptions = {}): TinyLlama {
  const { seed = 1234, layers = 2, hidden = 64, heads = 4, kvHeads = 2, ffn = 128, matrixType = 'Q8_0' } = options;
  const headDim = hidden / heads;
  const kvDim = kvHeads * headDim;
  const vocab = tinySpmVocab();
  const vocabSize = vocab.tokens.length;
  const random = rng(seed);
  const formats: Record<string, number> = {};
  const tensors: GgufTensor[] = [];
  const add = (name: string, shape: number[], type: 'F32' | 'Q8_0', values: Float32Array) => {
    tensors.push({ name, shape, type: GGML_TYPE[type], data: type === 'F32' ? encodeF32(values) : encodeQ8_0(values) });
    formats[type] = (formats[type] ?? 0) + 1;
  };
  const randomMatrix = (rows: number, cols: number) => {
    const scale = 1 / Math.sqrt(cols);
    return Float32Array.from({ length: rows * cols }, () => (random() * 2 - 1) * scale);
  };
  const norm = () => Float32Array.from({ length: hidden }, () => 0.9 + 0.2 * random());

  add('token_embd.weight', [vocabSize, hidden], 'F32', randomMatrix(vocabSize, hidden));
  for (let i = 0; i < layers; i++) {
    add(`blk.${i}.attn_norm.weight`, [hidden], 'F32', norm());
    add(`blk.${i}.attn_q.weight`, [hidden, hidden], matrixType, randomMatrix(hidden, hidden));
    add(`blk.${i}.attn_k.weight`, [kvDim, hidden], matrixType, randomMatrix(kvDim, hidden));
    add(`blk.${i}.attn_v.weight`, [kvDim, hidden], matrixType, randomMatrix(kvDim, hidden));
    add(`blk.${i}.attn_output.weight`, [hidden, hidden], matrixType, randomMatrix(hidden, hidden));
    add(`blk.${i}.ffn_norm.weight`, [hidden], 'F32', norm());
    add(`blk.${i}.ffn_gate.weight`, [ffn, hidden], matrixType, randomMatrix(ffn, hidden));
    add(`blk.${i}.ffn_up.weight`, [ffn, hidden], matrixType, randomMatrix(ffn, hidden));
    add(`blk.${i}.ffn_down.weight`, [hidden, ffn], matrixType, randomMatrix(hidden, ffn));
  }
  add('output_norm.weight', [hidden], 'F32', norm());

  const kv: Array<[string, GgufValue]> = [
    ['general.architecture', gguf.str('llama')],
    ['general.name', gguf.str('tiny-test-llama')],
    ['llama.block_count', gguf.u32(layers)],
    ['llama.context_length', gguf.u32(256)],
    ['llama.embedding_length', gguf.u32(hidden)],
    ['llama.feed_forward_length', gguf.u32(ffn)],
    ['llama.attention.head_count', gguf.u32(heads)],
    ['llama.attention.head_count_kv', gguf.u32(kvHeads)],
    ['llama.rope.freq_base', gguf.f32(10000)],
    ['llama.attention.layer_norm_rms_epsilon', gguf.f32(1e-5)],
    ['llama.rope.dimension_count', gguf.u32(headDim)],
    ['llama.vocab_size', gguf.u32(vocabSize)],
    ['tokenizer.ggml.model', gguf.str('llama')],
    ['tokenizer.ggml.tokens', gguf.array('string', vocab.tokens)],
    ['tokenizer.ggml.scores', gguf.array('f32', vocab.scores)],
    ['tokenizer.ggml.token_type', gguf.array('i32', vocab.types)],
    ['tokenizer.ggml.bos_token_id', gguf.u32(1)],
    ['tokenizer.ggml.eos_token_id', gguf.u32(2)],
    ['tokenizer.ggml.unknown_token_id', gguf.u32(0)],
    ['tokenizer.ggml.add_bos_token', gguf.bool(true)],
    ['tokenizer.ggml.add_space_prefix', gguf.bool(true)],
  ];
  return { spec: { kv, tensors }, formats, vocabSize };
}
