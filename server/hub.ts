/**
 * The WebSocket hub at `/v1/nodes/ws`: the node protocol's state machine. A
 * node says `hello` first and gets `welcome` with its NodeId and a resume secret
 * (the old id when it reconnects with that secret); then heartbeats, progress and
 * result batches. A bad message gets an `error` reply and the socket stays open,
 * unless the node keeps sending bad ones.
 *
 * Trust: a browser's `Origin` must be the coordinator's own or an allowed one;
 * with --auth the hello (or the upgrade's `authorization` header) must carry a
 * token with the `node` role; a node reports only on the leases it holds.
 */
import { isIP } from 'node:net';
import type { RawData, WebSocket } from 'ws';
import {
  AppError,
  assertNever,
  newNodeId,
  parseNodeId,
  serializeError,
  type HelloMessage,
  type NodeId,
  type NodeMessage,
} from '../shared';
import { Auth, type Principal } from './auth';
import type { Clock, Journal } from './journal';
import { NodeSession, type CircuitOptions, type NodeLimits } from './node';
import type { Scheduler } from './scheduler';
import { parseNodeMessage } from './validate';

export interface HubOptions {
  clock: Clock;
  heartbeatIntervalMs: number;
  leaseMs: number;
  circuit: CircuitOptions;
  /** Bad messages a connection may send before it is closed. */
  maxProtocolErrors: number;
  /** Bounds on the leases one node may hold, whatever it advertises. */
  limits: NodeLimits;
  /** Origins (scheme://host[:port]) whose pages may join besides the coordinator's own (`--allow-origin`). */
  allowOrigins: readonly string[];
}

/** What the hub reads from the upgrade request. */
export interface Upgrade {
  origin?: string | undefined;
  host?: string | undefined;
  authorization?: string | readonly string[] | undefined;
}

/**
 * Whether a page of `origin` may join: one of `allowed` (normalized origins), or the
 * coordinator's own, i.e. the origin of the `host` the request was sent to, when that host is
 * an IP address or localhost (a DNS name there could be a rebinding attacker's: name it
 * with --allow-origin). No Origin header: not a browser page; such clients need a token
 * when auth is on, like every node.
 */
export function originAllowed(origin: string | undefined, host: string | undefined, allowed: readonly string[]): boolean {
  if (origin === undefined) return true;
  let url: URL;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return false;
  if (allowed.includes(url.origin)) return true;
  if (host === undefined || url.host !== host.toLowerCase()) return false;
  const name = url.hostname.replace(/^\[|\]$/g, '');
  return isIP(name) !== 0 || name === 'localhost' || name.endsWith('.localhost');
}

/** `scheme://host[:port]` of an --allow-origin value, or a coded error saying what is wrong with it. */
export function normalizeOrigin(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new AppError('INVALID_ARGUMENT', `--allow-origin ${value}: not a URL; give scheme://host[:port], e.g. https://nodes.example.com.`);
  }
  if ((url.protocol !== 'http:' && url.protocol !== 'https:') || url.pathname !== '/' || url.search || url.hash || url.username) {
    throw new AppError('INVALID_ARGUMENT', `--allow-origin ${value}: give only scheme://host[:port] (http or https), no path.`);
  }
  return url.origin;
}

export class Hub {
  readonly #scheduler: Scheduler;
  readonly #journal: Journal;
  readonly #opts: HubOptions;
  readonly #sockets = new Set<WebSocket>();
  #accepting = true;

  constructor(scheduler: Scheduler, journal: Journal, opts: HubOptions) {
    this.#scheduler = scheduler;
    this.#journal = journal;
    this.#opts = opts;
  }

  get nodes(): ReadonlyMap<NodeId, NodeSession> {
    return this.#scheduler.nodes;
  }

