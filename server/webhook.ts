/**
 * Delivers the final task record to a task's `webhook` URL: POST JSON, signed, a few
 * attempts with exponential backoff, each bounded by a timeout.
 *
 * Server-side request forgery rules: a webhook is `https`, or its host is one the operator
 * allowed (`--webhook-allow-host`). Loopback, private, link-local, unspecified, multicast and
 * reserved addresses (and IPv6 forms that embed them) are refused unless the host is allowed,
 * at submit (IP literals and `localhost` names) and again at every delivery on the resolved
 * addresses: the name is resolved, every address checked, and the connection goes to the
 * address that was checked (no second lookup, so DNS rebinding cannot swap it). Redirects are
 * not followed.
 *
 * Each delivery carries `x-webhook-id` (the same on every delivery of one task, retries and redeliveries) and
 * `x-webhook-signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">` under the
 * coordinator's webhook secret (README: "Verifying webhook signatures"), and `traceparent`: the task's W3C
 * trace context, or the `webhook.deliver` span's when tracing is on (docs/api.md "Tracing").
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { lookup } from 'node:dns/promises';
import { readFileSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import { isIP, type LookupFunction } from 'node:net';
import { join } from 'node:path';
import { AppError, type TaskId } from '../shared';
import type { Journal, StoredTask } from './journal';
import { traceparentOf, type Tracing } from './tracing';

export interface WebhookOptions {
  attempts: number;
  baseDelayMs: number;
  timeoutMs: number;
  /**
   * Hosts (names or IP literals, matched exactly, case-insensitive) that may be plain http and
   * may resolve to loopback or private addresses. Default none.
   */
  allowHosts: readonly string[];
  /** HMAC-SHA256 key of `x-webhook-signature`. Default: random per Webhooks instance (createCoordinator keeps one in the journal or beside it). */
  secret: string;
  /**
   * How long after a task ended its webhook may still be in another delivery (its coordinator's attempts): past
   * that, an undelivered one is delivered by whichever coordinator sweeps first (its own died or restarted).
   * Default: the whole delivery window (every attempt timing out, every backoff) plus 5 s. Give every
   * coordinator of one journal the same delivery options.
   */
  graceMs?: number;
}

export const DEFAULT_WEBHOOK_OPTIONS: Omit<WebhookOptions, 'secret'> = { attempts: 4, baseDelayMs: 250, timeoutMs: 5_000, allowHosts: [] };

/** The file beside the journal that keeps the generated webhook secret across restarts. */
export const WEBHOOK_SECRET_FILE = 'webhook-secret';

/**
 * The webhook secret for a coordinator whose data folder is `folder`: read from `webhook-secret` there, or
 * generated (32 random bytes, hex) and written there with mode 0600. No folder (a throwaway one) gets a fresh one.
 */
