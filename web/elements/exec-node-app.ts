import { LitElement, css, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { InferenceRuntime } from '../../worker/inference';
import { InferenceController } from '../inference-controller';
import type { NodeClient, TrainingCurve } from '../node';
import { NodeController } from '../node-controller';
import '../ops/ops-chart';
import type { ChartSeries } from '../ops/ops-chart';
import './cached-models';
import './generation-throughput';
import './gpu-adapter';
import './loaded-models';
import './model-downloads';
import './node-connection';
import './node-counters';
import './task-list';
import './worker-pool';

/** The whole page: one browser node of the execution pool. */
@customElement('exec-node-app')
export class ExecNodeApp extends LitElement {
  static override styles = css`
    :host {
      display: block;
      max-width: 1100px;
      margin: 0 auto;
      padding: 16px;
      font: 14px/1.4 system-ui, sans-serif;
    }
    header {
      display: flex;
      align-items: baseline;
      gap: 12px;
      margin-bottom: 16px;
    }
    h1 {
      font-size: 20px;
      margin: 0;
    }
    .pool {
      margin-left: auto;
      color: #2563eb;
    }
    .grid {
      display: grid;
      grid-template-columns: repeat(auto-fit, minmax(300px, 1fr));
      gap: 16px;
    }
    .card {
      background: #fff;
      border: 1px solid #e3e7ef;
      border-radius: 8px;
      padding: 12px 14px;
    }
    .wide {
      grid-column: 1 / -1;
    }
  `;

  readonly #node = new NodeController(this);
  readonly #inference = new InferenceController(this);

  @property({ attribute: false })
  get client(): NodeClient | null {
    return this.#node.client;
  }
  set client(c: NodeClient | null) {
    this.#node.client = c;
    this.requestUpdate('client');
  }

  /** The node's inference runtime, when it runs generate tasks: its models, downloads and throughput are shown. */
  @property({ attribute: false })
  get inference(): InferenceRuntime | null {
    return this.#inference.runtime;
  }
  set inference(r: InferenceRuntime | null) {
    this.#inference.runtime = r;
    this.requestUpdate('inference');
  }

  override render() {
    const v = this.#node.view;
    const client = this.#node.client;
    return html`
      <header>
        <h1>Execution node</h1>
        <span class="muted">${v ? `${v.stats.state} · ${v.stats.nodeId ?? 'no id yet'}` : 'starting'}</span>
        <a class="pool" href="/ops.html" title="The operator page: every node, the queue, throughput and errors">Pool</a>
      </header>
      <div class="grid">
        <node-connection class="card" .stats=${v?.stats ?? null}></node-connection>
        <gpu-adapter class="card" .probe=${client?.gpu ?? null}></gpu-adapter>
        <worker-pool class="card" .pool=${v?.stats.pool ?? null}></worker-pool>
        <node-counters class="card" .stats=${v?.stats ?? null} .rate=${v?.rate ?? []}></node-counters>
        ${this.#inferenceCards()}
        ${(v?.training ?? []).map((c) => trainingChart(c))}
        <task-list class="card wide" .running=${v?.running ?? []} .recent=${v?.recent ?? []}></task-list>
      </div>
    `;
  }

  #inferenceCards() {
    if (!this.#inference.runtime) return null;
    const iv = this.#inference.view;
    return html`
      <generation-throughput class="card" .stats=${iv?.stats ?? null} .samples=${iv?.throughput ?? []}></generation-throughput>
      <loaded-models
        class="card"
        .models=${iv?.models ?? []}
        .loads=${iv?.loads ?? new Map()}
        .memoryBytes=${iv?.stats.gpuMemoryBytes ?? 0}
        .budgetBytes=${iv?.stats.gpuBudgetBytes ?? 0}
      ></loaded-models>
      <cached-models class="card" .models=${iv?.cached ?? []}></cached-models>
      ${iv?.downloads.length ? html`<model-downloads class="card" .downloads=${iv.downloads}></model-downloads>` : null}
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'exec-node-app': ExecNodeApp;
  }
}

/** One training run's loss per step (and its held-out loss where measured), as the node sees it. */
function trainingChart(c: TrainingCurve) {
  const evalAt = new Map(c.evalSteps.map((s, i) => [s, c.evalLoss[i]!]));
  const series: ChartSeries[] = [{ label: 'loss', color: '#2563eb', values: c.loss }];
  if (c.evalSteps.length) series.push({ label: 'eval', color: '#d97706', values: c.steps.map((s) => evalAt.get(s) ?? null) });
  const last = c.steps.at(-1) ?? 0;
  const state = c.state === 'running' ? `step ${last} of ${c.total}, ${Math.round(c.tokensPerSec)} tokens/s` : c.state === 'OK' ? `done, ${c.total} steps` : c.state;
  return html`<ops-chart class="card wide" data-chart="training" data-task=${c.taskId} heading="Training ${c.adapterName} on ${c.model} · ${state}" axis="steps" .times=${c.steps} .series=${series}></ops-chart>`;
}
