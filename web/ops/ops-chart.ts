import { LitElement, css, html, type PropertyValues } from 'lit';
import { customElement, property, query } from 'lit/decorators.js';
import { rate } from '../elements/format';
import { panel } from '../elements/styles';

export interface ChartSeries {
  label: string;
  /** A CSS colour the canvas takes (`#rrggbb`). */
  color: string;
  /** One value per time; null leaves a gap. */
  values: ReadonlyArray<number | null>;
}

const HEIGHT = 160;
/** The plot's margins; the legend sits in the top one (rows 7–15). */
const PAD = { left: 44, right: 10, top: 22, bottom: 22 };
const AXIS = '#8a93a6';
const GRID = '#e3e7ef';
const TEXT = '#5a6478';

/** Values over time as lines on a canvas, drawn here (no chart library): a y axis from 0, a time axis, a legend. */
@customElement('ops-chart')
export class OpsChart extends LitElement {
  static override styles = [
    panel,
    css`
      canvas {
        display: block;
        width: 100%;
        height: ${HEIGHT}px;
      }
    `,
  ];

  @property() heading = '';
  @property() unit = '';
  /** What the x values are: epoch ms (labelled from −span to now) or step numbers (labelled by step). */
  @property() axis: 'time' | 'steps' = 'time';
  @property({ attribute: false }) times: readonly number[] = [];
  @property({ attribute: false }) series: readonly ChartSeries[] = [];
  @query('canvas') canvas!: HTMLCanvasElement;
  #resize: ResizeObserver | null = null;

  override connectedCallback(): void {
    super.connectedCallback();
    this.#resize = new ResizeObserver(() => this.#draw());
    this.#resize.observe(this);
  }

  override disconnectedCallback(): void {
    super.disconnectedCallback();
    this.#resize?.disconnect();
    this.#resize = null;
  }

  override render() {
    const last = this.series.map((s) => `${s.label} ${fmt(s.values.at(-1) ?? null)}${this.unit ? ` ${this.unit}` : ''}`).join(' · ');
    return html`<h2>${this.heading}</h2>
      <canvas role="img" aria-label="${this.heading}: ${last || 'no data yet'}" data-testid="chart-canvas" data-points=${this.times.length}></canvas>`;
  }

  protected override updated(_changed: PropertyValues): void {
    this.#draw();
  }

  #draw(): void {
    const canvas = this.canvas;
    if (!canvas) return;
    const dpr = window.devicePixelRatio || 1;
    const width = Math.max(120, Math.round(canvas.clientWidth || 300));
    canvas.width = Math.round(width * dpr);
    canvas.height = Math.round(HEIGHT * dpr);
    const g = canvas.getContext('2d');
    if (!g) return;
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, width, HEIGHT);
    const plotW = width - PAD.left - PAD.right;
    const plotH = HEIGHT - PAD.top - PAD.bottom;
    const times = this.times;
    let max = 0;
    for (const s of this.series) for (const v of s.values) if (v !== null && Number.isFinite(v) && v > max) max = v;
    const top = niceCeil(max);
    const t0 = times[0] ?? 0;
    const t1 = times.at(-1) ?? 0;
    const span = Math.max(t1 - t0, 1);
    const x = (t: number) => PAD.left + (times.length < 2 ? plotW : ((t - t0) / span) * plotW);
    const y = (v: number) => PAD.top + plotH - (v / top) * plotH;

    g.font = '10px system-ui, sans-serif';
    g.textBaseline = 'middle';
    g.lineWidth = 1;
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      const yy = Math.round(y(v)) + 0.5;
      g.strokeStyle = i === 0 ? AXIS : GRID;
      g.beginPath();
      g.moveTo(PAD.left, yy);
      g.lineTo(PAD.left + plotW, yy);
      g.stroke();
      g.fillStyle = TEXT;
      g.textAlign = 'right';
      g.fillText(fmt(v), PAD.left - 6, yy);
    }
    g.strokeStyle = AXIS;
    g.beginPath();
    g.moveTo(PAD.left + 0.5, PAD.top);
    g.lineTo(PAD.left + 0.5, PAD.top + plotH);
    g.stroke();
    g.fillStyle = TEXT;
    g.textAlign = 'left';
    const steps = this.axis === 'steps';
    g.fillText(times.length ? (steps ? `step ${t0}` : `−${duration(span)}`) : 'no samples yet', PAD.left, HEIGHT - PAD.bottom / 2);
    g.textAlign = 'right';
    g.fillText(steps ? (times.length ? `step ${t1}` : '') : 'now', PAD.left + plotW, HEIGHT - PAD.bottom / 2);
    if (this.unit) {
      g.textAlign = 'left';
      g.fillText(this.unit, 4, PAD.top / 2);
    }

    // The series, each a line broken at gaps (a lone point is a dot), and its legend entry.
    let legendX = PAD.left + plotW;
    for (let si = this.series.length - 1; si >= 0; si--) {
      const s = this.series[si]!;
      g.strokeStyle = s.color;
      g.fillStyle = s.color;
      g.lineWidth = 2;
      g.lineJoin = 'round';
      let open = false;
      g.beginPath();
      for (let i = 0; i < times.length; i++) {
        const v = s.values[i] ?? null;
        if (v === null || !Number.isFinite(v)) {
          open = false;
          continue;
        }
        const px = x(times[i]!);
        const py = y(v);
        const lone = (s.values[i - 1] ?? null) === null && (s.values[i + 1] ?? null) === null;
        if (lone) g.fillRect(px - 2, py - 2, 4, 4);
        if (open) g.lineTo(px, py);
        else g.moveTo(px, py);
        open = true;
      }
      g.stroke();
      g.textAlign = 'right';
      g.fillStyle = TEXT;
      const label = s.label;
      g.fillText(label, legendX, PAD.top / 2);
      const w = g.measureText(label).width;
      g.fillStyle = s.color;
      g.fillRect(legendX - w - 14, PAD.top / 2 - 4, 10, 8);
      legendX -= w + 24;
    }
  }
}

/** 1, 2 or 5 times a power of ten, at least `v` (and at least 1). */
function niceCeil(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** `45 s`, `12 min`, `1.5 h`. */
function duration(ms: number): string {
  const s = Math.round(ms / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function fmt(v: number | null): string {
  return v === null ? '—' : rate(v);
}

declare global {
  interface HTMLElementTagNameMap {
    'ops-chart': OpsChart;
  }
}
