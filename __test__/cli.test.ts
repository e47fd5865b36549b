import test from 'ava';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { cliSource, defaultModelFile, hasStories, repoRoot, storiesDir, storiesExpected, tempDir } from './helpers/paths.js';

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI from source (`node --import tsx src/cli.ts ...`), optionally feeding `input` on stdin. */
function cli(args: string[], options: { input?: string; env?: Record<string, string>; timeoutMs?: number } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', cliSource, ...args], {
      cwd: repoRoot,
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 240_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.end(options.input ?? '');
  });
}

const storiesTest = hasStories ? test : test.skip;

// ------------------------------------------------------------------------------------------ usage errors

test('a non-numeric option is a usage error (exit 2)', async (t) => {
  const run = await cli(['generate', '--max-tokens', 'lots', 'hello']);
  t.is(run.code, 2, run.stderr);
  t.regex(run.stderr, /--max-tokens/);
  t.regex(run.stderr, /integer/);
  for (const args of [
    ['generate', '--temperature', 'hot', 'x'],
    ['generate', '--top-p', '1.5', 'x'],
    ['generate', '--prompt-ids', '1,a,3'],
    ['info', '--threads', '0'],
    ['chat', '--seed', '-1'],
  ]) {
    const bad = await cli(args);
    t.is(bad.code, 2, `${args.join(' ')}: ${bad.stderr}`);
  }
});

test('unknown commands and conflicting prompt arguments are usage errors', async (t) => {
  t.is((await cli(['frobnicate'])).code, 2);
  const both = await cli(['generate', '--prompt-ids', '1', 'and text']);
  t.is(both.code, 2);
  t.regex(both.stderr, /either a prompt or --prompt-ids/);
});

test('--help exits 0', async (t) => {
  const run = await cli(['--help']);
  t.is(run.code, 0);
  for (const command of ['generate', 'chat', 'pull', 'info']) t.true(run.stdout.includes(command));
});

test('a missing model path -> exit 1 with MODEL_NOT_FOUND', async (t) => {
  const missing = path.join(tempDir(), 'no-such-model.gguf');
  const run = await cli(['generate', '--model', missing, '--max-tokens', '4', 'hello']);
  t.is(run.code, 1, run.stderr);
  t.regex(run.stderr, /^seedinfer: MODEL_NOT_FOUND: /m);
  t.true(run.stderr.includes(missing));
  const info = await cli(['info', missing]);
  t.is(info.code, 1);
  t.regex(info.stderr, /MODEL_NOT_FOUND/);
});

test('pull with an invalid Hub id -> exit 2 (INVALID_OPTION); unreachable Hub -> exit 1 (HUB_UNREACHABLE)', async (t) => {
  const invalid = await cli(['pull', 'not-an-id', '--cache-dir', tempDir()]);
  t.is(invalid.code, 2);
  t.regex(invalid.stderr, /INVALID_OPTION/);
  const unreachable = await cli(['pull', 'org/name', '--cache-dir', tempDir()], {
    env: { HF_ENDPOINT: 'http://127.0.0.1:9', SEEDINFER_HUB_TIMEOUT_MS: '3000' },
  });
  t.is(unreachable.code, 1);
  t.regex(unreachable.stderr, /seedinfer: HUB_UNREACHABLE: .*127\.0\.0\.1:9/);
});

// ------------------------------------------------------------------------------------------ with the engine

storiesTest('generate --prompt-ids 1 --temperature 0 --json reproduces the stories260K greedy reference', async (t) => {
  const expected = storiesExpected();
  const run = await cli(['generate', '--model', storiesDir, '--prompt-ids', '1', '--max-tokens', '200', '--temperature', '0', '--json']);
  t.is(run.code, 0, run.stderr);
  const lines = run.stdout.trim().split('\n');
  t.is(lines.length, 1, 'exactly one JSON object on stdout');
  const result = JSON.parse(lines[0]);
  t.deepEqual(result.promptTokenIds, expected.prompt_token_ids);
  t.deepEqual(result.tokenIds, expected.greedy_token_ids);
  t.is(typeof result.text, 'string');
  t.true(result.text.startsWith('Once upon a time'), result.text.slice(0, 80));
  t.is(result.stopReason, 'maxTokens');
  for (const key of ['ttftMs', 'prefillTokensPerSecond', 'decodeTokensPerSecond']) t.is(typeof result.timings[key], 'number', key);
});

storiesTest('generate streams text to stdout and a timing summary to stderr', async (t) => {
  const run = await cli(['generate', '--model', storiesDir, '--max-tokens', '20', '--temperature', '0', 'Once upon a time']);
  t.is(run.code, 0, run.stderr);
  t.true(run.stdout.length > 0);
  t.regex(run.stderr, /decode .* tok\/s/);
});

storiesTest('generate reads the prompt from stdin', async (t) => {
  const piped = await cli(['generate', '--model', storiesDir, '--max-tokens', '10', '--temperature', '0', '--json'], { input: 'Once upon a time\n' });
  const direct = await cli(['generate', '--model', storiesDir, '--max-tokens', '10', '--temperature', '0', '--json', 'Once upon a time']);
  t.is(piped.code, 0, piped.stderr);
  t.is(direct.code, 0, direct.stderr);
  t.deepEqual(JSON.parse(piped.stdout).tokenIds, JSON.parse(direct.stdout).tokenIds);
  t.deepEqual(JSON.parse(piped.stdout).promptTokenIds, JSON.parse(direct.stdout).promptTokenIds);
});

