import { LitElement, css, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { RateSample } from '../node-controller';
import type { NodeStats } from '../node';
import { panel } from './styles';

/** Task counters and the finish rate over the last two minutes, drawn. */
@customElement('node-counters')
export class NodeCounters extends LitElement {
  static override styles = [
    panel,
    css`
      svg {
        width: 100%;
        height: 60px;
        background: #f4f6fa;
        border-radius: 4px;
      }
      polyline {
        fill: none;
        stroke: #3b82f6;
        stroke-width: 1.5;
      }
    `,
  ];

  @property({ attribute: false }) stats: NodeStats | null = null;
  @property({ attribute: false }) rate: RateSample[] = [];

  override render() {
    const s = this.stats;
    if (!s) return html`<h2>Tasks</h2>`;
    const last = this.rate.at(-1)?.perSec ?? 0;
    const codes = Object.entries(s.byCode).sort((a, b) => b[1] - a[1]);
    return html`
      <h2>Tasks</h2>
      <dl>
        <dt>Held</dt>
        <dd data-testid="tasks-held">${s.held} (${s.running} running, ${s.queued} waiting for a worker)</dd>
        <dt>Takes</dt>
        <dd data-testid="node-capacity" title="Advertised to the coordinator: maxConcurrent (workers) and queueDepth">
          ${s.capacity.maxConcurrent} at once (workers) + ${s.capacity.queueDepth} queued
        </dd>
        <dt>Done</dt>
        <dd data-testid="tasks-done">${s.tasksDone}</dd>
        <dt>Failed</dt>
        <dd data-testid="tasks-failed">${s.tasksFailed}</dd>
        <dt>Rate</dt>
        <dd>${last.toFixed(0)} /s</dd>
        <dt>Result messages</dt>
        <dd>${s.resultBatches} (${s.resultsSent} results)</dd>
        <dt>Outcomes</dt>
        <dd>${codes.map(([c, n]) => `${c} ${n}`).join(' · ') || '—'}</dd>
      </dl>
      ${this.#chart()}
    `;
  }

  #chart() {
    const r = this.rate;
    if (r.length < 2) return null;
    const max = Math.max(1, ...r.map((x) => x.perSec));
    const w = 240;
    const h = 60;
    const pts = r.map((x, i) => `${((i / (r.length - 1)) * w).toFixed(1)},${(h - (x.perSec / max) * (h - 4) - 2).toFixed(1)}`);
    return html`<svg viewBox="0 0 ${w} ${h}" preserveAspectRatio="none" role="img" aria-label="tasks per second">
      <polyline points=${pts.join(' ')}></polyline>
    </svg>`;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'node-counters': NodeCounters;
  }
}
