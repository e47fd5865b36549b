// Matrix-kernel speed against this machine's own limits: f32, f16, bf16, Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 weights, GEMV (1 token) and
// GEMM (64 and 512 tokens) on the SmolLM2-135M shapes, plus one matrix over 256 MB per format (GEMV only: it is
// the memory-bound case), at 1 and 2 threads; then the engine's attention on SmolLM2's shape (9 query heads, 3 KV
// heads of 64) over an f16 paged cache: a decoded token at 128/512/2048 cached positions, a 512-token prompt, and
// 512-token chunks of long prompts (after 3,584 and 7,680 cached positions: the last chunk of a 4K and an 8K prompt).
//
//   npm run bench:kernels                 # markdown tables
//   npm run -s bench:kernels -- --json    # only a JSON array of rows on stdout (-s: no npm banner)
//   npm run bench:kernels -- --quick      # fewer shapes, 64-token GEMM only, short budgets (smoke test)
//   npm run bench:kernels -- --formats f32,f16   # only these formats
//   npm run bench:kernels -- --formats none      # attention only
//
// Method:
// - First `probeLimits` (Rust, same process, same rayon pool sizes) measures streaming read bandwidth over
//   512 MiB, f32 FMA peak and int8 peak (AVX-512 VNNI vpdpbusd where the kernels use it, else AVX2 maddubs) for 1
//   and 2 threads.
// - Each (format, shape, tokens, threads) gets its own native bench object: a deterministic random matrix, its
//   activations and a rayon pool of `threads`. One `run(1)` warms it up (and faults in the output buffers) and
//   sizes a batch of products lasting about 20 ms.
// - tinybench drives the schedule (a time budget per task, at least 3 samples); each sample is one native
//   `run(batch)` whose duration is the one measured in Rust around the products (returned to tinybench as
//   `overriddenDuration`), so promise and napi overhead (tens of µs) does not distort the small GEMVs.
//   A product's time is the median sample divided by the batch size.
// - Block formats include quantising the activations to int8 on every product, as the engine does.
// - gbPerSecond = weight bytes / time; gopsPerSecond = 2·rows·cols·tokens / time; fractions are against the
//   bandwidth and the compute peak (int8 for block formats, f32 FMA for f32/f16/bf16) measured with the same
//   threads.
// - Attention rows (`timeAttention`'s native bench, same batching): GB/s = cache bytes / time (a decoded token
//   reads the whole cache), against the read bandwidth; prompt chunks also GFLOP/s = 4·heads·head_dim·(causal
//   query-key pairs) / time (two FMAs per pair and channel: q·k and the weighted value), against the f32 FMA peak.
import { Bench } from 'tinybench';
import { KERNEL_FORMATS } from '../src/bench.js';
import { argument } from './cli-args.js';
import {
  native,
  type NativeBinding,
  type NativeKernelFormat,
  type NativeLimits,
} from '../src/native.js';

interface Row {
  kernel: 'gemv' | 'gemm';
  format: NativeKernelFormat;
  rows: number;
  cols: number;
  tokens: number;
  threads: number;
  gbPerSecond: number;
  gopsPerSecond: number;
  fractionOfBandwidth: number;
  fractionOfCompute: number;
}

const json = process.argv.includes('--json');
const quick = process.argv.includes('--quick');
const log = (message: string) => process.stderr.write(`${message}\n`);

const kernels: NativeBinding = native();
const formatsArgument = argument('formats');
const formats = (formatsArgument === 'none' ? [] : (formatsArgument?.split(',') ?? KERNEL_FORMATS)) as NativeKernelFormat[];
/** Float formats are judged against the f32 FMA peak, block formats against the int8 peak. */
const isFloat = (format: NativeKernelFormat) => format === 'f32' || format === 'f16' || format === 'bf16';
const threadCounts = [1, 2];
// (rows x cols) = output x input: attention q/o, k/v, MLP gate/up, MLP down, tied embedding / LM head.
const smolShapes: [number, number][] = quick
  ? [
      [576, 576],
      [1536, 576],
    ]
  : [
      [576, 576],
      [192, 576],
      [1536, 576],
      [576, 1536],
      [49152, 576],
    ];
