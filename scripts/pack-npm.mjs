#!/usr/bin/env node
// Packs what `npm publish` would publish, the napi-rs way: the platform package `seedinfer-linux-x64-gnu`
// (npm/linux-x64-gnu/ with the addon built for the baseline x86-64 instruction set; kernels pick AVX2 or wider at
// run time) and the main package `seedinfer`, which lists it in `optionalDependencies` and carries no addon of its
// own. Needs `npm run build` first. Usage: node scripts/pack-npm.mjs [outDir] (default .npm-pack/); prints the two
// tarballs' paths as JSON.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.resolve(process.argv[2] ?? path.join(root, '.npm-pack'));
const main = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
const platforms = fs.readdirSync(path.join(root, 'npm'));
fs.mkdirSync(out, { recursive: true });
const staging = fs.mkdtempSync(path.join(os.tmpdir(), 'seedinfer-pack-'));

function pack(dir) {
  const json = execFileSync('npm', ['pack', '--ignore-scripts', '--json', '--pack-destination', out], { cwd: dir, encoding: 'utf8' });
  return path.join(out, JSON.parse(json)[0].filename);
}

try {
  const tarballs = {};
  const optionalDependencies = {};
  for (const platform of platforms) {
    const source = path.join(root, 'npm', platform);
    const manifest = JSON.parse(fs.readFileSync(path.join(source, 'package.json'), 'utf8'));
    const addon = path.join(root, 'native', manifest.main);
    if (!fs.existsSync(addon)) {
      console.error(`skipping ${manifest.name}: ${addon} is not built here`);
      continue;
    }
    if (manifest.version !== main.version) throw new Error(`${manifest.name} is at ${manifest.version}, seedinfer at ${main.version}`);
    const dir = path.join(staging, platform);
    fs.cpSync(source, dir, { recursive: true });
    fs.copyFileSync(addon, path.join(dir, manifest.main));
    tarballs[manifest.name] = pack(dir);
    optionalDependencies[manifest.name] = manifest.version;
  }
  const dir = path.join(staging, 'seedinfer');
  for (const entry of ['dist', 'index.d.ts', 'bench.d.ts', 'README.md']) {
    fs.cpSync(path.join(root, entry), path.join(dir, entry), { recursive: true });
  }
  const { scripts, devDependencies, ...published } = main;
  void scripts;
  void devDependencies;
  published.files = main.files.filter((f) => !f.startsWith('native/'));
  published.optionalDependencies = optionalDependencies;
  fs.writeFileSync(path.join(dir, 'package.json'), `${JSON.stringify(published, null, 2)}\n`);
  tarballs[main.name] = pack(dir);
  console.log(JSON.stringify(tarballs, null, 2));
} finally {
  fs.rmSync(staging, { recursive: true, force: true });
}
