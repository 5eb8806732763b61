/**
 * Journal operations (server/journal-ops.ts):
 *   npm run journal -- backup  --db data/coordinator.db --to backup.db   (online: the coordinator keeps running)
 *   npm run journal -- restore --from backup.db --db data/coordinator.db  (the coordinator stopped)
 *   npm run journal -- copy    --db data/coordinator.db --to postgres://user@host/db  (the coordinator stopped)
 * Each prints one JSON line with what it did; a refusal prints its reason and exits 2.
 */
import { parseArgs } from 'node:util';
import { backupSqlite, copyToPostgres, restoreSqlite } from '../server/journal-ops';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { db: { type: 'string', default: './data/coordinator.db' }, to: { type: 'string' }, from: { type: 'string' } },
});
const need = (v: string | undefined, flag: string): string => {
  if (!v) throw new Error(`${positionals[0]}: --${flag} is required`);
  return v;
};
try {
  switch (positionals[0]) {
    case 'backup':
      console.log(JSON.stringify({ backup: need(values.to, 'to'), ...(await backupSqlite(values.db, need(values.to, 'to'))) }));
      break;
    case 'restore':
      console.log(JSON.stringify({ restored: values.db, ...restoreSqlite(need(values.from, 'from'), values.db) }));
      break;
    case 'copy':
      console.log(JSON.stringify({ copied: copyToPostgres(values.db, need(values.to, 'to')) }));
      break;
    default:
      throw new Error('usage: npm run journal -- backup|restore|copy [--db FILE] [--to FILE|URL] [--from FILE]');
  }
} catch (err) {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(2);
}
