/**
 * `npm run model:tiny -- --out DIR [--seed N] [--arch llama|qwen2|gemma] [--size large]`: writes one model folder.
 * `npm run model:tiny -- --out DIR --builtin`: writes every built-in model into DIR/<name>/ (skipping those up to date).
 */
import { parseArgs } from 'node:util';
import { BUILTIN_MODELS, LARGE_LLAMA_SIZES, makeBuiltinModels } from './builtin';
import { TINY_ARCHS, type TinyArch } from './generate';
import { makeTinyModel } from './make';

const USAGE = `usage: npm run model:tiny -- --out DIR [--seed N] [--arch ${TINY_ARCHS.join('|')}] [--size tiny|large]
       npm run model:tiny -- --out DIR --builtin   (${BUILTIN_MODELS.map((m) => m.name).join(', ')})`;

function fail(message: string): never {
  console.error(`${message}\n${USAGE}`);
  process.exit(2);
}

const { values } = parseArgs({
  options: {
    out: { type: 'string' },
    seed: { type: 'string', default: '1' },
    arch: { type: 'string', default: 'llama' },
    size: { type: 'string', default: 'tiny' },
    builtin: { type: 'boolean', default: false },
  },
});
if (!values.out) fail('--out is required');
if (values.builtin) {
  for (const m of await makeBuiltinModels(values.out)) {
    const bytes = m.manifest.files.reduce((n, f) => n + f.size, 0);
    console.log(`${m.name.padEnd(12)} ${String(bytes).padStart(10)} bytes  ${m.written ? 'written' : 'up to date'}  ${m.dir}`);
  }
} else {
  const seed = Number(values.seed);
  if (!Number.isSafeInteger(seed)) fail(`--seed must be an integer (got ${values.seed})`);
  if (!(TINY_ARCHS as readonly string[]).includes(values.arch)) fail(`--arch must be one of ${TINY_ARCHS.join(', ')} (got ${values.arch})`);
  if (values.size !== 'tiny' && values.size !== 'large') fail(`--size must be tiny or large (got ${values.size})`);
  const options = { seed, arch: values.arch as TinyArch, dir: values.out };
  const manifest = await makeTinyModel(values.size === 'large' ? { ...options, sizes: LARGE_LLAMA_SIZES } : options);
  for (const f of manifest.files) console.log(`${f.sha256}  ${String(f.size).padStart(9)}  ${f.path}`);
}