// The K-quants' rows must be whole 256-element super-blocks: they take Llama-3.2-1B's shapes (q/o, k/v, gate/up,
// down) instead.
const kQuantShapes: [number, number][] = quick
  ? [
      [2048, 2048],
      [8192, 2048],
    ]
  : [
      [2048, 2048],
      [512, 2048],
      [8192, 2048],
      [2048, 8192],
    ];
const isKQuant = (format: NativeKernelFormat) => format.endsWith('_k') || format === 'iq4_xs';
// Over 256 MB in each format: 512 MiB f32, 268 MB f16/bf16, 285 MB Q8_0, 302 MB Q4_0, 336 MB Q4_1, 369 MB Q5_0,
// 403 MB Q5_1, 264 MB Q2_K, 288 MB Q3_K, 302 MB Q4_K, 369 MB Q5_K, 440 MB Q6_K, 302 MB IQ4_NL, 285 MB IQ4_XS.
const bigShapes: Record<NativeKernelFormat, [number, number]> = {
  f32: [16384, 8192],
  f16: [16384, 8192],
  bf16: [16384, 8192],
  q8_0: [32768, 8192],
  q4_0: [65536, 8192],
  q4_1: [65536, 8192],
  q5_0: [65536, 8192],
  q5_1: [65536, 8192],
  q2_k: [98304, 8192],
  q3_k: [81920, 8192],
  q4_k: [65536, 8192],
  q5_k: [65536, 8192],
  q6_k: [65536, 8192],
  iq4_nl: [65536, 8192],
  iq4_xs: [65536, 8192],
};
const gemmTokens = quick ? [64] : [64, 512];
const budgetMs = quick ? 100 : 300;
const batchSeconds = 0.02;
const probeSeconds = quick ? 0.2 : 1;

const limits = new Map<number, NativeLimits>();
for (const threads of threadCounts) {
  log(`probing limits, ${threads} thread(s)`);
  limits.set(threads, await kernels.probeLimits(threads, probeSeconds));
}

/** Median seconds of one product. */
async function secondsPerProduct(run: (iterations: number) => Promise<number>): Promise<number> {
  const first = await run(1);
  const batch = Math.max(1, Math.round(batchSeconds / Math.max(first, 1e-9)));
  const bench = new Bench({ time: budgetMs, iterations: 3, warmup: false, throws: true });
  bench.add('product', async () => ({ overriddenDuration: (await run(batch)) * 1000 }));
  await bench.run();
  const latency = bench.tasks[0]?.result?.latency;
  if (latency?.p50 === undefined) throw new Error('tinybench returned no samples');
  return latency.p50 / 1000 / batch;
}

const rows: Row[] = [];
let isa = '';
for (const format of formats) {
  const shapes: [number, number, number[]][] = [
    ...(isKQuant(format) ? kQuantShapes : smolShapes).map(([r, c]): [number, number, number[]] => [r, c, [1, ...gemmTokens]]),
    ...(quick ? [] : [[...bigShapes[format], [1]] as [number, number, number[]]]),
  ];
  for (const [rowCount, cols, tokenCounts] of shapes) {
    for (const threads of threadCounts) {
      for (const tokens of tokenCounts) {
        const bench = await kernels.createKernelBench(format, rowCount, cols, tokens, threads);
        isa = bench.isa;
        try {
          const seconds = await secondsPerProduct((n) => bench.run(n));
          const limit = limits.get(threads)!;
          const gbPerSecond = bench.weightBytes / seconds / 1e9;
          const gopsPerSecond = (2 * rowCount * cols * tokens) / seconds / 1e9;
          const row: Row = {
            kernel: tokens === 1 ? 'gemv' : 'gemm',
            format,
            rows: rowCount,
            cols,
            tokens,
            threads,
            gbPerSecond,
            gopsPerSecond,
            fractionOfBandwidth: gbPerSecond / limit.readGbPerSecond,
            fractionOfCompute: gopsPerSecond / (isFloat(format) ? limit.f32Gflops : limit.int8Gops),
          };
          rows.push(row);
          log(
            `${row.kernel} ${format} ${rowCount}x${cols} t=${tokens} threads=${threads}: ` +
              `${(seconds * 1e3).toFixed(3)} ms, ${gbPerSecond.toFixed(2)} GB/s, ${gopsPerSecond.toFixed(2)} GOP/s`,
          );
        } finally {
          bench.dispose();
        }
      }
    }
  }
}

