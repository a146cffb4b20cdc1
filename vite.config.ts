import type { IncomingMessage, ServerResponse } from 'node:http';
import { svelte } from '@sveltejs/vite-plugin-svelte';
import type { Plugin } from 'vite';
import { defineConfig } from 'vitest/config';
import { CONTENT_SECURITY_POLICY } from './content-security-policy.ts';

/**
 * The Content-Security-Policy as a response header on everything the dev and
 * preview servers send: a worker's policy comes from its own script's response,
 * and a <meta> policy governs only the page. The meta is still injected into
 * the HTML for static hosts that send no headers, and the build writes a
 * `_headers` file (Netlify, Cloudflare Pages) carrying the header.
 */
function contentSecurityPolicy(): Plugin {
  const setHeader = (_req: IncomingMessage, res: ServerResponse, next: () => void) => {
    res.setHeader('Content-Security-Policy', CONTENT_SECURITY_POLICY);
    next();
  };
  return {
    name: 'content-security-policy',
    configureServer: (server) => void server.middlewares.use(setHeader),
    configurePreviewServer: (server) => void server.middlewares.use(setHeader),
    transformIndexHtml: () => [{ tag: 'meta', attrs: { 'http-equiv': 'Content-Security-Policy', content: CONTENT_SECURITY_POLICY }, injectTo: 'head-prepend' }],
    generateBundle() {
      this.emitFile({ type: 'asset', fileName: '_headers', source: `/*\n  Content-Security-Policy: ${CONTENT_SECURITY_POLICY}\n` });
    },
  };
}

// `vite build` makes the app as it ships; `vite build --mode test` makes the test
// build (test.html: the same app with the fault-injecting worker and its API on
// window) into dist-test, for the browser tests and the scale benchmark only.
export default defineConfig(({ mode }) => ({
  plugins: [svelte(), contentSecurityPolicy()],
  worker: { format: 'es' },
  // onnxruntime-web finds its .wasm beside its own module; pre-bundling would move it
  optimizeDeps: { exclude: ['onnxruntime-web'] },
  build:
    mode === 'test'
      ? { target: 'es2022', chunkSizeWarningLimit: 30000, outDir: 'dist-test', rollupOptions: { input: { test: 'test.html' } } }
      : { target: 'es2022', chunkSizeWarningLimit: 30000 },
  preview: mode === 'test' ? { open: false } : {},
  server: { fs: { strict: true } },
  test: {
    // one core runs Chromium/ORT, the other the runner: keep files sequential
    fileParallelism: false,
    reporters: ['default', './tests/summary-reporter.ts'],
    projects: [
      { extends: true, test: { name: 'unit', include: ['tests/unit/**/*.test.ts'], environment: 'node', testTimeout: 60_000, sequence: { groupOrder: 0 } } },
      {
        extends: true,
        test: {
          name: 'browser',
          include: ['tests/e2e/**/*.test.ts'],
          environment: 'node',
          globalSetup: ['tests/e2e/global-setup.ts'],
          testTimeout: 240_000,
          hookTimeout: 240_000,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
}));
