/**
 * The OpenAPI document as a page to read (`GET /docs`), rendered here as plain HTML: no scripts and no
 * CDN, so it works offline and under the page's Content-Security-Policy (server/headers.ts; the one
 * inline `<style>` is what style-src 'unsafe-inline' allows). Operations grouped by tag, each with its
 * method, path, roles, parameters, body schema, responses and examples; the shared schemas at the end,
 * `$ref`s as links to them.
 */
import type { OpenApiDocument } from './openapi';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type Obj = { [k: string]: Json };

const esc = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const isObj = (v: Json | undefined): v is Obj => v !== null && typeof v === 'object' && !Array.isArray(v);
const anchor = (s: string): string => s.replace(/[^A-Za-z0-9]+/g, '-').replace(/^-|-$/g, '');

/** Pretty JSON with `$ref` values as links to the schema's section. */
function jsonHtml(value: Json): string {
  const text = esc(JSON.stringify(value, null, 2));
  return text.replace(/&quot;#\/components\/schemas\/([A-Za-z0-9_]+)&quot;/g, (_m, name: string) => `<a href="#schema-${name}">&quot;#/components/schemas/${name}&quot;</a>`);
}

function schemaBlock(schema: Json | undefined): string {
  if (schema === undefined) return '';
  if (isObj(schema) && typeof schema.$ref === 'string') {
    const name = schema.$ref.split('/').pop()!;
    return `<p class="ref">Schema: <a href="#schema-${esc(name)}">${esc(name)}</a></p>`;
  }
  return `<details><summary>Schema</summary><pre>${jsonHtml(schema)}</pre></details>`;
}

function media(content: Json | undefined): string {
  if (!isObj(content)) return '';
  let out = '';
  for (const [type, m] of Object.entries(content)) {
    if (!isObj(m)) continue;
    out += `<div class="media"><code>${esc(type)}</code>${schemaBlock(m.schema)}`;
    if (m.example !== undefined) out += `<p class="label">Example</p><pre class="example">${jsonHtml(m.example)}</pre>`;
    out += '</div>';
  }
  return out;
}

function operationHtml(method: string, path: string, op: Obj): string {
  const roles = Array.isArray(op['x-roles']) ? (op['x-roles'] as string[]) : [];
  const access = op['x-access'] === 'open' ? 'open (no token)' : roles.length ? `bearer token with role ${roles.map((r) => `<code>${esc(r)}</code>`).join(' or ')} (admin holds all)` : 'refused to every token';
  const shared = op['x-tenant-bound-refused'] === true ? '; not a tenant-bound token' : '';
  const id = anchor(`${method} ${path}`);
  let html = `<section class="op" id="${id}"><h3><span class="method ${esc(method)}">${esc(method.toUpperCase())}</span> <code>${esc(path)}</code></h3>`;
  html += `<p>${esc(String(op.summary ?? ''))}</p>`;
  if (typeof op.description === 'string') html += `<p class="desc">${esc(op.description)}</p>`;
  html += `<p class="roles"><b>Who:</b> ${access}${shared}</p>`;
  const params = Array.isArray(op.parameters) ? op.parameters.filter(isObj) : [];
  if (params.length) {
    html += '<table><thead><tr><th>parameter</th><th>in</th><th>required</th><th>schema</th></tr></thead><tbody>';
    for (const p of params) {
      html += `<tr><td><code>${esc(String(p.name))}</code>${typeof p.description === 'string' ? `<br><small>${esc(p.description)}</small>` : ''}</td><td>${esc(String(p.in))}</td><td>${p.required ? 'yes' : 'no'}</td><td><code>${esc(JSON.stringify(p.schema))}</code></td></tr>`;
    }
    html += '</tbody></table>';
  }
  if (isObj(op.requestBody)) {
    const b = op.requestBody;
    html += `<h4>Body${b.required ? '' : ' (optional)'}</h4>`;
    if (typeof b.description === 'string') html += `<p>${esc(b.description)}</p>`;
    html += media(b.content);
  }
  if (isObj(op.responses)) {
    html += '<h4>Responses</h4>';
    for (const [status, r] of Object.entries(op.responses)) {
      if (!isObj(r)) continue;
      html += `<div class="response"><p><b class="status s${esc(status[0] ?? '')}">${esc(status)}</b> ${esc(String(r.description ?? ''))}</p>${media(r.content)}</div>`;
    }
  }
  return `${html}</section>`;
}

/** The page for `doc`. */
export function openApiPage(doc: OpenApiDocument): string {
  const byTag = new Map<string, string[]>();
  const toc = new Map<string, string[]>();
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      if (!isObj(op)) continue;
      const tag = Array.isArray(op.tags) && typeof op.tags[0] === 'string' ? op.tags[0] : 'Other';
      (byTag.get(tag) ?? byTag.set(tag, []).get(tag)!).push(operationHtml(method, path, op));
      (toc.get(tag) ?? toc.set(tag, []).get(tag)!).push(`<li><a href="#${anchor(`${method} ${path}`)}"><span class="method ${esc(method)}">${esc(method.toUpperCase())}</span> ${esc(path)}</a></li>`);
    }
  }
  const components = isObj(doc.components as Json) ? (doc.components as Obj) : {};
  const schemas = isObj(components.schemas) ? components.schemas : {};
  const info = doc.info as Obj;
  let body = `<header><h1>${esc(String(info.title))} <small>API v${esc(String(info.version))} · OpenAPI ${esc(doc.openapi)}</small></h1>`;
  body += `<p>${esc(String(info.description ?? ''))}</p><p>The document: <a href="/openapi.json">/openapi.json</a>. Errors answer <code>{ "error": { "code", "message", "details" } }</code> (<a href="#schema-Error">Error</a>); the OpenAI-compatible routes answer OpenAI's shape (<a href="#schema-OpenAiError">OpenAiError</a>).</p></header>`;
  body += '<nav><h2>Operations</h2>';
  for (const [tag, items] of toc) body += `<h3><a href="#tag-${anchor(tag)}">${esc(tag)}</a></h3><ul>${items.join('')}</ul>`;
  body += `<h3><a href="#schemas">Schemas</a></h3></nav><main>`;
  for (const [tag, ops] of byTag) body += `<h2 id="tag-${anchor(tag)}">${esc(tag)}</h2>${ops.join('')}`;
  body += '<h2 id="schemas">Schemas</h2>';
  for (const [name, s] of Object.entries(schemas)) body += `<section class="schema" id="schema-${esc(name)}"><h3>${esc(name)}</h3><pre>${jsonHtml(s)}</pre></section>`;
  body += '</main>';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>${esc(String(info.title))} API</title>
