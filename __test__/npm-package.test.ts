// What `npm install seedinfer` gives a user without Rust: both tarballs `npm publish` would publish (the main
// package and the platform package holding the addon, scripts/pack-npm.mjs) installed into a clean project with no
// cargo or rustc on the PATH, then the CLI on the default model, the API from an ES module, a TypeScript file
// type-checked against the installed typings, and the baseline binary forced to scalar kernels.
import test from 'ava';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ensureDefaultModel } from '../src/index.js';
import { realCacheDir, repoRoot, tempDir } from './helpers/paths.js';

const work = tempDir('seedinfer-npm-package-');
test.after.always(() => fs.rmSync(work, { recursive: true, force: true }));

/** PATH without the directories that hold cargo or rustc. */
const pathWithoutRust = (process.env.PATH ?? '')
  .split(path.delimiter)
  .filter((dir) => !['cargo', 'rustc'].some((tool) => fs.existsSync(path.join(dir, tool))))
  .join(path.delimiter);

function run(command: string, args: string[], cwd: string, env: Record<string, string> = {}): string {
  return execFileSync(command, args, {
    cwd,
    encoding: 'utf8',
    env: { ...process.env, PATH: pathWithoutRust, SEEDINFER_CACHE: realCacheDir, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 180_000,
  });
}

test('the packed tarballs install and run without a Rust toolchain', async (t) => {
  await ensureDefaultModel();
  t.truthy(pathWithoutRust);
  t.throws(() => run('cargo', ['--version'], work), undefined, 'cargo is hidden from the PATH');
  const packs = path.join(work, 'packs');
  const tarballs = JSON.parse(run(process.execPath, [path.join(repoRoot, 'scripts', 'pack-npm.mjs'), packs], repoRoot)) as Record<string, string>;
  t.deepEqual(Object.keys(tarballs).sort(), ['seedinfer', 'seedinfer-linux-x64-gnu']);
  const project = path.join(work, 'project');
  fs.mkdirSync(project);
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'user-project', private: true, type: 'module' }));
  run('npm', ['install', '--no-audit', '--no-fund', tarballs.seedinfer, tarballs['seedinfer-linux-x64-gnu']], project);
  // The main package carries no addon: the platform package's is the one that loads.
  const installed = path.join(project, 'node_modules');
  t.false(fs.existsSync(path.join(installed, 'seedinfer', 'native')));
  t.true(fs.existsSync(path.join(installed, 'seedinfer-linux-x64-gnu', 'seedinfer.linux-x64-gnu.node')));

  const cli = run('npx', ['seedinfer', 'generate', '--max-tokens', '8', '--temperature', '0', 'Once upon a time'], project);
  t.log(`npx seedinfer generate: ${JSON.stringify(cli.trim())}`);
  t.true(cli.trim().length > 0);

  fs.writeFileSync(
    path.join(project, 'api.mjs'),
    `import { Model } from 'seedinfer';
const model = await Model.load();
const result = await model.createSession().generateText('Once upon a time', { maxTokens: 8, temperature: 0 });
console.log(JSON.stringify({ tokens: result.tokenIds.length, text: result.text, kernels: model.info.kernelIsa }));
`,
  );
  const api = JSON.parse(run(process.execPath, ['api.mjs'], project)) as { tokens: number; text: string; kernels: string };
  t.is(api.tokens, 8);
  t.log(`API from an ES module: ${JSON.stringify(api)}`);
  // The same package on the baseline instruction set: SEEDINFER_ISA=scalar takes no AVX2 path.
  const scalar = JSON.parse(run(process.execPath, ['api.mjs'], project, { SEEDINFER_ISA: 'scalar' })) as typeof api;
  t.regex(scalar.kernels, /scalar/);
  t.notRegex(scalar.kernels, /avx/);
  t.is(scalar.tokens, 8);

  // Without the platform package (optional dependencies omitted) the library says what is missing.
  const bare = path.join(work, 'bare');
  fs.mkdirSync(bare);
  fs.writeFileSync(path.join(bare, 'package.json'), JSON.stringify({ name: 'bare-project', private: true, type: 'module' }));
  run('npm', ['install', '--no-audit', '--no-fund', '--omit=optional', tarballs.seedinfer], bare);
  fs.writeFileSync(
    path.join(bare, 'load.mjs'),
    `import { Model } from 'seedinfer';
try { await Model.load(); } catch (error) { console.log(JSON.stringify({ code: error.code, message: error.message })); }
`,
  );
  const missing = JSON.parse(run(process.execPath, ['load.mjs'], bare)) as { code: string; message: string };
  t.is(missing.code, 'NATIVE_BINDING_MISSING');
  t.regex(missing.message, /linux-x64-gnu.*Rust toolchain/s);

  // TypeScript against the installed typings (the project's own @types/node, as any Node TypeScript project has).
  const tsconfig = (files: string[]) =>
    JSON.stringify({
      compilerOptions: {
        target: 'es2022',
        module: 'nodenext',
        moduleResolution: 'nodenext',
        strict: true,
        noEmit: true,
        typeRoots: [path.join(repoRoot, 'node_modules', '@types')],
        types: ['node'],
      },
      files,
    });
  fs.writeFileSync(
    path.join(project, 'good.ts'),
    `import { Model, SeedinferError, type GenerateOptions } from 'seedinfer';
const options: GenerateOptions = { maxTokens: 8, temperature: 0 };
const model: Model = await Model.load();
const text: string = (await model.createSession().generateText('Hello', options)).text;
console.log(text, SeedinferError.name);
`,
  );
  fs.writeFileSync(path.join(project, 'bad.ts'), `import type { GenerateOptions } from 'seedinfer';\nexport const o: GenerateOptions = { temprature: 0 };\n`);
  const tsc = path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc');
  fs.writeFileSync(path.join(project, 'tsconfig.json'), tsconfig(['good.ts']));
  run(process.execPath, [tsc, '-p', '.'], project);
  // The check is real: a misspelt option does not type-check.
  fs.writeFileSync(path.join(project, 'tsconfig.json'), tsconfig(['bad.ts']));
  const failure = t.throws(() => run(process.execPath, [tsc, '-p', '.'], project));
  t.regex(String((failure as { stdout?: string } | undefined)?.stdout), /temprature/);
});
