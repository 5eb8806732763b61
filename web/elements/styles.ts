import { css } from 'lit';

/** Shared look of the node's panels. */
export const panel = css`
  :host {
    display: block;
    font: 14px/1.4 system-ui, sans-serif;
    color: #1d2330;
  }
  h2 {
    font-size: 13px;
    text-transform: uppercase;
    letter-spacing: 0.06em;
    color: #5a6478;
    margin: 0 0 8px;
  }
  dl {
    display: grid;
    grid-template-columns: minmax(0, max-content) minmax(0, 1fr);
    gap: 2px 12px;
    margin: 0;
  }
  dt {
    color: #5a6478;
    overflow-wrap: anywhere;
  }
  dd {
    margin: 0;
    font-variant-numeric: tabular-nums;
    overflow-wrap: anywhere;
  }
  .muted {
    color: #8a93a6;
  }
`;

/** Shared look of the panels' tables (numbers in aligned columns). */
export const table = css`
  table {
    width: 100%;
    border-collapse: collapse;
    font-variant-numeric: tabular-nums;
  }
  th,
  td {
    text-align: left;
    padding: 2px 8px 2px 0;
    white-space: nowrap;
  }
  th {
    color: #5a6478;
    font-weight: 500;
  }
`;
