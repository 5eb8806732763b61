/** Where the coordinator is: the page's own origin unless `?coordinator=` says otherwise. */
import { AppError } from '../../shared';

export interface CoordinatorUrls {
  /** `http(s)://host:port`, no trailing slash. */
  httpBase: string;
  /** `ws(s)://host:port/v1/nodes/ws`. */
  wsUrl: string;
}

export const NODE_SOCKET_PATH = '/v1/nodes/ws';

/**
 * `override` may be `http(s)://…`, `ws(s)://…` or a bare `host:port`; any path is ignored.
 * Without it the coordinator is the origin of `pageUrl`.
 */
export function coordinatorUrls(pageUrl: string, override?: string | null): CoordinatorUrls {
  let raw = override?.trim() || pageUrl;
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(raw)) raw = `http://${raw}`;
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new AppError('SCHEMA_VIOLATION', `The coordinator address ${JSON.stringify(raw)} is not a URL; pass ?coordinator=http://host:port.`);
  }
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) {
    throw new AppError('SCHEMA_VIOLATION', `The coordinator address must be http(s) or ws(s); got ${u.protocol}.`);
  }
  return {
    httpBase: `${secure ? 'https' : 'http'}://${u.host}`,
    wsUrl: `${secure ? 'wss' : 'ws'}://${u.host}${NODE_SOCKET_PATH}`,
  };
}
