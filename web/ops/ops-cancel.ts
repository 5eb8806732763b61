import { LitElement, css, html } from 'lit';
import { customElement, state } from 'lit/decorators.js';
import { panel } from '../elements/styles';

/** A task id and a button: asks the page to cancel that task (`cancel` event with the id). */
@customElement('ops-cancel')
export class OpsCancel extends LitElement {
  static override styles = [
    panel,
    css`
      .row {
        display: flex;
        gap: 6px;
      }
      input {
        flex: 1;
        font: 12px ui-monospace, monospace;
        padding: 3px 6px;
      }
      button {
        font: inherit;
      }
    `,
  ];

  @state() private value = '';

  override render() {
    return html`
      <h2>Cancel a task</h2>
      <div class="row">
        <input
          data-testid="cancel-id"
          aria-label="Task id"
          placeholder="task id"
          spellcheck="false"
          .value=${this.value}
          @input=${(e: Event) => (this.value = (e.target as HTMLInputElement).value)}
          @keydown=${(e: KeyboardEvent) => e.key === 'Enter' && this.#cancel()}
        />
        <button data-testid="cancel" ?disabled=${this.value.trim() === ''} @click=${() => this.#cancel()}>Cancel task</button>
      </div>
    `;
  }

  #cancel(): void {
    const id = this.value.trim();
    if (!id) return;
    this.dispatchEvent(new CustomEvent<string>('cancel', { detail: id, bubbles: true, composed: true }));
    this.value = '';
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'ops-cancel': OpsCancel;
  }
}
