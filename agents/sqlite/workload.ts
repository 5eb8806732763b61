/**
 * A deterministic SQLite workload for the sqlite program (agents/dist/programs/sqlite.wasm):
 * a CSV of a few thousand sales rows, a script that imports it, indexes it and writes
 * aggregate results into files, and the same work done by better-sqlite3 (the same SQLite
 * release, compiled natively) as the independent reference. Shared by agents/sqlite/sqlite.test.ts
 * (the module under the WASI layer in Node) and e2e/wasi-programs.e2e.test.ts (through the pool).
 */
import Database from 'better-sqlite3';

type Cell = string | number | bigint | null;

export interface Step {
  sql: string;
  /** The statement's rows go to this file (guest path) as CSV or JSON. */
  csv?: string;
  json?: string;
}

const REGIONS = ['north', 'south', 'east', 'west', 'central', 'islands', 'overseas'];
const PRODUCTS = ['widget', 'gadget, large', 'gizmo "pro"', 'doohickey', 'sprocket', 'thingamajig\nv2', 'whatsit', 'gear'];

/** The sales rows: id, region, product, code (quoted digits: text), qty, price, discount (empty: NULL), day. */
export function salesRows(count: number): Cell[][] {
  let seed = 12345;
  const next = (): number => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed;
  };
  const rows: Cell[][] = [];
  for (let id = 1; id <= count; id++) {
    const region = REGIONS[next() % REGIONS.length] ?? 'north';
    const product = PRODUCTS[next() % PRODUCTS.length] ?? 'widget';
    const code = String(next() % 10000).padStart(4, '0');
    const qty = BigInt(1 + (next() % 50));
    const price = (100 + (next() % 99900)) / 100;
    const discount = next() % 4 === 0 ? null : (next() % 30) / 100;
    const day = `2024-${String(1 + (next() % 12)).padStart(2, '0')}-${String(1 + (next() % 28)).padStart(2, '0')}`;
    rows.push([BigInt(id), region, product, code, qty, price, discount, day]);
  }
  return rows;
}

export const SALES_COLUMNS = ['id', 'region', 'product', 'code', 'qty', 'price', 'discount', 'day'];

const quote = (s: string): string => `"${s.replace(/"/g, '""')}"`;

/** RFC 4180 CSV with a header; text quoted (so digit strings stay text), numbers bare, NULL empty. */
export function salesCsv(rows: Cell[][]): string {
  const lines = [SALES_COLUMNS.join(',')];
  for (const row of rows) lines.push(row.map((v) => (v === null ? '' : typeof v === 'string' ? quote(v) : String(v))).join(','));
  return `${lines.join('\r\n')}\r\n`;
}

/** The work after the import; results into `outDir`. */
export function steps(outDir: string): Step[] {
  return [
    { sql: 'CREATE INDEX sales_region ON sales(region)' },
    { sql: 'CREATE INDEX sales_product_day ON sales(product, day)' },
    { sql: 'CREATE TABLE managers(region TEXT PRIMARY KEY, manager TEXT NOT NULL) STRICT' },
    {
      sql: `INSERT INTO managers VALUES ${REGIONS.map((r, i) => `('${r}', 'manager ${String.fromCharCode(65 + i)}')`).join(', ')}`,
    },
    { sql: "UPDATE sales SET discount = 0.5 WHERE qty = 50 AND region = 'north'" },
    { sql: "DELETE FROM sales WHERE day = '2024-02-29' OR price > 999.5" },
    {
      csv: `${outDir}/by_region.csv`,
      sql: `SELECT s.region, m.manager, count(*) AS orders, sum(qty) AS units, round(sum(qty * price), 2) AS revenue,
              avg(price) AS mean_price, count(discount) AS discounted, median(price) AS median_price
            FROM sales s JOIN managers m USING (region) GROUP BY s.region ORDER BY revenue DESC`,
    },
    {
      json: `${outDir}/products.json`,
      sql: `SELECT product, sum(qty) AS units, max(price) AS top_price, min(code) AS first_code,
              group_concat(DISTINCT region) FILTER (WHERE qty > 45) AS big_regions
            FROM sales GROUP BY product ORDER BY units DESC, product`,
    },
    {
      json: `${outDir}/monthly.json`,
      sql: `WITH m AS (SELECT substr(day, 1, 7) AS month, total(qty * price * (1 - coalesce(discount, 0))) AS net FROM sales GROUP BY month)
            SELECT month, round(net, 2) AS net, round(sum(net) OVER (ORDER BY month), 2) AS running,
              rank() OVER (ORDER BY net DESC) AS rank FROM m ORDER BY month`,
    },
    { sql: "SELECT count(*) AS orders, sum(code LIKE '00%') AS leading_zeros, count(*) - count(discount) AS no_discount, typeof(code) AS code_type FROM sales" },
  ];
}

