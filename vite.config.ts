import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

// The page and its workers. Cross-origin isolation gives SharedArrayBuffer
// (multi-threaded onnxruntime-web); the coordinator sends the same headers in production.
const isolation = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

export default defineConfig({
  root: '.',
  build: {
    outDir: 'dist',
    target: 'es2022',
    sourcemap: true,
    // Two pages: the node (index.html) and the operator's view of the pool (ops.html).
    rolldownOptions: { input: { main: page('index.html'), ops: page('ops.html') } },
  },
  worker: { format: 'es' },
  server: { headers: isolation },
  preview: { headers: isolation },
});

function page(name: string): string {
  return fileURLToPath(new URL(name, import.meta.url));
}