  /** Connected nodes. */
  connected(): NodeSession[] {
    return [...this.#scheduler.nodes.values()].filter((n) => n.connected);
  }

  /** Takes a new socket through the protocol; `upgrade` is what its HTTP request said, `auth` checks its join token. */
  attach(socket: WebSocket, upgrade: Upgrade = {}, auth: Auth = Auth.open()): void {
    if (!this.#accepting) {
      this.#sendError(socket, new AppError('SHUTTING_DOWN', 'The coordinator is shutting down; connect to another one.'));
      socket.close(1013, 'shutting down');
      return;
    }
    if (!originAllowed(upgrade.origin, upgrade.host, this.#opts.allowOrigins)) {
      this.#sendError(
        socket,
        new AppError('ORIGIN_NOT_ALLOWED', `Pages of ${String(upgrade.origin).slice(0, 200)} may not join as nodes; serve the page from the coordinator or start it with --allow-origin ${String(upgrade.origin).slice(0, 200)}.`, {
          origin: String(upgrade.origin).slice(0, 200),
        }),
      );
      socket.close(1008, 'origin not allowed');
      return;
    }
    this.#sockets.add(socket);
    let node: NodeSession | null = null;
    let errors = 0;
    const headerToken = Auth.bearer(upgrade.authorization);

    socket.on('message', (data: RawData, isBinary: boolean) => {
      let msg: NodeMessage;
      try {
        if (isBinary) throw new AppError('PROTOCOL_ERROR', 'Node messages are JSON text frames, not binary.');
        msg = parseNodeMessage(rawText(data));
      } catch (err) {
        errors++;
        this.#sendError(socket, err);
        if (node) {
          node.protocolErrors++;
          if (node.circuit.failure(this.#opts.clock.now())) this.#journal.event('circuit_open', null, node.id, { code: 'PROTOCOL_ERROR' });
        }
        if (!node) socket.close(1008, 'hello first');
        else if (errors > this.#opts.maxProtocolErrors) socket.close(1008, 'too many protocol errors');
        return;
      }
      if (!node) {
        if (msg.type !== 'hello') {
          this.#sendError(socket, new AppError('PROTOCOL_ERROR', `The first message must be hello; got ${msg.type}.`));
          socket.close(1008, 'hello first');
          return;
        }
        const principal = joinPrincipal(auth, headerToken, msg.token);
        if (!Auth.has(principal, 'node')) {
          const known = principal !== null;
          this.#sendError(
            socket,
            known
              ? new AppError('FORBIDDEN', 'The join token lacks the node role; ask the operator for a node token.')
              : new AppError('UNAUTHORIZED', 'Joining needs a node token: put it in hello.token (the page takes ?token=) or send authorization: Bearer <token> on the upgrade.'),
          );
          socket.close(1008, known ? 'forbidden' : 'unauthorized');
          return;
        }
        try {
          node = this.#hello(socket, msg, principal!);
        } catch (err) {
          const info = err instanceof AppError ? err : null;
          this.#sendError(socket, new AppError('PROTOCOL_ERROR', `Bad hello: ${info?.message ?? String(err)}`, { cause: info?.code ?? 'INTERNAL' }));
          socket.close(1008, 'bad hello');
        }
        return;
      }
      if (node.socket !== socket) {
        // A newer connection resumed this node; this one is closing and speaks for it no more.
        if (msg.type !== 'heartbeat') this.#sendError(socket, new AppError('LEASE_NOT_HELD', 'This connection was replaced by a newer one for the same node; it holds no leases.'));
        return;
      }
      try {
        this.#handle(node, msg);
      } catch (err) {
        this.#sendError(socket, err);
      }
    });

    socket.on('close', () => {
      this.#sockets.delete(socket);
      if (node && node.socket === socket) this.#scheduler.disconnected(node);
    });
    socket.on('error', () => {
      // 'close' follows; nothing else to do
    });
  }

  #handle(node: NodeSession, msg: NodeMessage): void {
    switch (msg.type) {
      case 'hello':
        throw new AppError('PROTOCOL_ERROR', 'hello was already received on this connection; send it once.');
      case 'heartbeat':
        this.#scheduler.heartbeat(node, msg);
        return;
      case 'task.progress':
        this.#scheduler.progress(node, msg);
        return;
      case 'task.part':
        this.#scheduler.part(node, msg);
        return;
      case 'task.result': {
        const refused = this.#scheduler.results(node, msg.results);
        if (refused.length) {
          throw new AppError('LEASE_NOT_HELD', `${refused.length} of ${msg.results.length} results were on leases this node does not hold; they changed nothing. A node reports only on its own leases.`, {
            refused: refused.slice(0, 20).map((r) => ({ taskId: r.taskId.slice(0, 64), leaseId: r.leaseId.slice(0, 64) })),
            count: refused.length,
          });
        }
        return;
      }
      default:
        assertNever(msg, 'node message');
    }
  }

  #hello(socket: WebSocket, msg: HelloMessage, principal: Principal): NodeSession {
    const now = this.#opts.clock.now();
    let id: NodeId | null = null;
    if (msg.nodeId !== undefined) id = parseNodeId(msg.nodeId);
    let node = id ? this.#scheduler.nodes.get(id) : undefined;
    // An id is resumed only with the secret its welcome carried; anyone else joins as a new node, the real one untouched.
    if (node && !node.secretMatches(msg.secret)) {
      this.#journal.event('node_resume_refused', null, node.id, { name: msg.name, principal: principal.id });
      node = undefined;
    }
    if (node) {
      const old = node.socket;
      node.socket = socket;
      if (old && old !== socket) old.close(4000, 'replaced by a new connection');
      node.name = msg.name;
      node.capabilities = msg.capabilities;
      node.lastSeen = now;
      node.disconnectedAt = null;
      node.draining = false;
      node.principal = principal.id;
      // The node keeps its leases; they live leaseMs past this hello unless a heartbeat renews them.
      for (const l of node.leases.values()) l.expiresAt = Math.max(l.expiresAt, now + this.#opts.leaseMs);
      this.#journal.event('node_reconnected', null, node.id, { name: msg.name, leases: node.leases.size });
    } else {
      // A new id every time: an id the coordinator does not know (it restarted, or forgot the node) is not taken over either.
      // …unless the journal holds this id's secret from before a restart (server/reputation.ts): then it resumes its id and reputation.
      const resumed = id !== null && !this.#scheduler.nodes.has(id) && this.#scheduler.reputation.recognizes(id, msg.secret);
      node = new NodeSession(resumed ? id! : newNodeId(), msg.name, msg.capabilities, socket, this.#opts.clock, this.#opts.circuit, this.#opts.limits);
      this.#scheduler.reputation.attach(node);
      // Its circuit outlives a coordinator: taken up from the journal when it resumes its id, kept there on each change.
      if (resumed) {
        const saved = this.#journal.circuit(node.id);
        if (saved) node.circuit.restore(saved);
      }
      // Written once per turn of the event loop however many leases failed in it.
      const circuit = node.circuit;
      const nodeId = node.id;
      let writing = false;
      circuit.onChange = () => {
        if (writing) return;
        writing = true;
        setImmediate(() => {
          writing = false;
          if (!this.#journal.db.open) return;
          try {
            this.#journal.saveCircuit(nodeId, circuit.saved());
          } catch {
            // the store is out of reach: the circuit still holds here, and is written at its next change
          }
        });
      };
      node.principal = principal.id;
      this.#scheduler.nodes.set(node.id, node);
      this.#journal.event('node_connected', null, node.id, { name: msg.name, kinds: msg.capabilities.kinds, principal: principal.id });
    }
    node.send({
      type: 'welcome',
      nodeId: node.id,
      secret: node.secret(),
      heartbeatIntervalMs: this.#opts.heartbeatIntervalMs,
      leaseMs: this.#opts.leaseMs,
      serverTime: now,
    });
    this.#scheduler.requestDispatch();
    return node;
  }

  #sendError(socket: WebSocket, err: unknown): void {
    if (socket.readyState !== socket.OPEN) return;
    const error = err instanceof AppError ? serializeError(err) : serializeError(new AppError('PROTOCOL_ERROR', String(err)));
    socket.send(JSON.stringify({ type: 'error', error }));
  }

  /** Stops taking connections and tells every node to drain. */
  drainAll(reason: string): void {
    this.#accepting = false;
    for (const node of this.#scheduler.nodes.values()) if (node.connected) this.#scheduler.drain(node, reason);
  }

  /** Closes every socket. */
  closeAll(): void {
    for (const s of this.#sockets) s.close(1001, 'coordinator closing');
  }
}

/** The principal a join presents: the upgrade's bearer token, else hello.token (open mode: admin). */
function joinPrincipal(auth: Auth, headerToken: string | null, helloToken: string | undefined): Principal | null {
  const fromHeader = headerToken !== null ? auth.verify(headerToken) : null;
  if (Auth.has(fromHeader, 'node')) return fromHeader;
  const fromHello = helloToken !== undefined ? auth.verify(helloToken) : null;
  if (Auth.has(fromHello, 'node')) return fromHello;
  if (auth.isOpen) return auth.verify(null);
  return fromHeader ?? fromHello;
}

function rawText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}
