import { LitElement, css, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { DownloadProgress } from '../inference-controller';
import { bytes } from './format';
import { panel } from './styles';

/** One progress bar per model whose weights are coming from the coordinator into the weight store. */
@customElement('model-downloads')
export class ModelDownloads extends LitElement {
  static override styles = [
    panel,
    css`
      .row {
        margin-bottom: 8px;
      }
      .label {
        display: flex;
        justify-content: space-between;
        gap: 8px;
        font-variant-numeric: tabular-nums;
      }
      progress {
        width: 100%;
        height: 8px;
        appearance: none;
        border: none;
        border-radius: 4px;
        overflow: hidden;
        background: #e3e7ef;
      }
      progress::-webkit-progress-bar {
        background: #e3e7ef;
      }
      progress::-webkit-progress-value {
        background: #3b82f6;
      }
      .done progress::-webkit-progress-value {
        background: #15803d;
      }
    `,
  ];

  @property({ attribute: false }) downloads: DownloadProgress[] = [];

  override render() {
    return html`
      <h2>Downloads</h2>
      ${this.downloads.length === 0 ? html`<p class="muted">None in progress.</p>` : null}
      ${this.downloads.map((d) => {
        const share = d.totalBytes > 0 ? Math.min(1, d.loadedBytes / d.totalBytes) : 0;
        return html`<div class="row ${d.done ? 'done' : ''}" data-testid="download" data-model=${d.model}>
          <div class="label">
            <span>${d.model}</span>
            <span class="muted">${d.done ? 'stored' : `${bytes(d.loadedBytes)} of ${d.totalBytes > 0 ? bytes(d.totalBytes) : '?'} · ${(share * 100).toFixed(0)} %`}</span>
          </div>
          <progress max=${d.totalBytes > 0 ? d.totalBytes : 1} .value=${d.totalBytes > 0 ? d.loadedBytes : 0} aria-label="${d.model} download"></progress>
        </div>`;
      })}
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'model-downloads': ModelDownloads;
  }
}
