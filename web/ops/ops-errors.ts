import { LitElement, css, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { PoolError } from '../../shared';
import { ago } from '../elements/format';
import { panel, table } from '../elements/styles';

/** Attempt errors by code since the coordinator started, and the last ones with their task, node and message. */
@customElement('ops-errors')
export class OpsErrors extends LitElement {
  static override styles = [
    panel,
    table,
    css`
      .codes {
        display: flex;
        flex-wrap: wrap;
        gap: 6px;
        margin: 0 0 8px;
        padding: 0;
        list-style: none;
      }
      .codes li {
        background: #fdecec;
        color: #991b1b;
        border-radius: 4px;
        padding: 1px 6px;
        font-variant-numeric: tabular-nums;
      }
      td.message {
        white-space: normal;
        overflow-wrap: anywhere;
      }
      code {
        font-size: 12px;
      }
    `,
  ];

  @property({ attribute: false }) errors: readonly PoolError[] = [];
  @property({ attribute: false }) byCode: Readonly<Record<string, number>> = {};
  @property({ type: Number }) now = Date.now();

  override render() {
    const codes = Object.entries(this.byCode).sort((a, b) => b[1] - a[1]);
    return html`
      <h2>Errors</h2>
      ${codes.length === 0
        ? html`<p class="muted" data-testid="no-errors">No attempt has ended in an error.</p>`
        : html`<ul class="codes">
            ${codes.map(([code, n]) => html`<li data-testid="error-code" data-code=${code}>${code} × ${n}</li>`)}
          </ul>`}
      ${this.errors.length
        ? html`<table>
            <thead>
              <tr><th>When</th><th>Code</th><th>Task</th><th>Node</th><th>Message</th></tr>
            </thead>
            <tbody>
              ${this.errors.map(
                (e) => html`<tr data-testid="error-row" data-code=${e.code}>
                  <td>${ago(e.at, this.now)}</td>
                  <td><code>${e.code}</code></td>
                  <td><code title=${e.taskId}>${e.taskId.slice(0, 8)}</code></td>
                  <td><code title=${e.nodeId ?? ''}>${e.nodeId ? e.nodeId.slice(0, 8) : '—'}</code></td>
                  <td class="message">${e.message}</td>
                </tr>`,
              )}
            </tbody>
          </table>`
        : null}
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'ops-errors': OpsErrors;
  }
}