/** The script the program runs: the import, then the steps with their dot commands. */
export function script(csvPath: string, outDir: string): string {
  const lines = [`.import ${csvPath} sales`];
  for (const s of steps(outDir)) {
    if (s.csv) lines.push(`.csv ${s.csv}`);
    if (s.json) lines.push(`.json ${s.json}`);
    lines.push(`${s.sql};`);
  }
  return `${lines.join('\n')}\n`;
}

export interface Reference {
  /** Rows (as objects) of each step that writes a file, by guest path. */
  files: Map<string, { format: 'csv' | 'json'; columns: string[]; rows: Record<string, unknown>[] }>;
  /** Rows of the steps whose rows go into the summary. */
  results: { columns: string[]; rows: unknown[][] }[];
  /** Rows left in `sales`, and the rows/changes counts. */
  salesLeft: number;
  changes: number;
}

/** Does the same work with better-sqlite3: rows inserted straight from JavaScript, not via the CSV. */
export function reference(rows: Cell[][], outDir: string): Reference {
  const db = new Database(':memory:');
  try {
    db.exec(`CREATE TABLE sales(${SALES_COLUMNS.map((c) => `"${c}"`).join(',')})`);
    const insert = db.prepare(`INSERT INTO sales VALUES (${SALES_COLUMNS.map(() => '?').join(',')})`);
    db.transaction(() => {
      for (const row of rows) insert.run(...row);
    })();
    const ref: Reference = { files: new Map(), results: [], salesLeft: 0, changes: 0 };
    for (const s of steps(outDir)) {
      const st = db.prepare(s.sql);
      if (!st.reader) {
        st.run();
        continue;
      }
      const columns = st.columns().map((c) => c.name);
      if (s.csv || s.json) {
        ref.files.set(s.csv ?? s.json ?? '', { format: s.csv ? 'csv' : 'json', columns, rows: st.all() as Record<string, unknown>[] });
      } else {
        ref.results.push({ columns, rows: st.raw().all() as unknown[][] });
      }
    }
    ref.salesLeft = (db.prepare('SELECT count(*) AS n FROM sales').get() as { n: number }).n;
    ref.changes = (db.prepare('SELECT total_changes() AS n').get() as { n: number }).n;
    return ref;
  } finally {
    db.close();
  }
}

/** Parses RFC 4180 CSV (the program's output) into records of strings. */
export function parseCsv(text: string): string[][] {
  const records: string[][] = [];
  let record: string[] = [];
  let field = '';
  let i = 0;
  let quoted = false;
  while (i < text.length) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i += 2;
        continue;
      }
      if (c === '"') quoted = false;
      else field += c;
      i++;
      continue;
    }
    if (c === '"') quoted = true;
    else if (c === ',') {
      record.push(field);
      field = '';
    } else if (c === '\r' && text[i + 1] === '\n') {
      record.push(field);
      records.push(record);
      record = [];
      field = '';
      i++;
    } else field += c;
    i++;
  }
  if (field || record.length) throw new Error('the CSV does not end with CRLF');
  return records;
}

/** A CSV cell against the reference value: NULL is empty, numbers read back exactly, text as is. */
export function csvCellMatches(cell: string, want: unknown): boolean {
  if (want === null) return cell === '';
  if (typeof want === 'number') return Number(cell) === want;
  return cell === want;
}
