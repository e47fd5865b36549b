// A tiny, test-only safetensors writer and reader: 8-byte little-endian header length, JSON header
// ({ name: { dtype, shape, data_offsets: [begin, end] } }, offsets relative to the data section), then the data.

export interface SafetensorsTensor {
  name: string;
  /** e.g. F32, F16, BF16, I64. */
  dtype: string;
  shape: number[];
  data: Uint8Array;
}

/** Serializes tensors in the given order. The header is space-padded to a multiple of 8 bytes, as the reference does. */
export function writeSafetensors(tensors: SafetensorsTensor[], metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.data.length] };
    offset += t.data.length;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(headerBytes.length));
  return Buffer.concat([prefix, headerBytes, ...tensors.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength))]);
}

/** Parses a safetensors file into its tensors (data copied), in file-offset order, and its metadata. */
export function readSafetensors(bytes: Buffer): { tensors: SafetensorsTensor[]; metadata?: Record<string, string>; headerLength: number } {
  const headerLength = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString('utf8')) as Record<string, unknown>;
  const dataStart = 8 + headerLength;
  const tensors: Array<SafetensorsTensor & { begin: number }> = [];
  let metadata: Record<string, string> | undefined;
  for (const [name, entry] of Object.entries(header)) {
    if (name === '__metadata__') {
      metadata = entry as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets } = entry as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const [begin, end] = data_offsets;
    tensors.push({ name, dtype, shape, begin, data: Uint8Array.from(bytes.subarray(dataStart + begin, dataStart + end)) });
  }
  tensors.sort((a, b) => a.begin - b.begin);
  return { tensors: tensors.map(({ name, dtype, shape, data }) => ({ name, dtype, shape, data })), metadata, headerLength };
}
