import { LitElement, css, html } from 'lit';
import { customElement, property, state } from 'lit/decorators.js';
import { panel } from '../elements/styles';

/** The token box: a bearer token for this tab (`token` event with it; an empty one forgets the token). */
@customElement('ops-token')
export class OpsToken extends LitElement {
  static override styles = [
    panel,
    css`
      .row {
        display: flex;
        gap: 6px;
        align-items: center;
      }
      input {
        font: 12px ui-monospace, monospace;
        padding: 3px 6px;
        min-width: 16em;
      }
      button {
        font: inherit;
      }
    `,
  ];

  /** Whether a token is set now (the box then offers to forget it). */
  @property({ type: Boolean }) hasToken = false;
  @state() private value = '';

  override render() {
    return html`<div class="row">
      <input
        type="password"
        data-testid="token-input"
        aria-label="Bearer token"
        placeholder=${this.hasToken ? 'another token' : 'bearer token (npm start prints it)'}
        autocomplete="off"
        .value=${this.value}
        @input=${(e: Event) => (this.value = (e.target as HTMLInputElement).value)}
        @keydown=${(e: KeyboardEvent) => e.key === 'Enter' && this.#use()}
      />
      <button data-testid="token-use" ?disabled=${this.value.trim() === ''} @click=${() => this.#use()}>Use</button>
      ${this.hasToken ? html`<button data-testid="token-forget" @click=${() => this.#send('')}>Forget</button>` : null}
    </div>`;
  }

  #use(): void {
    const t = this.value.trim();
    if (t) this.#send(t);
  }

  #send(token: string): void {
    this.value = '';
    this.dispatchEvent(new CustomEvent<string>('token', { detail: token, bubbles: true, composed: true }));
  }
}

declare global {
  interface HTMLElementTagNameMap {
    'ops-token': OpsToken;
  }
}
