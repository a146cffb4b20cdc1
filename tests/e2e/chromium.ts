// Debian's Chromium through playwright-core, with the flags that give a real
// WebGPU adapter (SwiftShader) and a closed network (see ../shared/BROWSER.md).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--enable-unsafe-webgpu',
];

export interface BrowserSession {
  context: BrowserContext;
  page: Page;
  /** Console errors and uncaught page errors, for assertions and debugging. */
  errors: string[];
  close(): Promise<void>;
}

/** A fresh profile (new user-data-dir) each time: no state leaks between tests. */
export async function openBrowser(): Promise<BrowserSession> {
  const dir = await mkdtemp(join(tmpdir(), 'sd3-chromium-'));
  const context = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM_PATH, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 900 } });
  const page = context.pages()[0] ?? (await context.newPage());
  const errors: string[] = [];
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(m.text());
  });
  page.on('pageerror', (e) => errors.push(e.message));
  return {
    context,
    page,
    errors,
    close: async () => {
      await context.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A fresh browser on the app once its built-in model is loaded: on wasm (the default here) or webgpu. */
export async function openApp(baseUrl: string, backend: 'wasm' | 'webgpu' = 'wasm'): Promise<BrowserSession> {
  const b = await openBrowser();
  await b.page.goto(backend === 'wasm' ? `${baseUrl}?backend=wasm` : baseUrl);
  await b.page
    .getByTestId('model-label')
    .filter({ hasText: backend === 'wasm' ? /tiny-sd3.* · wasm/ : /tiny-sd3.* · webgpu/ })
    .waitFor({ timeout: 120_000 });
  return b;
}
