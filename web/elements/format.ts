/** Number formats the node's panels share. */

/** Bytes in binary units: `512 B`, `3.4 KiB`, `12.0 MiB`, `1.5 GiB`. */
export function bytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '—';
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  if (n >= 2 ** 10) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  return `${Math.round(n)} B`;
}

/** How long ago `at` (epoch ms) was, from `now`: `just now`, `12 s ago`, `5 min ago`, `3 h ago`, `2 d ago`; `never` for 0. */
export function ago(at: number, now = Date.now()): string {
  if (!at) return 'never';
  const s = Math.max(0, (now - at) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86_400)} d ago`;
}

/** A rate with sensible precision: `0`, `0.42`, `8.3`, `1,380`. */
export function rate(n: number): string {
  if (!Number.isFinite(n)) return '—';
  if (n === 0) return '0';
  if (n < 1) return n.toFixed(2);
  if (n < 100) return n.toFixed(1);
  return Math.round(n).toLocaleString('en-US');
}
