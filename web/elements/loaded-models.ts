import { LitElement, css, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { ModelCapability } from '../../shared';
import type { LoadInfo } from '../inference-controller';
import { bytes, rate } from './format';
import { panel, table } from './styles';

/** Models loaded for generation now: the backend and device the node chose, their speed, and the memory they take against the budget. */
@customElement('loaded-models')
export class LoadedModels extends LitElement {
  static override styles = [
    panel,
    table,
    css`
      table {
        margin-bottom: 10px;
      }
      td:first-child {
        white-space: normal;
        overflow-wrap: anywhere;
      }
      .meter {
        height: 8px;
        background: #e3e7ef;
        border-radius: 4px;
        overflow: hidden;
        margin: 4px 0 2px;
      }
      .meter > span {
        display: block;
        height: 100%;
        background: #3b82f6;
      }
      .meter.high > span {
        background: #d97706;
      }
    `,
  ];

  @property({ attribute: false }) models: ModelCapability[] = [];
  @property({ attribute: false }) loads: ReadonlyMap<string, LoadInfo> = new Map();
  @property({ type: Number }) memoryBytes = 0;
  @property({ type: Number }) budgetBytes = 0;

  override render() {
    const loaded = this.models.filter((m) => m.loaded);
    const share = this.budgetBytes > 0 ? Math.min(1, this.memoryBytes / this.budgetBytes) : 0;
    return html`
      <h2>Loaded models (${loaded.length})</h2>
      ${loaded.length === 0
        ? html`<p class="muted" data-testid="loaded-none">None loaded; a model loads with its first generate task.</p>`
        : html`<table data-testid="loaded-models">
            <tr><th>model</th><th>backend</th><th>device</th><th title="tokens per second of one sequence, measured when the node chose the backend">tok/s</th><th title="time to load">load</th><th title="LoRA adapters loaded on the GPU">adapters</th></tr>
            ${loaded.map((m) => {
              const load = this.loads.get(m.name);
              return html`<tr data-model=${m.name}>
                <td>${m.name}</td>
                <td data-testid="backend">${m.backend}</td>
                <td data-testid="device">${m.device}</td>
                <td>${m.tokensPerSec !== undefined ? rate(m.tokensPerSec) : '—'}</td>
                <td>${load ? duration(load.ms) : '—'}</td>
                <td data-testid="adapters">${m.adapters?.length ? m.adapters.join(', ') : '—'}</td>
              </tr>`;
            })}
          </table>`}
      <dl>
        <dt>GPU memory</dt>
        <dd data-testid="gpu-memory">${bytes(this.memoryBytes)} of ${this.budgetBytes > 0 ? bytes(this.budgetBytes) : '—'} (${(share * 100).toFixed(share < 0.01 && share > 0 ? 2 : 0)} %)</dd>
      </dl>
      <div class="meter ${share > 0.85 ? 'high' : ''}" role="meter" aria-label="GPU memory used" aria-valuemin="0" aria-valuemax=${this.budgetBytes} aria-valuenow=${this.memoryBytes}>
        <span style="width:${(share * 100).toFixed(2)}%"></span>
      </div>
    `;
  }
}

function duration(ms: number): string {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

declare global {
  interface HTMLElementTagNameMap {
    'loaded-models': LoadedModels;
  }
}
