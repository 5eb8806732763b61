/** `npm run model:tiny -- --out DIR --seed N`: writes the tiny model folder. */
import { parseArgs } from 'node:util';
import { makeTinyModel } from './make';

const { values } = parseArgs({
  options: {
    out: { type: 'string' },
    seed: { type: 'string', default: '1' },
  },
});
if (!values.out) {
  console.error('usage: npm run model:tiny -- --out DIR [--seed N]');
  process.exit(2);
}
const seed = Number(values.seed);
if (!Number.isSafeInteger(seed)) {
  console.error(`--seed must be an integer (got ${values.seed})`);
  process.exit(2);
}
const manifest = await makeTinyModel({ seed, dir: values.out });
for (const f of manifest.files) console.log(`${f.sha256}  ${String(f.size).padStart(9)}  ${f.path}`);
