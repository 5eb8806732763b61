import { LitElement, css, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { PoolNode } from '../../shared';
import { ago } from '../elements/format';
import { panel, table } from '../elements/styles';

/** Every connected node: its state, load, circuit and reputation; a drain button when the token may drain. */
@customElement('ops-nodes')
export class OpsNodes extends LitElement {
  static override styles = [
    panel,
    table,
    css`
      .state-healthy {
        color: #15803d;
      }
      .state-draining,
      .state-unhealthy {
        color: #b45309;
      }
      .state-circuit-open,
      .state-excluded {
        color: #b91c1c;
      }
      meter {
        width: 64px;
        vertical-align: middle;
      }
      button {
        font: inherit;
        font-size: 12px;
      }
    `,
  ];

  @property({ attribute: false }) nodes: readonly PoolNode[] = [];
  /** Show the drain buttons (the token may drain). */
  @property({ type: Boolean }) canDrain = false;
  @property({ type: Number }) now = Date.now();

  override render() {
    return html`
      <h2>Nodes (${this.nodes.length})</h2>
      ${this.nodes.length === 0
        ? html`<p class="muted" data-testid="no-nodes">No node is connected.</p>`
        : html`<table>
            <thead>
              <tr>
                <th>Name</th>
                <th>State</th>
                <th>Load</th>
                <th>Circuit</th>
                <th>Reputation</th>
                <th>Done / failed</th>
                <th>Seen</th>
                ${this.canDrain ? html`<th></th>` : null}
              </tr>
            </thead>
            <tbody>
              ${this.nodes.map(
                (n) => html`<tr data-testid="node-row" data-node-id=${n.id}>
                  <td title=${n.id}>${n.name}</td>
                  <td class="state-${n.state}" data-testid="node-state">${n.state}</td>
                  <td data-testid="node-load" title="${n.held} leases held, ${n.maxConcurrent} run at once">
                    <meter min="0" max="1" .value=${Math.min(1, n.load)}></meter> ${n.held}/${n.maxConcurrent}
                  </td>
                  <td data-testid="node-circuit">${n.circuit.state}${n.circuit.opens ? ` (opened ${n.circuit.opens}×)` : ''}</td>
                  <td data-testid="node-reputation">${n.reputation.score.toFixed(2)}${n.reputation.excluded ? ' excluded' : ''}</td>
                  <td>${n.tasksDone} / ${n.tasksFailed}</td>
                  <td>${ago(n.lastSeen, this.now)}</td>
                  ${this.canDrain
                    ? html`<td>
                        <button data-testid="drain" ?disabled=${n.draining} @click=${() => this.#drain(n)}>${n.draining ? 'Draining' : 'Drain'}</button>
                      </td>`
                    : null}
                </tr>`,
              )}
            </tbody>
          </table>`}
    `;
  }

  #drain(n: PoolNode): void {
    this.dispatchEvent(new CustomEvent<string>('drain', { detail: n.id, bubbles: true, composed: true }));
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'ops-nodes': OpsNodes;
  }
}
