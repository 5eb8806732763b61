/**
 * `npm run bench -- NAME [args]`: runs one benchmark; its last stdout line is one
 * JSON object with the figures and the goals beside them.
 * Add a benchmark by adding its module to BENCHES (it exports `run(args)`).
 */
interface Bench {
  run(args: string[]): Promise<Record<string, unknown>>;
}

const BENCHES: Record<string, () => Promise<Bench>> = {
  agents: () => import('./agents'),
  training: () => import('./training'),
  inference: () => import('./inference'),
  scheduler: () => import('./scheduler'),
};

async function main(): Promise<void> {
  const [name, ...args] = process.argv.slice(2);
  const load = name ? BENCHES[name] : undefined;
  if (!load) {
    process.stderr.write(`Usage: npm run bench -- <${Object.keys(BENCHES).join('|')}> [args]\n`);
    process.exit(2);
  }
  const result = await (await load()).run(args);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  process.exit(0);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
