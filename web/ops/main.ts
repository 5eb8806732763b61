/**
 * The operator page's entry (ops.html): the pool's nodes, queue, history and errors from GET /v1/pool,
 * polled every 2 s. Query parameter: `token` (a bearer token; taken out of the address bar once read).
 */
import './ops-app';

document.body.append(document.createElement('ops-app'));
