import { LitElement, css, html } from 'lit';
import { customElement, state } from 'lit/decorators.js';
import type { PoolView } from '../../shared';
import { permissions } from './api';
import './ops-cancel';
import './ops-chart';
import './ops-errors';
import './ops-nodes';
import './ops-queue';
import './ops-token';
import { PoolController } from './pool-controller';
import { storeToken, takeToken } from './token';

/** The operator page: the whole pool as the coordinator sees it, and the controls the token may use. */
@customElement('ops-app')
export class OpsApp extends LitElement {
  static override styles = css`
    :host {
      display: block;
      max-width: 1200px;
      margin: 0 auto;
      padding: 16px;
      font: 14px/1.4 system-ui, sans-serif;
      color: #1d2330;
    }
    header {
      display: flex;
      flex-wrap: wrap;
      align-items: baseline;
      gap: 12px;
      margin-bottom: 16px;
    }
    h1 {
      font-size: 20px;
      margin: 0;
    }
    .muted {
      color: #8a93a6;
    }
    .spacer {
      flex: 1;
    }
    a {
      color: #2563eb;
    }
    .grid {
      display: grid;
      grid-template-columns: repeat(auto-fit, minmax(320px, 1fr));
      gap: 16px;
    }
    .card {
      background: #fff;
      border: 1px solid #e3e7ef;
      border-radius: 8px;
      padding: 12px 14px;
      min-width: 0;
    }
    .wide {
      grid-column: 1 / -1;
    }
    .notice {
      margin: 0 0 12px;
      padding: 6px 10px;
      border-radius: 6px;
      background: #eef4ff;
    }
    .notice.bad {
      background: #fdecec;
      color: #991b1b;
    }
  `;

  readonly #pool = new PoolController(this);
  /** The outcome of the last drain or cancel, shown until the next. */
  @state() private notice: { text: string; bad: boolean } | null = null;
  #token: string | null = null;

  override connectedCallback(): void {
    super.connectedCallback();
    this.#token = takeToken();
    this.#pool.setToken(this.#token);
  }

  override render() {
    const v = this.#pool.view;
    const me = this.#pool.me;
    const can = permissions(me);
    const err = this.#pool.error;
    return html`
      <header>
        <h1>Execution pool</h1>
        <span class="muted" data-testid="whoami">${me ? (me.authenticated ? `${me.id} · ${me.roles.join(', ') || 'no role'}${me.tenant ? ` · tenant ${me.tenant}` : ''}` : 'no token') : '…'}</span>
        <span class="spacer"></span>
        <ops-token ?hasToken=${this.#token !== null} @token=${(e: CustomEvent<string>) => this.#setToken(e.detail)}></ops-token>
        <a href="/" title="The node page: this browser joins the pool as a node">Node page</a>
      </header>
      ${err ? html`<p class="notice bad" data-testid="error">${this.#pool.refused ? 'The token was refused: ' : ''}${err.message}</p>` : null}
      ${this.notice ? html`<p class="notice ${this.notice.bad ? 'bad' : ''}" data-testid="notice">${this.notice.text}</p>` : null}
      <div class="grid">
        <ops-nodes class="card wide" .nodes=${v?.nodes ?? []} ?canDrain=${can.drain} .now=${v?.at ?? Date.now()} @drain=${(e: CustomEvent<string>) => this.#drain(e.detail)}></ops-nodes>
        <ops-queue class="card" .queue=${v?.queue ?? null}></ops-queue>
        ${this.#charts(v)}
        <ops-errors class="card wide" .errors=${v?.lastErrors ?? []} .byCode=${v?.errorsByCode ?? {}} .now=${v?.at ?? Date.now()}></ops-errors>
        ${can.cancel ? html`<ops-cancel class="card" @cancel=${(e: CustomEvent<string>) => this.#cancel(e.detail)}></ops-cancel>` : null}
      </div>
    `;
  }

  #charts(v: PoolView | null) {
    const h = v?.history ?? [];
    const times = h.map((p) => p.at);
    return html`
      <ops-chart class="card" data-chart="throughput" heading="Throughput" unit="tasks/min" .times=${times} .series=${[{ label: 'ended', color: '#2563eb', values: h.map((p) => p.throughputPerMin) }]}></ops-chart>
      <ops-chart
        class="card"
        data-chart="latency"
        heading="Task latency"
        unit="ms"
        .times=${times}
        .series=${[
          { label: 'p50', color: '#16a34a', values: h.map((p) => p.latencyP50Ms) },
          { label: 'p95', color: '#dc2626', values: h.map((p) => p.latencyP95Ms) },
        ]}
      ></ops-chart>
      <ops-chart
        class="card"
        data-chart="queue"
        heading="Queue depth"
        unit="tasks"
        .times=${times}
        .series=${[
          { label: 'queued', color: '#9333ea', values: h.map((p) => p.queued) },
          { label: 'leased', color: '#ea580c', values: h.map((p) => p.leased) },
        ]}
      ></ops-chart>
    `;
  }

  #setToken(token: string): void {
    this.#token = token || null;
    storeToken(this.#token);
    this.notice = null;
    this.#pool.setToken(this.#token);
  }

  async #drain(nodeId: string): Promise<void> {
    try {
      await this.#pool.api.drain(nodeId);
      this.notice = { text: `Node ${nodeId.slice(0, 8)} is draining: it finishes its tasks and takes no new ones.`, bad: false };
    } catch (err) {
      this.notice = { text: `Drain refused: ${(err as Error).message}`, bad: true };
    }
    this.#pool.refresh();
  }

  async #cancel(taskId: string): Promise<void> {
    try {
      await this.#pool.api.cancel(taskId);
      this.notice = { text: `Task ${taskId} is cancelled.`, bad: false };
    } catch (err) {
      this.notice = { text: `Cancel refused: ${(err as Error).message}`, bad: true };
    }
    this.#pool.refresh();
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'ops-app': OpsApp;
  }
}