<style>
body{font:15px/1.45 system-ui,sans-serif;margin:0;display:grid;grid-template-columns:minmax(14rem,22rem) 1fr;color:#1d2330}
header{grid-column:1/3;padding:1rem 1.5rem;border-bottom:1px solid #d8dce3;background:#f6f8fa}
header small{font-weight:normal;color:#5a6372;font-size:.6em}
nav{padding:0 1rem;border-right:1px solid #d8dce3;font-size:13px;overflow-wrap:anywhere}
nav ul{list-style:none;padding:0;margin:0 0 .5rem}nav li{margin:.15rem 0}nav a{text-decoration:none;color:inherit}
main{padding:0 1.5rem 4rem;min-width:0}
.op{border:1px solid #d8dce3;border-radius:6px;padding:.25rem 1rem .75rem;margin:1rem 0}
.method{display:inline-block;min-width:3.2em;text-align:center;border-radius:3px;padding:0 .3em;font:bold 12px monospace;color:#fff;background:#5a6372}
.method.get{background:#1f6feb}.method.post{background:#1a7f37}.method.put{background:#9a6700}.method.delete{background:#cf222e}
pre{background:#f6f8fa;border:1px solid #e3e6ea;padding:.5rem;overflow:auto;font-size:12px;max-height:28rem}
pre.example{background:#fffbea}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #d8dce3;padding:.2rem .5rem;text-align:left;vertical-align:top}
.status{font-family:monospace}.status.s2{color:#1a7f37}.status.s4{color:#9a6700}.status.s5{color:#cf222e}
.label{margin:.3rem 0 0;font-size:12px;color:#5a6372}.media{margin-left:1rem}
</style></head><body>
${body}
</body></html>
`;
}
