import { LitElement, css, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { PoolView } from '../../shared';
import { panel, table } from '../elements/styles';

const STATES = ['queued', 'leased', 'succeeded', 'failed', 'dead', 'cancelled'];

/** The journal's tasks by state, and the queued ones by priority. */
@customElement('ops-queue')
export class OpsQueue extends LitElement {
  static override styles = [
    panel,
    table,
    css`
      h2.sub {
        margin-top: 12px;
      }
    `,
  ];

  @property({ attribute: false }) queue: PoolView['queue'] | null = null;

  override render() {
    const q = this.queue;
    return html`
      <h2>Queue</h2>
      <dl>
        ${STATES.map((s) => html`<dt>${s}</dt><dd data-testid="state-${s}">${q ? (q.byState[s] ?? 0).toLocaleString('en-US') : '—'}</dd>`)}
      </dl>
      <h2 class="sub">Queued by priority</h2>
      ${q && q.queuedByPriority.length
        ? html`<table>
            <thead>
              <tr><th>Priority</th><th>Tasks</th></tr>
            </thead>
            <tbody>
              ${q.queuedByPriority.map((p) => html`<tr data-testid="priority-row" data-priority=${p.priority}><td>${p.priority}</td><td data-testid="priority-count">${p.count}</td></tr>`)}
            </tbody>
          </table>`
        : html`<p class="muted">Nothing queued.</p>`}
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'ops-queue': OpsQueue;
  }
}
