import { LitElement, css, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { CachedModelInfo } from '../../worker/inference';
import { ago, bytes } from './format';
import { panel, table } from './styles';

type DigestState = 'verified' | 'complete' | 'partial';

const STATE_TITLE: Record<DigestState, string> = {
  verified: 'every file stored and matching its SHA-256',
  complete: 'every file stored, digests not checked yet',
  partial: 'some chunks still to fetch',
};

/** The weight store's models (IndexedDB): size, digest state and last use. */
@customElement('cached-models')
export class CachedModels extends LitElement {
  static override styles = [
    panel,
    table,
    css`
      .state {
        font-size: 12px;
        border-radius: 3px;
        padding: 0 5px;
      }
      .verified {
        background: #dcfce7;
        color: #15803d;
      }
      .complete {
        background: #e0e7ff;
        color: #3730a3;
      }
      .partial {
        background: #fef3c7;
        color: #a16207;
      }
    `,
  ];

  @property({ attribute: false }) models: CachedModelInfo[] = [];
  /** Rows shown. */
  @property({ type: Number }) rows = 20;

  override render() {
    const now = Date.now();
    const total = this.models.reduce((s, m) => s + m.bytes, 0);
    return html`
      <h2>Cached models (${this.models.length})</h2>
      ${this.models.length === 0
        ? html`<p class="muted" data-testid="cached-none">No weights stored yet; they are fetched with the first task for a model.</p>`
        : html`<table data-testid="cached-models">
              <tr><th>model</th><th>size</th><th>digest</th><th>last used</th></tr>
              ${[...this.models]
                .sort((a, b) => b.lastUsed - a.lastUsed)
                .slice(0, this.rows)
                .map((m) => {
                  const state = digestState(m);
                  return html`<tr data-model=${m.name}>
                    <td>${m.name}</td>
                    <td title=${m.totalBytes !== null ? `${m.bytes} of ${m.totalBytes} bytes` : `${m.bytes} bytes`}>
                      ${m.complete || m.totalBytes === null ? bytes(m.bytes) : `${bytes(m.bytes)} of ${bytes(m.totalBytes)}`}
                    </td>
                    <td><span class="state ${state}" data-testid="digest-state" title=${STATE_TITLE[state]}>${state}</span></td>
                    <td title=${m.lastUsed ? new Date(m.lastUsed).toLocaleString() : ''}>${ago(m.lastUsed, now)}</td>
                  </tr>`;
                })}
            </table>
            <p class="muted">${bytes(total)} in IndexedDB</p>`}
    `;
  }
}

function digestState(m: CachedModelInfo): DigestState {
  if (m.verified) return 'verified';
  return m.complete ? 'complete' : 'partial';
}

declare global {
  interface HTMLElementTagNameMap {
    'cached-models': CachedModels;
  }
}
