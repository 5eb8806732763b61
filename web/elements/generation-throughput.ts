import { LitElement, css, html, svg } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { InferenceRuntimeStats } from '../../worker/inference';
import type { ThroughputSample } from '../inference-controller';
import { rate } from './format';
import { panel } from './styles';

// The chart's frame, in viewBox units (the SVG scales to the card's width, text with it).
const W = 320;
const H = 140;
const LEFT = 40;
const RIGHT = 8;
const TOP = 8;
const BOTTOM = 30;
const STEP_MS = 30_000;

/** Tokens generated per second over time, all sequences together, drawn; and the batch's sequences. */
@customElement('generation-throughput')
export class GenerationThroughput extends LitElement {
  static override styles = [
    panel,
    css`
      svg {
        display: block;
        width: 100%;
        height: auto;
        margin-top: 8px;
      }
      .plot {
        fill: #f4f6fa;
      }
      .grid {
        stroke: #e3e7ef;
        stroke-width: 1;
      }
      .axis {
        stroke: #8a93a6;
        stroke-width: 1;
      }
      .line {
        fill: none;
        stroke: #3b82f6;
        stroke-width: 1.5;
        stroke-linejoin: round;
      }
      .area {
        fill: #3b82f6;
        fill-opacity: 0.15;
      }
      text {
        font: 10px system-ui, sans-serif;
        fill: #5a6478;
      }
      .title {
        font-size: 10px;
        fill: #1d2330;
      }
    `,
  ];

  @property({ attribute: false }) stats: InferenceRuntimeStats | null = null;
  @property({ attribute: false }) samples: ThroughputSample[] = [];
  /** The most time the x axis spans (it starts at 30 s and grows, in 30 s steps, with the samples). */
  @property({ type: Number }) windowMs = 120_000;

  override render() {
    const s = this.stats;
    const now = this.samples.at(-1)?.tokensPerSec ?? 0;
    return html`
      <h2>Generation</h2>
      <dl>
        <dt>Sequences</dt>
        <dd data-testid="sequences" title="decoding now · waiting for a slot · held at most">
          ${s ? html`${s.active} active · ${s.waiting} waiting · ${s.maxSequences} max` : '—'}
        </dd>
        <dt>Throughput</dt>
        <dd data-testid="tokens-per-sec">${rate(now)} tokens/s</dd>
        <dt>Generated</dt>
        <dd data-testid="tokens-generated">${s ? s.tokensGenerated.toLocaleString('en-US') : '—'} tokens</dd>
      </dl>
      ${this.#chart()}
    `;
  }

  #chart() {
    const r = this.samples;
    const end = r.at(-1)?.t ?? Date.now();
    const held = r.length ? end - r[0]!.t : 0;
    const span = Math.min(this.windowMs, Math.max(STEP_MS, Math.ceil(held / STEP_MS) * STEP_MS));
    const top = niceCeil(Math.max(1, ...r.map((x) => x.tokensPerSec)));
    const pw = W - LEFT - RIGHT;
    const ph = H - TOP - BOTTOM;
    const x = (t: number) => LEFT + pw * (1 - Math.min(1, (end - t) / span));
    const y = (v: number) => TOP + ph * (1 - Math.min(1, v / top));
    const shown = r.filter((p) => end - p.t <= span);
    const line = shown.length >= 2 ? shown.map((p, i) => `${i ? 'L' : 'M'}${x(p.t).toFixed(1)},${y(p.tokensPerSec).toFixed(1)}`).join('') : '';
    const area = line ? `${line}L${x(shown.at(-1)!.t).toFixed(1)},${TOP + ph}L${x(shown[0]!.t).toFixed(1)},${TOP + ph}Z` : '';
    const yTicks = [0, top / 2, top];
    const secs = span / 1000;
    const xTicks = [secs, secs / 2, 0];
    return html`<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="tokens per second over the last ${secs} seconds" data-testid="throughput-chart">
      <rect class="plot" x=${LEFT} y=${TOP} width=${pw} height=${ph}></rect>
      ${yTicks.map(
        (v) => svg`<line class="grid" x1=${LEFT} x2=${W - RIGHT} y1=${y(v)} y2=${y(v)}></line>
          <text x=${LEFT - 4} y=${y(v) + 3} text-anchor="end">${tick(v)}</text>`,
      )}
      ${xTicks.map(
        (sec) => svg`<text x=${LEFT + pw * (1 - sec / secs)} y=${TOP + ph + 12} text-anchor=${sec === secs ? 'start' : sec === 0 ? 'end' : 'middle'}>${sec === 0 ? 'now' : `−${sec} s`}</text>`,
      )}
      <line class="axis" x1=${LEFT} x2=${LEFT} y1=${TOP} y2=${TOP + ph}></line>
      <line class="axis" x1=${LEFT} x2=${W - RIGHT} y1=${TOP + ph} y2=${TOP + ph}></line>
      ${line ? svg`<path class="area" d=${area}></path><path class="line" d=${line} data-testid="throughput-path"></path>` : null}
      <text class="title" x=${LEFT + pw / 2} y=${H - 3} text-anchor="middle">time</text>
      <text class="title" transform="translate(10 ${TOP + ph / 2}) rotate(-90)" text-anchor="middle">tokens/s</text>
    </svg>`;
  }
}

/** An axis label: `0`, `0.5`, `20`, `1000`. */
function tick(v: number): string {
  return String(Number(v.toPrecision(3)));
}

/** The smallest of 1, 2 or 5 × 10ⁿ at or above `v`. */
function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

declare global {
  interface HTMLElementTagNameMap {
    'generation-throughput': GenerationThroughput;
  }
}
