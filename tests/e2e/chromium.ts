// Debian's Chromium through playwright-core, with the flags that give a real
// WebGPU adapter (SwiftShader) and a closed network (see ../shared/BROWSER.md).
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Locator, type Page } from 'playwright-core';

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

/** How long a test waits for a state the page reaches (the test's own limit is longer): a
 * bound on a wait for an event or a state, never a pace of polling. Generous, because this
 * 2-core machine under load can take minutes for what takes seconds when idle. */
export const STATE_WAIT_MS = 180_000;

/** Waits until exactly `n` elements match `locator` (it rises to n, then nothing past it is there). */
export async function waitForCount(locator: Locator, n: number, timeout = STATE_WAIT_MS): Promise<void> {
  if (n > 0) await locator.nth(n - 1).waitFor({ state: 'attached', timeout });
  await locator.nth(n).waitFor({ state: 'detached', timeout });
}

/** Waits until the gallery shows exactly `n` images and reads nothing more: the page's own count. */
export async function waitForGallery(page: Page, n: number, timeout = STATE_WAIT_MS): Promise<void> {
  await page.locator(`[data-testid="gallery-list"][data-count="${n}"][data-reading="false"]`).waitFor({ state: 'attached', timeout });
}

/** Waits until an element of `locator` has the attribute value. */
export async function waitForAttribute(locator: Locator, name: string, value: string, timeout = STATE_WAIT_MS): Promise<void> {
  await locator.and(locator.page().locator(`[${name}="${value}"]`)).first().waitFor({ state: 'attached', timeout });
}

/** Waits until an element of `locator` shows the text: a string as a case-sensitive substring
 * (Playwright's own string match ignores case), a RegExp as it is. */
export async function waitForText(locator: Locator, text: string | RegExp, timeout = STATE_WAIT_MS): Promise<void> {
  const pattern = typeof text === 'string' ? new RegExp(text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')) : text;
  await locator.filter({ hasText: pattern }).first().waitFor({ state: 'attached', timeout });
}

/**
 * The page's worker (the test build's) lets its transformer run `runs` more times, then holds every
 * further run: a test that reloads mid-generation knows no request finished in the old worker, which
 * lives on until the new page arrives (seconds, under load) and would otherwise store some of them.
 */
export async function holdTransformerAfter(page: Page, runs: number): Promise<void> {
  await page.evaluate((n) => (window as unknown as { __engine: { holdTransformerAfter(n: number): Promise<void> } }).__engine.holdTransformerAfter(n), runs);
}
