import { LitElement, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { NodeStats } from '../node';
import { panel } from './styles';

/** Node id, connection state and coordinator. */
@customElement('node-connection')
export class NodeConnection extends LitElement {
  static override styles = [panel];

  @property({ attribute: false }) stats: NodeStats | null = null;

  override render() {
    const s = this.stats;
    if (!s) return html`<h2>Connection</h2><p class="muted">Starting…</p>`;
    return html`
      <h2>Connection</h2>
      <dl>
        <dt>State</dt>
        <dd data-testid="node-state" data-state=${s.state}>${s.state}</dd>
        <dt>Node id</dt>
        <dd data-testid="node-id">${s.nodeId ?? '—'}</dd>
        <dt>Coordinator</dt>
        <dd>${s.coordinator}</dd>
        <dt>Connections</dt>
        <dd>${s.connects}</dd>
        ${s.lastError
          ? html`<dt>Last error</dt>
              <dd title=${s.lastError.message}>${s.lastError.code}: ${s.lastError.message}</dd>`
          : null}
      </dl>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'node-connection': NodeConnection;
  }
}
