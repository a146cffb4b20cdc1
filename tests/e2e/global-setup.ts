// Builds the app's test build once (test.html: the app with the fault-injecting
// worker and its API on window, into dist-test) and serves it with `vite
// preview` for every browser test. The shipped build (`npm run build`) has none of it.
import type { TestProject } from 'vitest/node';
import { build, preview, type PreviewServer } from 'vite';

let server: PreviewServer | undefined;

declare module 'vitest' {
  export interface ProvidedContext {
    baseUrl: string;
  }
}

export async function setup(project: TestProject) {
  await build({ mode: 'test', logLevel: 'warn' });
  server = await preview({ mode: 'test', preview: { port: 4173, strictPort: false, host: '127.0.0.1' }, logLevel: 'warn' });
  const url = server.resolvedUrls?.local[0];
  if (!url) throw new Error('vite preview did not report a URL');
  project.provide('baseUrl', `${url}test.html`);
}

export async function teardown() {
  await server?.close();
}
