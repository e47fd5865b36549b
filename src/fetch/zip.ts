// A minimal zip reader: enough to pull one stored or deflated entry out of a wheel, streaming.
import fs from 'node:fs';
import { Readable, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { SeedinferError } from '../errors.js';

export interface ZipEntry {
  name: string;
  /** 0 = stored, 8 = deflated. */
  method: number;
  compressedSize: number;
  uncompressedSize: number;
  crc32: number;
  localHeaderOffset: number;
  flags: number;
}

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CDIR_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;

function corrupt(file: string, why: string): SeedinferError {
  return new SeedinferError('CORRUPT_FILE', `${file} is not a valid zip archive: ${why}`);
}

async function readAt(fh: fs.promises.FileHandle, position: number, length: number): Promise<Buffer> {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(buf, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done === length ? buf : buf.subarray(0, done);
}

function readU64(buf: Buffer, offset: number): number {
  const value = buf.readBigUInt64LE(offset);
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError('zip64 value too large');
  return Number(value);
}

/** Lists the entries of a zip file from its central directory. */
export async function listZipEntries(file: string): Promise<ZipEntry[]> {
  const fh = await fs.promises.open(file, 'r');
  try {
    const { size } = await fh.stat();
    if (size < 22) throw corrupt(file, 'too small');
    // The end-of-central-directory record is in the last 22 + 65535 (comment) bytes.
    const tailLength = Math.min(size, 22 + 0xffff);
    const tailStart = size - tailLength;
    const tail = await readAt(fh, tailStart, tailLength);
    let eocd = -1;
    for (let i = tail.length - 22; i >= 0; i--) {
      if (tail.readUInt32LE(i) === EOCD_SIG) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw corrupt(file, 'end of central directory not found');
    let count = tail.readUInt16LE(eocd + 10);
    let cdSize = tail.readUInt32LE(eocd + 12);
    let cdOffset = tail.readUInt32LE(eocd + 16);
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
      const locatorAt = eocd - 20;
      if (locatorAt < 0 || tail.readUInt32LE(locatorAt) !== ZIP64_LOCATOR_SIG) throw corrupt(file, 'zip64 locator missing');
      const zip64EocdOffset = readU64(tail, locatorAt + 8);
      const rec = await readAt(fh, zip64EocdOffset, 56);
      if (rec.length < 56 || rec.readUInt32LE(0) !== ZIP64_EOCD_SIG) throw corrupt(file, 'zip64 end record missing');
      count = readU64(rec, 32);
      cdSize = readU64(rec, 40);
      cdOffset = readU64(rec, 48);
    }
    if (cdOffset + cdSize > size) throw corrupt(file, 'central directory out of bounds');
    const cd = await readAt(fh, cdOffset, cdSize);
    const entries: ZipEntry[] = [];
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || cd.readUInt32LE(p) !== CDIR_SIG) throw corrupt(file, `bad central directory entry ${i}`);
      const flags = cd.readUInt16LE(p + 8);
      const method = cd.readUInt16LE(p + 10);
      const crc32 = cd.readUInt32LE(p + 16);
      let compressedSize = cd.readUInt32LE(p + 20);
      let uncompressedSize = cd.readUInt32LE(p + 24);
      const nameLength = cd.readUInt16LE(p + 28);
      const extraLength = cd.readUInt16LE(p + 30);
      const commentLength = cd.readUInt16LE(p + 32);
      let localHeaderOffset = cd.readUInt32LE(p + 42);
      const name = cd.toString('utf8', p + 46, p + 46 + nameLength);
      // Zip64 extended information: present fields are those whose 32-bit value is 0xffffffff, in order.
      let e = p + 46 + nameLength;
      const extraEnd = e + extraLength;
      while (e + 4 <= extraEnd) {
        const id = cd.readUInt16LE(e);
        const len = cd.readUInt16LE(e + 2);
        if (id === 0x0001) {
          let q = e + 4;
          if (uncompressedSize === 0xffffffff) (uncompressedSize = readU64(cd, q)), (q += 8);
          if (compressedSize === 0xffffffff) (compressedSize = readU64(cd, q)), (q += 8);
          if (localHeaderOffset === 0xffffffff) (localHeaderOffset = readU64(cd, q)), (q += 8);
        }
        e += 4 + len;
      }
      entries.push({ name, method, compressedSize, uncompressedSize, crc32, localHeaderOffset, flags });
      p = extraEnd + commentLength;
    }
    return entries;
  } finally {
    await fh.close();
  }
}

/**
 * Streams the uncompressed bytes of one entry into `destination` (which is ended when done).
 * `onChunk` sees every uncompressed chunk (for hashing and progress). Checks size and CRC-32.
 */
export async function extractZipEntry(
  file: string,
  entryName: string,
  destination: Writable,
  options: { onStart?: (entry: ZipEntry) => void; onChunk?: (chunk: Buffer) => void; signal?: AbortSignal } = {},
): Promise<ZipEntry> {
  const entries = await listZipEntries(file);
  const entry = entries.find((candidate) => candidate.name === entryName);
  if (!entry) {
    throw new SeedinferError(
      'DOWNLOAD_FAILED',
      `${file} does not contain ${entryName} (entries: ${entries.slice(0, 20).map((x) => x.name).join(', ')})`,
    );
  }
  if (entry.flags & 0x1) throw corrupt(file, `${entryName} is encrypted`);
  if (entry.method !== 0 && entry.method !== 8) {
    throw corrupt(file, `${entryName} uses unsupported compression method ${entry.method}`);
  }
  const fh = await fs.promises.open(file, 'r');
  let dataStart: number;
  try {
    const local = await readAt(fh, entry.localHeaderOffset, 30);
    if (local.length < 30 || local.readUInt32LE(0) !== LOCAL_SIG) throw corrupt(file, `bad local header for ${entryName}`);
    dataStart = entry.localHeaderOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
  } finally {
    await fh.close();
  }

  options.onStart?.(entry);
  let written = 0;
  let crc = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      written += chunk.length;
      crc = zlib.crc32(chunk, crc);
      options.onChunk?.(chunk);
      callback(null, chunk);
    },
  });
  const source =
    entry.compressedSize === 0
      ? Readable.from([])
      : fs.createReadStream(file, { start: dataStart, end: dataStart + entry.compressedSize - 1, highWaterMark: 1 << 20 });
  const stages: NodeJS.ReadWriteStream[] = entry.method === 8 ? [zlib.createInflateRaw(), tap] : [tap];
  await pipeline([source, ...stages, destination], { signal: options.signal });
  if (written !== entry.uncompressedSize) {
    throw corrupt(file, `${entryName}: expected ${entry.uncompressedSize} bytes, got ${written}`);
  }
  if (crc >>> 0 !== entry.crc32 >>> 0) throw corrupt(file, `${entryName}: CRC-32 mismatch`);
  return entry;
}
