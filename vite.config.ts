import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'vitest/config';

// `vite build` makes the app as it ships; `vite build --mode test` makes the test
// build (test.html: the same app with the fault-injecting worker and its API on
// window) into dist-test, for the browser tests and the scale benchmark only.
export default defineConfig(({ mode }) => ({
  plugins: [svelte()],
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
