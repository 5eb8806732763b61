/** Node-only access to the built agent modules in `agents/dist/`. */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { AppError } from '../shared';
import { AGENTS, findAgent } from './catalog';

/** Absolute path of `agents/dist/`. */
export const AGENTS_DIST_DIR = fileURLToPath(new URL('./dist/', import.meta.url));

/** The bytes of a catalogued agent's module (`agents/dist/NAME.wasm`). */
export function readAgent(name: string): Uint8Array<ArrayBuffer> {
  if (!findAgent(name)) {
    throw new AppError('AGENT_NOT_FOUND', `No sample agent is named ${JSON.stringify(name)}; known: ${AGENTS.map((a) => a.name).join(', ')}.`);
  }
  const path = fileURLToPath(new URL(`./dist/${name}.wasm`, import.meta.url));
  try {
    return new Uint8Array(readFileSync(path));
  } catch (err) {
    throw new AppError('AGENT_NOT_FOUND', `The module ${path} is missing; build it with \`bash agents/build.sh\`.`, { path }, { cause: err });
  }
}