export function webhookSecretFor(folder: string | null): string {
  if (folder === null) return randomBytes(32).toString('hex');
  const file = join(folder, WEBHOOK_SECRET_FILE);
  for (let i = 0; i < 2; i++) {
    try {
      const text = readFileSync(file, 'utf8').trim();
      if (text) return text;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    try {
      writeFileSync(file, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err; // another process wrote it: read that
    }
  }
  throw new AppError('INTERNAL', `Could not read or create the webhook secret file ${file}.`);
}

/** `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`. */
export function signWebhook(secret: string, body: string, unixSeconds: number): string {
  const mac = createHmac('sha256', secret).update(`${unixSeconds}.${body}`).digest('hex');
  return `t=${unixSeconds},v1=${mac}`;
}

/** Why an IP address may not be a webhook's target, or null when it is a public unicast address. */
export function refusedAddress(address: string): string | null {
  const family = isIP(address);
  if (family === 4) return refusedV4(v4Octets(address));
  if (family === 6) return refusedV6(v6Words(address));
  return 'not an IP address';
}

function refusedV4(o: readonly number[]): string | null {
  const [a, b, c] = o as [number, number, number, number];
  if (a === 0) return 'unspecified ("this network", 0.0.0.0/8)';
  if (a === 127) return 'loopback (127.0.0.0/8)';
  if (a === 10 || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168)) return 'private (RFC 1918)';
  if (a === 100 && b >= 64 && b < 128) return 'shared address space (100.64.0.0/10)';
  if (a === 169 && b === 254) return 'link-local (169.254.0.0/16)';
  if (a === 192 && b === 0 && c === 0) return 'IETF protocol assignments (192.0.0.0/24)';
  if (a === 198 && (b === 18 || b === 19)) return 'benchmarking (198.18.0.0/15)';
  if (a >= 224 && a < 240) return 'multicast (224.0.0.0/4)';
  if (a >= 240) return 'reserved or broadcast (240.0.0.0/4)';
  return null;
}

function refusedV6(w: readonly number[]): string | null {
  const zeroUpTo = (n: number): boolean => w.slice(0, n).every((x) => x === 0);
  const embedded = (hi: number, lo: number): number[] => [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff];
  if (zeroUpTo(8)) return 'unspecified (::)';
  if (zeroUpTo(7) && w[7] === 1) return 'loopback (::1)';
  const v4 = (o: number[], form: string): string | null => {
    const why = refusedV4(o);
    return why ? `${form} of an IPv4 address that is ${why}` : null;
  };
  if (zeroUpTo(5) && w[5] === 0xffff) return v4(embedded(w[6]!, w[7]!), 'IPv4-mapped form');
  if (zeroUpTo(6)) return v4(embedded(w[6]!, w[7]!), 'IPv4-compatible form'); // ::a.b.c.d (deprecated)
  if (w[0] === 0x64 && w[1] === 0xff9b && w.slice(2, 6).every((x) => x === 0)) return v4(embedded(w[6]!, w[7]!), 'NAT64 form');
  if (w[0] === 0x2002) return v4(embedded(w[1]!, w[2]!), '6to4 form');
  const first = w[0]!;
  if ((first & 0xfe00) === 0xfc00) return 'unique local (fc00::/7)';
  if ((first & 0xffc0) === 0xfe80) return 'link-local (fe80::/10)';
  if ((first & 0xffc0) === 0xfec0) return 'site-local (fec0::/10, deprecated)';
  if ((first & 0xff00) === 0xff00) return 'multicast (ff00::/8)';
  return null;
}

function v4Octets(address: string): number[] {
  return address.split('.').map(Number);
}

/** The 8 16-bit words of an IPv6 address (which isIP has accepted), a trailing dotted quad and a zone index allowed. */
function v6Words(address: string): number[] {
  let text = address.split('%')[0]!;
  const quad = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (quad) {
    const o = v4Octets(quad[1]!);
    text = `${text.slice(0, -quad[1]!.length)}${((o[0]! << 8) | o[1]!).toString(16)}:${((o[2]! << 8) | o[3]!).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? (text.split('::') as [string, string]) : [text, null];
  const parse = (s: string): number[] => (s ? s.split(':').map((h) => parseInt(h, 16)) : []);
  const hi = parse(head);
  if (tail === null) return hi;
  const lo = parse(tail);
  return [...hi, ...new Array<number>(8 - hi.length - lo.length).fill(0), ...lo];
}

/** A URL's host without IPv6 brackets or trailing dots, lower case. */
/** A task's `x-webhook-id`: a UUID-shaped digest of its id, so every delivery of one task (by any coordinator) carries the same. */
export function webhookId(taskId: string): string {
  const h = createHash('sha256').update(`webhook\n${taskId}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function bareHost(url: URL): string {
  let host = url.hostname.toLowerCase();
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return host.replace(/\.+$/, '');
}

function refuse(url: string, why: string, at?: string): AppError {
  return new AppError(
    'WEBHOOK_URL_REFUSED',
    `${at ? `${at}: ` : ''}webhook ${JSON.stringify(url.slice(0, 200))} is refused: ${why}. Use an https URL on a public address, or start the coordinator with --webhook-allow-host for this host.`,
    { ...(at ? { path: at } : {}), reason: why },
  );
}

export class Webhooks {
  readonly #opts: WebhookOptions;
  readonly #allowed: ReadonlySet<string>;
  readonly #journal: Journal;
  readonly #pending = new Set<Promise<void>>();
  /** Tasks whose webhook this coordinator is delivering now (the sweep leaves them alone). */
  readonly #delivering = new Set<string>();
  readonly #tracing: Tracing | null;
  delivered = 0;
  failed = 0;

  constructor(journal: Journal, opts: Partial<WebhookOptions> = {}, tracing: Tracing | null = null) {
    this.#journal = journal;
    this.#tracing = tracing;
    this.#opts = { ...DEFAULT_WEBHOOK_OPTIONS, secret: randomBytes(32).toString('hex'), ...opts };
    this.#allowed = new Set(this.#opts.allowHosts.map((h) => h.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.+$/, '')));
  }

  /**
   * The submit-time check: a well-formed http(s) URL, https unless its host is allowed, and not an IP
   * literal or `localhost` name in a refused range unless allowed. Throws WEBHOOK_URL_REFUSED (400); `at`
   * is the JSON path of the field. Names are resolved and checked again at every delivery.
   */
  check(raw: string, at?: string): URL {
    return this.#checkUrl(raw, at, true);
  }

  /** `names`: refuse `localhost` names without resolving them (at submit; a delivery resolves every name). */
  #checkUrl(raw: string, at: string | undefined, names: boolean): URL {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw refuse(raw, 'it is not a URL', at);
    }
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw refuse(raw, `scheme ${url.protocol} is not http or https`, at);
    const host = bareHost(url);
    if (this.#allowed.has(host)) return url;
    if (url.protocol !== 'https:') throw refuse(raw, 'plain http is allowed only for hosts given with --webhook-allow-host', at);
    if (isIP(host)) {
      const why = refusedAddress(host);
      if (why) throw refuse(raw, `${host} is ${why}`, at);
    } else if (names && (host === 'localhost' || host.endsWith('.localhost'))) {
      throw refuse(raw, `${host} is a loopback name`, at);
    }
    return url;
  }

  /** How long one delivery may take: every attempt timing out, and every backoff between them. */
  get #window(): number {
    const o = this.#opts;
    return o.attempts * o.timeoutMs + o.baseDelayMs * (2 ** Math.max(0, o.attempts - 1) - 1);
  }

  /**
   * Delivers `record` (an ended task) to `url`, and then marks the task's webhook done in the journal, delivered
   * or given up. Until then the journal holds it as undelivered: a coordinator that dies meanwhile leaves it to
   * the sweep of the others (or of its own restart), so a delivery is made at least once; receivers tell
   * repeats by `x-webhook-id`, the same for every delivery of one task.
   */
  send(url: string, record: StoredTask): void {
    if (this.#delivering.has(record.id)) return;
    this.#delivering.add(record.id);
    const p = this.#deliver(url, record)
      .then(() => {
        try {
          this.#journal.webhookDone(record.id);
        } catch {
          // journal closed or out of reach: the sweep delivers it again later (receivers dedupe by x-webhook-id)
        }
      })
      .finally(() => {
        this.#delivering.delete(record.id);
        this.#pending.delete(p);
      });
    this.#pending.add(p);
  }

  /** Webhooks delivered by the sweep: their coordinator ended the task but did not deliver them. */
  swept = 0;

  /**
   * Delivers the webhooks of tasks that ended more than `graceMs` ago and were never marked delivered (their
   * coordinator stopped first), claiming each in the journal for one delivery window so that no two sweeping
   * coordinators deliver it at once. At most `limit` a call; the scheduler calls it every second.
   */
  sweep(limit = 100): void {
    const grace = this.#opts.graceMs ?? this.#window + 5_000;
    for (const id of this.#journal.claimWebhooks(grace, this.#window + 5_000, limit)) {
      if (this.#delivering.has(id)) continue;
      const record = this.#journal.getTask(id as TaskId);
      if (!record?.webhook) continue;
      this.swept++;
      this.send(record.webhook, record);
    }
  }

  async #deliver(raw: string, record: StoredTask): Promise<void> {
    const body = JSON.stringify(record);
    const id = webhookId(record.id);
    const parent = record.trace ? traceparentOf(record.trace) : null;
    const span = this.#tracing && parent ? this.#tracing.webhook(parent, raw, record.id) : null;
    const traceparent = span ? span.traceparent : parent;
    let last = '';
    let code: string | null = null;
    let attempt = 1;
    for (; attempt <= this.#opts.attempts; attempt++) {
      try {
        const status = await this.#post(raw, body, id, record, traceparent);
        if (status >= 200 && status < 300) {
          this.delivered++;
          if (span) this.#tracing!.webhookDone(span, attempt, null);
          return;
        }
        last = status >= 300 && status < 400 ? `HTTP ${status} (redirects are not followed)` : `HTTP ${status}`;
      } catch (err) {
        last = err instanceof Error ? err.message : String(err);
        if (err instanceof AppError && err.code === 'WEBHOOK_URL_REFUSED') {
          code = err.code;
          break; // the rules will refuse it again: no retry
        }
      }
      if (attempt < this.#opts.attempts) {
        await new Promise((r) => setTimeout(r, this.#opts.baseDelayMs * 2 ** (attempt - 1)));
      }
    }
    this.failed++;
    if (span) this.#tracing!.webhookDone(span, Math.min(attempt, this.#opts.attempts), last || 'failed');
    try {
      this.#journal.event('webhook_failed', record.id, null, { url: raw, error: last, code, attempts: this.#opts.attempts, webhookId: id });
    } catch {
      // the journal may be closed during shutdown; the failure is counted anyway
    }
  }

  /** One attempt: check, resolve, check every address, POST to the checked address; answers the status. */
  async #post(raw: string, body: string, id: string, record: StoredTask, traceparent: string | null): Promise<number> {
    const url = this.#checkUrl(raw, undefined, false);
    const host = bareHost(url);
    const allowed = this.#allowed.has(host);
    let address = host;
    let family = isIP(host);
    if (!family) {
      const addrs = await lookup(host, { all: true, verbatim: true });
      if (addrs.length === 0) throw new Error(`${host} resolved to no address`);
      if (!allowed) {
        for (const a of addrs) {
          const why = refusedAddress(a.address);
          if (why) throw refuse(raw, `${host} resolves to ${a.address}, which is ${why}`);
        }
      }
      address = addrs[0]!.address;
      family = addrs[0]!.family;
    }
    const pinned = { address, family };
    const pin: LookupFunction = (_host, options, callback) => {
      if (options.all) callback(null, [pinned]);
      else callback(null, pinned.address, pinned.family);
    };
    const t = Math.floor(Date.now() / 1000);
    const headers = {
      'content-type': 'application/json',
      'content-length': String(Buffer.byteLength(body)),
      'user-agent': 'exec-node-coordinator',
      'x-task-id': record.id,
      'x-webhook-id': id,
      'x-webhook-signature': signWebhook(this.#opts.secret, body, t),
      ...(traceparent ? { traceparent } : {}),
    };
    const request = url.protocol === 'https:' ? https.request : http.request;
    return new Promise<number>((resolve, reject) => {
      const req = request(
        {
          protocol: url.protocol,
          host,
          port: url.port || undefined,
          path: `${url.pathname}${url.search}`,
          method: 'POST',
          headers,
          agent: false,
          lookup: pin,
          ...(url.username ? { auth: `${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}` } : {}),
          signal: AbortSignal.timeout(this.#opts.timeoutMs),
        },
        (res) => {
          res.on('error', reject);
          res.on('end', () => resolve(res.statusCode ?? 0));
          res.resume();
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  /** Waits for deliveries in flight (bounded by their own retries and timeouts). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.#pending]);
  }
}
