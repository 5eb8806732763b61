/**
 * Security headers every answer carries, and the page's Content-Security-Policy.
 *
 * The policy lets the page do what it does and nothing more: module scripts and workers from this
 * origin, WebAssembly compilation ('wasm-unsafe-eval', no JavaScript eval), fetches and the node
 * WebSocket (to this coordinator or, with `?coordinator=`, another one: connect-src cannot tell them
 * apart from other hosts, and the WebSocket needs ws:/wss: anyway, so what guards the page is that no
 * script runs but its own), the inline `<style>` of index.html, no plugins, no `<base>`, no form posts,
 * and no framing (`frame-ancestors 'none'`, the clickjacking guard). Workers created from URLs take
 * their own policy from their script's answer; blob: workers are allowed for onnxruntime-web, which
 * turns a cross-origin script into a blob: URL before it starts a worker from it.
 * JSON answers get `default-src 'none'` so that a browser never runs anything from one.
 */
import type { FastifyReply } from 'fastify';

export const PAGE_CSP = [
  "default-src 'self'",
  "script-src 'self' 'wasm-unsafe-eval'",
  "worker-src 'self' blob:",
  "connect-src 'self' http: https: ws: wss:",
  "img-src 'self' data: blob:",
  "style-src 'self' 'unsafe-inline'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

export const API_CSP = "default-src 'none'; frame-ancestors 'none'";

/** Sets the headers of one answer from its content type (called from the onSend hook in http.ts). */
export function setSecurityHeaders(reply: FastifyReply): void {
  reply.header('x-content-type-options', 'nosniff');
  reply.header('referrer-policy', 'no-referrer');
  const type = reply.getHeader('content-type');
  const mime = typeof type === 'string' ? type.split(';')[0]!.trim().toLowerCase() : '';
  if (mime === 'text/html') {
    reply.header('content-security-policy', PAGE_CSP);
    reply.header('x-frame-options', 'DENY');
  } else if (mime === 'application/json') {
    reply.header('content-security-policy', API_CSP);
  }
}
