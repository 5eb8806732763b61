import { LitElement, css, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { GpuProbe } from '../node';
import { panel } from './styles';

const SHOWN_LIMITS: [string, string][] = [
  ['maxBufferSize', 'Buffer'],
  ['maxStorageBufferBindingSize', 'Storage binding'],
  ['maxComputeWorkgroupStorageSize', 'Workgroup storage'],
  ['maxComputeInvocationsPerWorkgroup', 'Invocations / workgroup'],
];

/** The WebGPU adapter the node found, or why there is none. */
@customElement('gpu-adapter')
export class GpuAdapter extends LitElement {
  static override styles = [
    panel,
    css`
      .features {
        display: flex;
        flex-wrap: wrap;
        gap: 3px;
        margin-top: 8px;
      }
      .feature {
        font-size: 11px;
        background: #eef1f6;
        border-radius: 3px;
        padding: 0 4px;
      }
      .fallback {
        color: #a16207;
      }
    `,
  ];

  @property({ attribute: false }) probe: GpuProbe | null = null;

  override render() {
    const p = this.probe;
    if (!p) return html`<h2>WebGPU</h2><p class="muted">Probing…</p>`;
    if (!p.info) return html`<h2>WebGPU</h2><p data-testid="gpu-none">No adapter. ${p.reason}</p>`;
    const i = p.info;
    return html`
      <h2>WebGPU</h2>
      <dl data-testid="gpu-info">
        <dt>Adapter</dt>
        <dd>${[i.vendor, i.architecture, i.description].filter(Boolean).join(' · ') || 'unnamed'}</dd>
        <dt>Kind</dt>
        <dd class=${i.isFallbackAdapter ? 'fallback' : ''}>${i.isFallbackAdapter ? 'fallback (software, CPU)' : 'hardware'}</dd>
        ${SHOWN_LIMITS.filter(([k]) => k in p.limits).map(([k, label]) => html`<dt title=${k}>${label}</dt><dd>${fmt(p.limits[k]!)}</dd>`)}
      </dl>
      <div class="features" title="Adapter features">
        ${i.features.map((f) => html`<span class="feature">${f}</span>`)}
      </div>
    `;
  }
}

function fmt(n: number): string {
  if (n >= 2 ** 30) return `${(n / 2 ** 30).toFixed(1)} GiB`;
  if (n >= 2 ** 20) return `${(n / 2 ** 20).toFixed(0)} MiB`;
  if (n >= 2 ** 10 && n % 1024 === 0) return `${n / 1024} KiB`;
  return String(n);
}

declare global {
  interface HTMLElementTagNameMap {
    'gpu-adapter': GpuAdapter;
  }
}
