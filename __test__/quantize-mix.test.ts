// quantizeModel() with llama.cpp's mixes (q4_k_m, …) on the default model: the GGUF it writes holds llama.cpp's
// tensor types and bytes. The references are the files llama.cpp 0.3.36's own quantiser (PyPI llama-cpp-python,
// `llama_model_quantize` with allow_requantize, from the same Q4_1 file) wrote for each mix, reduced by
// scripts/gguf-tensor-digest.py to the SHA-256 of their tensor data in file order and their type counts.
import test from 'ava';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Model, SeedinferError, ensureDefaultModel, quantizeModel } from '../src/index.js';
import { native } from '../src/native.js';
import { hasStories, storiesDir, tempDir } from './helpers/paths.js';

const dir = tempDir();
test.after.always(() => fs.rmSync(dir, { recursive: true, force: true }));

const llamaCpp = {
  q2_k: {
    digest: '20275096b8560a855da7a6ba58e87290fc49b86826c70319f5f227e4f9a91b76',
    types: { F32: 61, Q3_K: 30, Q4_0: 180, Q8_0: 1 },
  },
  q3_k_m: {
    digest: 'e7392f718af17add753d2d2d1ae005889a6debfea799970c2e5abc7ef34b0b84',
    types: { F32: 61, Q4_0: 120, Q4_K: 29, Q5_0: 58, Q5_1: 2, Q5_K: 1, Q8_0: 1 },
  },
  q4_k_m: {
    digest: 'e263b7745c2eaa6e728c5145f2a505f33442cd076b2d7aec991cbc251fa92630',
    types: { F32: 61, Q4_K: 16, Q5_0: 166, Q6_K: 14, Q8_0: 15 },
  },
  q6_k: {
    digest: 'e4d55a4bf5aaf07c30fbd626793b8cdf07893c44201b9bb880d0a3ca6818cbb7',
    types: { F32: 61, Q6_K: 30, Q8_0: 181 },
  },
  iq4_xs: {
    digest: '505902f59f1f89515848d7b077c5478ab6ff0f2b5f88f3865021fedcbf6ed79a',
    types: { F32: 61, IQ4_NL: 180, IQ4_XS: 27, Q5_K: 3, Q8_0: 1 },
  },
} as const;

/** SHA-256 of the tensors' bytes in file order, and their type counts (as scripts/gguf-tensor-digest.py). */
function tensorDigest(file: string): { digest: string; types: Record<string, number> } {
  const hash = createHash('sha256');
  const types: Record<string, number> = {};
  const fd = fs.openSync(file, 'r');
  try {
    for (const t of native().ggufTensors(file)) {
      const bytes = Buffer.alloc(t.bytes);
      fs.readSync(fd, bytes, 0, t.bytes, t.fileOffset);
      hash.update(bytes);
      types[t.tensorType] = (types[t.tensorType] ?? 0) + 1;
    }
  } finally {
    fs.closeSync(fd);
  }
  return { digest: hash.digest('hex'), types };
}

for (const [format, expected] of Object.entries(llamaCpp) as [keyof typeof llamaCpp, (typeof llamaCpp)[keyof typeof llamaCpp]][]) {
  test.serial(`${format}: the file holds the tensor types and bytes llama.cpp's quantiser writes`, async (t) => {
    const out = path.join(dir, `smollm2.${format}.gguf`);
    const report = await quantizeModel(await ensureDefaultModel(), { format, out, threads: 2 });
    t.deepEqual(report.tensorTypes, expected.types);
    const ours = tensorDigest(out);
    t.deepEqual(ours.types, expected.types);
    t.is(ours.digest, expected.digest);
    t.is(fs.statSync(out).size, report.outBytes);
    t.log(`${format}: ${report.bitsPerWeight.toFixed(3)} bits per quantised weight in ${report.seconds.toFixed(1)} s`);
    if (format === 'q4_k_m') {
      // A standard GGUF that loads: the same kernels as llama.cpp's file.
      const model = await Model.load(out, { threads: 2 });
      t.deepEqual(model.info.fileTensorFormats, expected.types);
      const session = model.createSession();
      const result = await session.generate(model.tokenize('The capital of France is'), { maxTokens: 4, temperature: 0, ignoreEos: true }).result;
      t.is(result.tokenIds.length, 4);
      session.dispose();
    }
    fs.rmSync(out);
  });
}

test('a mix needs a GGUF source; an unknown format lists the supported ones', async (t) => {
  if (hasStories) {
    const error = await t.throwsAsync(quantizeModel(storiesDir, { format: 'q4_k_m', out: path.join(dir, 'x.gguf') }));
    t.is((error as SeedinferError).code, 'INVALID_OPTION');
    t.regex(error!.message, /GGUF/);
  }
  const error = await t.throwsAsync(quantizeModel(await ensureDefaultModel(), { format: 'q4_k_x' as never, out: path.join(dir, 'y.gguf') }));
  t.is((error as SeedinferError).code, 'INVALID_OPTION');
  t.regex(error!.message, /q4_k_m/);
  t.false(fs.existsSync(path.join(dir, 'x.gguf')) || fs.existsSync(path.join(dir, 'y.gguf')));
});
