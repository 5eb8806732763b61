import { LitElement, css, html } from 'lit';
import { customElement, property } from 'lit/decorators.js';
import type { RunningTask, TaskEntry } from '../node';
import { panel, table } from './styles';

/** Tasks the node holds (running or waiting for a worker) and the last ones that finished. */
@customElement('task-list')
export class TaskList extends LitElement {
  static override styles = [
    panel,
    table,
    css`
      .ok {
        color: #15803d;
      }
      .err {
        color: #b91c1c;
      }
    `,
  ];

  @property({ attribute: false }) running: RunningTask[] = [];
  @property({ attribute: false }) recent: TaskEntry[] = [];
  /** Rows shown per table. */
  @property({ type: Number }) rows = 20;

  override render() {
    const now = Date.now();
    return html`
      <h2>Held (${this.running.length})</h2>
      <table data-testid="held-tasks">
        <tr><th>kind</th><th>name</th><th>state</th><th>for</th><th>task</th></tr>
        ${[...this.running.filter((t) => t.running), ...this.running.filter((t) => !t.running)].slice(0, this.rows).map(
          (t) => html`<tr>
            <td>${t.kind}</td>
            <td>${t.name}</td>
            <td>${t.running ? 'running' : 'waiting'}</td>
            <td>${now - t.startedAt} ms</td>
            <td class="muted">${t.taskId.slice(0, 8)}</td>
          </tr>`,
        )}
      </table>
      <h2 style="margin-top:12px">Recent</h2>
      <table data-testid="recent-tasks">
        <tr><th>kind</th><th>name</th><th>duration</th><th>outcome</th><th>task</th></tr>
        ${this.recent.slice(0, this.rows).map(
          (t) => html`<tr>
            <td>${t.kind}</td>
            <td>${t.name}</td>
            <td>${t.durationMs.toFixed(1)} ms</td>
            <td class=${t.code === 'OK' ? 'ok' : 'err'}>${t.code}</td>
            <td class="muted">${t.taskId.slice(0, 8)}</td>
          </tr>`,
        )}
      </table>
    `;
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'task-list': TaskList;
  }
}