interface AttentionRow {
  kernel: 'attention';
  context: number;
  tokens: number;
  threads: number;
  seconds: number;
  gbPerSecond: number;
  fractionOfBandwidth: number;
  gflopsPerSecond: number;
  fractionOfCompute: number;
}
const attentionRows: AttentionRow[] = [];
const attentionCases: [number, number][] = quick
  ? [[512, 1]]
  : [[128, 1], [512, 1], [2048, 1], [0, 512], [3584, 512], [7680, 512]];
for (const [context, tokens] of attentionCases) {
  for (const threads of threadCounts) {
    const shape = { heads: 9, kvHeads: 3, headDim: 64, context, tokens, dtype: 'f16', blockSize: 32 };
    const bench = await kernels.createAttentionBench(shape, threads);
    try {
      const seconds = await secondsPerProduct((n) => bench.run(n));
      const gbPerSecond = bench.cacheBytes / seconds / 1e9;
      // Query i (at position context + i) sees context + i + 1 positions.
      const pairs = tokens * context + (tokens * (tokens + 1)) / 2;
      const gflopsPerSecond = (4 * shape.heads * shape.headDim * pairs) / seconds / 1e9;
      attentionRows.push({
        kernel: 'attention',
        context,
        tokens,
        threads,
        seconds,
        gbPerSecond,
        fractionOfBandwidth: gbPerSecond / limits.get(threads)!.readGbPerSecond,
        gflopsPerSecond,
        fractionOfCompute: gflopsPerSecond / limits.get(threads)!.f32Gflops,
      });
      log(`attention context=${context} t=${tokens} threads=${threads}: ${(seconds * 1e6).toFixed(1)} µs, ${gbPerSecond.toFixed(2)} GB/s`);
    } finally {
      bench.dispose();
    }
  }
}

if (json) {
  console.log(JSON.stringify([...rows, ...attentionRows], null, 2));
} else {
  const pct = (v: number) => `${(v * 100).toFixed(1)}%`;
  console.log(`Kernel ISA: ${isa}; ${new Date().toISOString().slice(0, 10)}${quick ? ' (quick)' : ''}\n`);
  console.log('| threads | read GB/s | f32 GFLOP/s | int8 GOP/s |');
  console.log('|---:|---:|---:|---:|');
  for (const [threads, l] of limits) {
    console.log(
      `| ${threads} | ${l.readGbPerSecond.toFixed(1)} | ${l.f32Gflops.toFixed(1)} | ${l.int8Gops.toFixed(1)} |`,
    );
  }
  console.log('\n| kernel | format | rows x cols | tokens | threads | GB/s | GOP/s | of bandwidth | of compute |');
  console.log('|---|---|---|---:|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    console.log(
      `| ${r.kernel} | ${r.format} | ${r.rows}x${r.cols} | ${r.tokens} | ${r.threads} | ${r.gbPerSecond.toFixed(2)} | ` +
        `${r.gopsPerSecond.toFixed(2)} | ${pct(r.fractionOfBandwidth)} | ${pct(r.fractionOfCompute)} |`,
    );
  }
  console.log('\n| attention (9 heads, 3 KV heads x 64, f16 cache) | tokens | threads | µs | cache GB/s | of bandwidth | GFLOP/s | of f32 peak |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of attentionRows) {
    const what = r.tokens === 1
      ? `decode at ${r.context} positions`
      : `${r.tokens}-token prompt${r.context > 0 ? ` after ${r.context}` : ''}`;
    console.log(
      `| ${what} | ${r.tokens} | ${r.threads} | ${(r.seconds * 1e6).toFixed(1)} | ${r.gbPerSecond.toFixed(2)} | ` +
        `${r.tokens === 1 ? pct(r.fractionOfBandwidth) : '—'} | ${r.gflopsPerSecond.toFixed(1)} | ${r.tokens === 1 ? '—' : pct(r.fractionOfCompute)} |`,
    );
  }
}
