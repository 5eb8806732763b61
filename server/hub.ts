/**
 * The WebSocket hub at `/v1/nodes/ws`: the node protocol's state machine. A
 * node says `hello` first and gets `welcome` with its NodeId (the old one when
 * it reconnects); then heartbeats, progress and result batches. A bad message
 * gets an `error` reply and the socket stays open, unless the node keeps
 * sending bad ones.
 */
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
import type { Clock, Journal } from './journal';
import { NodeSession, type CircuitOptions } from './node';
import type { Scheduler } from './scheduler';
import { parseNodeMessage } from './validate';

export interface HubOptions {
  clock: Clock;
  heartbeatIntervalMs: number;
  leaseMs: number;
  circuit: CircuitOptions;
  /** Bad messages a connection may send before it is closed. */
  maxProtocolErrors: number;
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

  /** Takes a new socket through the protocol. */
  attach(socket: WebSocket): void {
    if (!this.#accepting) {
      this.#sendError(socket, new AppError('SHUTTING_DOWN', 'The coordinator is shutting down; connect to another one.'));
      socket.close(1013, 'shutting down');
      return;
    }
    this.#sockets.add(socket);
    let node: NodeSession | null = null;
    let errors = 0;

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
        try {
          node = this.#hello(socket, msg);
        } catch (err) {
          const info = err instanceof AppError ? err : null;
          this.#sendError(socket, new AppError('PROTOCOL_ERROR', `Bad hello: ${info?.message ?? String(err)}`, { cause: info?.code ?? 'INTERNAL' }));
          socket.close(1008, 'bad hello');
        }
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
      case 'task.result':
        this.#scheduler.results(node, msg.results);
        return;
      default:
        assertNever(msg, 'node message');
    }
  }

  #hello(socket: WebSocket, msg: HelloMessage): NodeSession {
    const now = this.#opts.clock.now();
    let id: NodeId | null = null;
    if (msg.nodeId !== undefined) id = parseNodeId(msg.nodeId);
    let node = id ? this.#scheduler.nodes.get(id) : undefined;
    if (node) {
      const old = node.socket;
      node.socket = socket;
      if (old && old !== socket) old.close(4000, 'replaced by a new connection');
      node.name = msg.name;
      node.capabilities = msg.capabilities;
      node.lastSeen = now;
      node.disconnectedAt = null;
      node.draining = false;
      // The node keeps its leases; they live leaseMs past this hello unless a heartbeat renews them.
      for (const l of node.leases.values()) l.expiresAt = Math.max(l.expiresAt, now + this.#opts.leaseMs);
      this.#journal.event('node_reconnected', null, node.id, { name: msg.name, leases: node.leases.size });
    } else {
      node = new NodeSession(id ?? newNodeId(), msg.name, msg.capabilities, socket, this.#opts.clock, this.#opts.circuit);
      this.#scheduler.nodes.set(node.id, node);
      this.#journal.event('node_connected', null, node.id, { name: msg.name, kinds: msg.capabilities.kinds });
    }
    node.send({
      type: 'welcome',
      nodeId: node.id,
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

function rawText(data: RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}
