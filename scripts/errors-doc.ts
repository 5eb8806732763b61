/**
 * Writes docs/errors.md from shared/errors.ts (`tsx scripts/errors-doc.ts`);
 * shared/errors.test.ts fails when the two drift apart.
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERRORS, ERROR_CODES } from '../shared';

export function renderErrorsDoc(): string {
  const rows = ERROR_CODES.map((code) => {
    const e = ERRORS[code];
    return `| \`${code}\` | ${e.status} | ${e.retryable ? 'yes' : 'no'} | ${e.message.replace(/\|/g, '\\|')} |`;
  });
  return [
    '# Error codes',
    '',
    'Every error the coordinator, the nodes and the tools report carries one of these codes (generated from',
    '`shared/errors.ts` by `npx tsx scripts/errors-doc.ts`). HTTP answers carry the status below and a body',
    '`{ "error": { "code", "message", "details"? } }`. "Retryable" says whether the scheduler tries the task again.',
    '',
    '| code | HTTP | retryable | meaning |',
    '| --- | --- | --- | --- |',
    ...rows,
    '',
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  writeFileSync(join(import.meta.dirname, '..', 'docs', 'errors.md'), renderErrorsDoc());
}
