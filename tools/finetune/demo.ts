/** `--demo`: the tiny model and the built-in conversation set, written to a folder (Node). */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { makeTinyModel } from '../tiny-model';
import { qaJsonl } from './demo-data';

export interface DemoFiles {
  model: string;
  data: string;
}

/** Writes `model/` (the tiny Llama, seed 1) and `data.jsonl` under dir. */
export async function writeDemo(dir: string, seed = 1): Promise<DemoFiles> {
  const model = join(dir, 'model');
  const data = join(dir, 'data.jsonl');
  await mkdir(dir, { recursive: true });
  await makeTinyModel({ seed, dir: model });
  await writeFile(data, qaJsonl());
  return { model, data };
}
