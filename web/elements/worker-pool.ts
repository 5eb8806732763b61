import { LitElement, css, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { AgentRuntimeStats } from '../../worker';
import { panel } from './styles';

/** The agent worker pool: one square per worker, busy or idle. */
@customElement('worker-pool')
export class WorkerPool extends LitElement {
  static override styles = [
    panel,
    css`
      .cells {
        display: flex;
        flex-wrap: wrap;
        gap: 4px;
        margin: 6px 0;
      }
      .cell {
        width: 18px;
        height: 18px;
        border-radius: 3px;
        background: #d8dee9;
      }
      .busy {
        background: #3b82f6;
      }
    `,
  ];

  @property({ attribute: false }) pool: AgentRuntimeStats | null = null;

  override render() {
    const p = this.pool;
    if (!p) return html`<h2>Workers</h2><p class="muted">Starting…</p>`;
    const busy = p.running;
    const starting = Math.max(0, p.workers - p.idle - p.running);
    return html`
      <h2>Workers</h2>
      <div class="cells" data-testid="pool-cells">
        ${Array.from({ length: p.workers }, (_, i) => html`<span class="cell ${i < busy ? 'busy' : ''}"></span>`)}
      </div>
      <dl>
        <dt>Size</dt>
        <dd data-testid="pool-size">${p.workers}</dd>
        <dt>Busy / idle</dt>
        <dd>${busy} / ${p.idle}${starting ? ` (${starting} starting)` : ''}</dd>
        <dt>Queued</dt>
        <dd>${p.queued}</dd>
        <dt>Compiled modules</dt>
        <dd>${p.compiledModules}</dd>
        <dt>Spawn p50 / p99</dt>
        <dd>${ms(p.spawnP50Ms)} / ${ms(p.spawnP99Ms)}</dd>
      </dl>
    `;
  }
}

function ms(v: number): string {
  return Number.isFinite(v) ? `${v.toFixed(2)} ms` : '—';
}

declare global {
  interface HTMLElementTagNameMap {
    'worker-pool': WorkerPool;
  }
}