storiesTest('info --json describes stories260K', async (t) => {
  const run = await cli(['info', '--json', storiesDir]);
  t.is(run.code, 0, run.stderr);
  const info = JSON.parse(run.stdout);
  t.is(info.layers, 5);
  t.is(info.hiddenSize, 64);
  t.is(info.kvHeads, 4);
  t.is(info.vocabSize, 512);
  t.is(info.fileFormat, 'safetensors');

  const table = await cli(['info', storiesDir]);
  t.is(table.code, 0, table.stderr);
  t.regex(table.stdout, /^layers\s+5$/m);
  t.regex(table.stdout, /^heads \/ kv heads\s+8 \/ 4$/m);
  t.regex(table.stdout, /^parameters\s+260\.0K/m);
});

storiesTest('info shows the KV cache; --kv-dtype int8 shrinks KV bytes per token and generation still runs', async (t) => {
  const table = await cli(['info', storiesDir]);
  t.regex(table.stdout, /^KV cache\s+f16, blocks of 32 positions/m);
  const f16 = JSON.parse((await cli(['info', '--json', storiesDir])).stdout).kvBytesPerToken;
  const int8 = await cli(['info', '--json', '--kv-dtype', 'int8', '--kv-block-size', '16', storiesDir]);
  t.is(int8.code, 0, int8.stderr);
  // stories260K: 5 layers x 4 KV heads x head size 8, keys and values: 640 bytes per token in f16; int8 stores 8
  // bytes and one f32 scale per row.
  t.is(f16, 640);
  t.is(JSON.parse(int8.stdout).kvBytesPerToken, 480);
  const run = await cli(['generate', '--model', storiesDir, '--kv-dtype', 'int8', '--max-tokens', '20', '--temperature', '0', '--json', '--prompt-ids', '1']);
  t.is(run.code, 0, run.stderr);
  t.is(JSON.parse(run.stdout).tokenIds.length, 20);
  const bad = await cli(['info', '--kv-dtype', 'q4', storiesDir]);
  t.is(bad.code, 2);
});

storiesTest('generate --prefill lazyllm prunes the prompt and reports it in --json', async (t) => {
  const ids = [1, ...storiesExpected().greedy_token_ids.slice(0, 99)].join(',');
  const run = await cli(['generate', '--model', storiesDir, '--prefill', 'lazyllm', '--max-tokens', '5', '--temperature', '0', '--json', '--prompt-ids', ids]);
  t.is(run.code, 0, run.stderr);
  const out = JSON.parse(run.stdout);
  t.is(out.prefill.strategy, 'lazyllm');
  // stories260K's 5 layers: the default stages fall at layers 1 and 3 (35% and 60%, the 85% one clamped onto 3).
  t.deepEqual(out.prefill.layerTokens, [100, 100, 70, 70, 50]);
  const bad = await cli(['generate', '--model', storiesDir, '--prefill', 'sparse', '--prompt-ids', '1']);
  t.is(bad.code, 2);
});

storiesTest('quantize writes a seedlm4 container that generate then runs; a missing --format is a usage error', async (t) => {
  const out = path.join(tempDir(), 'stories.seedlm4.gguf');
  const run = await cli(['quantize', storiesDir, '--format', 'seedlm4', '--out', out, '--json']);
  t.is(run.code, 0, run.stderr);
  const report = JSON.parse(run.stdout);
  t.is(report.format, 'seedlm4');
  t.is(report.quantizedTensors, 35);
  t.regex(run.stderr, /quantize seedlm4 .*100%/);
  const gen = await cli(['generate', '--model', out, '--max-tokens', '8', '--temperature', '0', '--json', 'Once upon a time']);
  t.is(gen.code, 0, gen.stderr);
  t.is(JSON.parse(gen.stdout).tokenIds.length, 8);
  const bad = await cli(['quantize', storiesDir, '--out', out]);
  t.is(bad.code, 2);
  t.regex(bad.stderr, /--format/);
});

test('chat with the default model answers "Paris" (downloads the default model on first use)', async (t) => {
  const run = await cli(['chat', '--temperature', '0', '--max-tokens', '40'], { input: 'What is the capital of France?\n' });
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /Paris/, run.stdout);
  t.truthy(defaultModelFile);
});

storiesTest('serve: answers /v1/completions, and on SIGTERM finishes the request in flight and exits 0', async (t) => {
  const child = spawn(process.execPath, ['--import', 'tsx', cliSource, 'serve', storiesDir, '--port', '0', '--model-id', 'stories', '--parallel', '2', '--max-batch-tokens', '16'], {
    cwd: repoRoot,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no banner: ${stderr}`)), 60_000);
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      const match = /on (http:\/\/\S+)\/v1/.exec(stderr);
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
  try {
    // The banner comes before the model has loaded (requests get 503 until then): wait until it serves, so that
    // the request below is in flight, not refused, when SIGTERM arrives.
    for (let i = 0; i < 600 && (await fetch(`${address}/health`)).status !== 200; i++) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const request = fetch(`${address}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'stories', prompt: 'Once upon a time', max_tokens: 400, temperature: 0 }),
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    child.kill('SIGTERM');
    const response = await request;
    t.is(response.status, 200);
    const body = (await response.json()) as { choices: { text: string }[]; usage: { completion_tokens: number } };
    t.true(body.usage.completion_tokens > 0 && body.choices[0].text.length > 0);
    t.is(await exited, 0, stderr);
    t.regex(stderr, /shutting down/);
  } finally {
    child.kill('SIGKILL');
  }
});
