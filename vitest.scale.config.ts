// npm run test:scale: the real-size checks, opt-in (they build ~10 GB of models
// and run for half an hour on SwiftShader). npm test runs the same code paths at
// tiny size (tests/e2e/real-scale.test.ts, tests/unit/plan.test.ts).
import { svelte } from '@sveltejs/vite-plugin-svelte';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  plugins: [svelte()],
  worker: { format: 'es' },
  optimizeDeps: { exclude: ['onnxruntime-web'] },
  test: { include: ['tests/scale/**/*.test.ts'], environment: 'node', testTimeout: 3_600_000, hookTimeout: 3_600_000, fileParallelism: false },
});
