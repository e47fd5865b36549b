// quantizeModel() and the containers it writes, on the stories260K checkpoint.
import test from 'ava';
import fs from 'node:fs';
import path from 'node:path';
import { Model, QUANTIZE_FORMATS, SeedinferError, quantizeModel } from '../src/index.js';
import { hasStories, storiesDir, storiesExpected, tempDir } from './helpers/paths.js';

const storiesTest = hasStories ? test : test.skip;

async function greedy(model: Model, n: number): Promise<number[]> {
  const session = model.createSession();
  try {
    const result = await session.generate([1], { maxTokens: n, temperature: 0, ignoreEos: true }).result;
    return result.tokenIds;
  } finally {
    session.dispose();
  }
}

storiesTest('every format writes a container that Model.load reads, with progress and the event loop free', async (t) => {
  const dir = tempDir();
  const reference = storiesExpected().greedy_token_ids.slice(0, 30);
  t.deepEqual(
    [...QUANTIZE_FORMATS],
    ['seedlm4', 'seedlm3', 'q3_rtn', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1', 'q2_k', 'q3_k_s', 'q3_k_m', 'q3_k_l', 'q4_k_s', 'q4_k_m', 'q5_k_s', 'q5_k_m', 'q6_k', 'iq4_nl', 'iq4_xs'],
  );
  for (const format of ['seedlm4', 'seedlm3', 'q3_rtn'] as const) {
    const out = path.join(dir, `stories.${format}.gguf`);
    const progress: number[] = [];
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const report = await quantizeModel(storiesDir, {
      format,
      out,
      threads: 2,
      onProgress: (e) => {
        t.is(e.phase, 'quantize');
        progress.push(e.completed / (e.total ?? 1));
      },
    });
    clearInterval(timer);
    t.is(report.out, out);
    t.is(fs.statSync(out).size, report.outBytes);
    t.true(progress.length > 0 && progress.at(-1) === 1, `${format}: ${progress.length} progress events`);
    t.deepEqual(progress, [...progress].sort((a, b) => a - b), `${format}: progress goes forward`);
    if (format !== 'q3_rtn') t.true(ticks >= 10, `${format}: the event loop ran ${ticks} timer ticks while encoding`);
    // 30 of 35 matrices have 64 columns (whole blocks); the down projections have 172 (a padded last block).
    const expectedBits = { seedlm4: [4.0, 4.1], seedlm3: [3.0, 3.4], q3_rtn: [3.5, 3.5] }[format];
    t.true(report.bitsPerWeight >= expectedBits[0] && report.bitsPerWeight <= expectedBits[1], `${format}: ${report.bitsPerWeight}`);
    t.is(report.quantizedTensors, format === 'q3_rtn' ? 30 : 35);
    t.is(report.kept.length, format === 'q3_rtn' ? 5 : 0);

    const model = await Model.load(out, { threads: 2 });
    try {
      const name = { seedlm4: 'SEEDLM4', seedlm3: 'SEEDLM3', q3_rtn: 'Q3_RTN' }[format];
      t.true(model.info.computeFormat.startsWith(`${name} x f32`), model.info.computeFormat);
      // The container carries the checkpoint's tokenizer and chat template.
      t.deepEqual(model.tokenize('Once upon a time'), (await Model.load(storiesDir)).tokenize('Once upon a time'));
      const tokens = await greedy(model, 30);
      t.is(tokens.length, 30);
      const same = tokens.findIndex((id, i) => id !== reference[i]);
      t.log(`${format}: ${report.bitsPerWeight.toFixed(3)} bits/weight, greedy agrees with f32 for ${same < 0 ? 30 : same} of 30 tokens`);
      if (format === 'seedlm4') t.true(same < 0 || same >= 5, `seedlm4 diverged at token ${same}`);
    } finally {
      model.dispose();
    }
  }
});

storiesTest('q5_0 and q5_1 write standard GGUF blocks that load as stored and stay close to f32', async (t) => {
  const dir = tempDir();
  const reference = storiesExpected().greedy_token_ids.slice(0, 30);
  for (const format of ['q5_0', 'q5_1'] as const) {
    const out = path.join(dir, `stories.${format}.gguf`);
    const report = await quantizeModel(storiesDir, { format, out, threads: 2 });
    // 30 layer matrices of 64 columns; the 5 down projections (172 columns, not whole blocks) stay as they were.
    t.is(report.quantizedTensors, 30);
    t.is(report.kept.length, 5);
    t.true(Math.abs(report.bitsPerWeight - (format === 'q5_0' ? 5.5 : 6.0)) < 1e-9, `${format}: ${report.bitsPerWeight}`);
    const model = await Model.load(out, { threads: 2 });
    try {
      t.regex(model.info.computeFormat, new RegExp(`${format.toUpperCase()} x int8 ×30`));
      const tokens = await greedy(model, 30);
      const same = tokens.findIndex((id, i) => id !== reference[i]);
      t.log(`${format}: greedy agrees with f32 for ${same < 0 ? 30 : same} of 30 tokens`);
      t.true(same < 0 || same >= 10, `${format} diverged at token ${same}`);
    } finally {
      model.dispose();
    }
  }
});

storiesTest('an aborted quantisation rejects with ABORTED and writes nothing', async (t) => {
  const out = path.join(tempDir(), 'aborted.gguf');
  const controller = new AbortController();
  const pending = quantizeModel(storiesDir, {
    format: 'seedlm3',
    out,
    onProgress: () => controller.abort(),
    signal: controller.signal,
  });
  const error = await t.throwsAsync(pending, { instanceOf: SeedinferError });
  t.is(error?.code, 'ABORTED');
  t.false(fs.existsSync(out));
  t.deepEqual(
    fs.readdirSync(path.dirname(out)).filter((f) => f.includes('partial')),
    [],
  );
});

storiesTest('bad options and sources give coded errors', async (t) => {
  const out = path.join(tempDir(), 'x.gguf');
  const bad = [
    [quantizeModel(storiesDir, { format: 'seedlm5' as never, out }), 'INVALID_OPTION'],
    [quantizeModel(storiesDir, { format: 'seedlm4', out: '' }), 'INVALID_OPTION'],
    [quantizeModel(storiesDir, { format: 'seedlm4', out, threads: 0 }), 'INVALID_OPTION'],
    [quantizeModel('/nonexistent/model.gguf', { format: 'seedlm4', out }), 'MODEL_NOT_FOUND'],
  ] as const;
  for (const [pending, code] of bad) {
    const error = await t.throwsAsync(pending, { instanceOf: SeedinferError });
    t.is(error?.code, code, error?.message);
  }
  // A container is not quantised again.
  const q3 = path.join(tempDir(), 'q3.gguf');
  await quantizeModel(storiesDir, { format: 'q3_rtn', out: q3 });
  const error = await t.throwsAsync(quantizeModel(q3, { format: 'seedlm4', out }), { instanceOf: SeedinferError });
  t.is(error?.code, 'INVALID_OPTION');
});
