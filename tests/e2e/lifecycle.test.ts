// Accepted work is never lost, as a person meets it in the page: a request
// cancelled while a model loads makes no image, a reload after a switch
// finishes every queued request once on the model it was accepted for,
// requests for another model wait with Load / Discard, a request that takes
// the engine down each time stops after two attempts, and a second tab does
// not replay the first tab's queue. Runs on wasm (see journey.test.ts).
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Page } from 'playwright-core';
import { startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';
import { holdTransformerAfter, openApp, waitForAttribute, waitForCount, waitForText, type BrowserSession } from './chromium.ts';
import { storedImages } from './page-images.ts';

const queued = (page: Page) => page.evaluate(() => (window as unknown as { __engine: { pending(): Promise<unknown[]> } }).__engine.pending().then((p) => p.length));
const cells = (page: Page, state?: string) => page.locator(state ? `[data-testid="cell"][data-state="${state}"]` : '[data-testid="cell"]');

async function generate(page: Page, prompts: string[], steps: number, seed?: number) {
  await page.getByTestId('prompts').fill(prompts.join('\n'));
  await page.getByTestId('steps').fill(String(steps));
  await page.getByTestId('seed').fill(seed === undefined ? '' : String(seed));
  await page.getByTestId('generate').click();
}

async function loadUrl(page: Page, url: string) {
  await page.getByTestId('model-kind').selectOption('url');
  await page.getByTestId('model-url').fill(url);
  await page.getByTestId('load-model').click();
}

describe('nothing accepted is lost', () => {
  let b: BrowserSession;
  let server: ModelServer;
  const external = () => new URL('models/tiny-sd3-external/', inject('baseUrl')).href;
  const label = () => b.page.getByTestId('model-label');
  beforeAll(async () => {
    server = await startModelServer({ repos: [{ repo: 'acme/slow', folder: TINY_MODEL_EXTERNAL_DIR }] });
    b = await openApp(inject('baseUrl'));
  });
  afterAll(async () => {
    await b?.close();
    await server?.close();
  });

  it('a request cancelled while a model loads makes no image', async () => {
    // a slow link: the transformer's weights take 4 s to start arriving
    server.faults.set('/acme/slow/resolve/main/transformer/model.onnx_data', { delayMs: 4000 });
    await b.page.getByTestId('model-kind').selectOption('hub');
    await b.page.getByTestId('hub-repo').fill('acme/slow');
    await b.page.getByTestId('hub-host').fill(server.url);
    await b.page.getByTestId('load-model').click();
    await waitForAttribute(b.page.getByTestId('model-form'), 'data-busy', 'true');
    await generate(b.page, ['cancelled during the load'], 4);
    const cell = b.page.locator('[data-testid="cell"]', { hasText: 'cancelled during the load' });
    await cell.getByTestId('cell-cancel').click();
    await waitForAttribute(cell, 'data-state', 'cancelled');
    // sent after it, it runs after it would have: once this one is done, the cancelled one made nothing
    await generate(b.page, ['after the cancel'], 2);
    await waitForCount(cells(b.page, 'done'), 1);
    await waitForText(label(), 'acme/slow');
    expect((await storedImages(b.page)).map((m) => m.prompt)).toEqual(['after the cancel']);
    expect(await queued(b.page)).toBe(0);
    server.faults.clear();
  });

  it('a reload after a switch: the page loads the model the queue was accepted for, and every request ends with one stored image', async () => {
    await loadUrl(b.page, external());
    await waitForText(label(), 'tiny-sd3-external');
    // 100 of the 150 steps at most: none can finish in the old worker, however late the reload lands
    await holdTransformerAfter(b.page, 100);
    await generate(b.page, ['after a switch 1', 'after a switch 2', 'after a switch 3', 'after a switch 4'], 150, 900);
    // all four accepted (in the durable queue, running) before the reload
    await cells(b.page, 'denoising').nth(3).waitFor({ timeout: 60_000 });
    await b.page.reload();
    // the queue decides: its model loads, not the built-in default
    await waitForText(label(), /tiny-sd3-external.* · wasm/);
    await waitForCount(b.page.locator('[data-testid="cell"][data-resumed="true"]'), 4).catch(async (e) => {
      console.log('cells and stored prompts at the timeout:', JSON.stringify(await cells(b.page).evaluateAll((cs) => cs.map((c) => [c.getAttribute('data-state'), c.getAttribute('data-resumed'), c.textContent]))), JSON.stringify(await storedImages(b.page).then((i) => i.map((m) => m.prompt))));
      throw e;
    });
    await waitForCount(cells(b.page, 'done'), 4);
    const images = (await storedImages(b.page)).filter((m) => m.prompt.startsWith('after a switch'));
    expect(images.map((m) => m.prompt).sort()).toEqual(['after a switch 1', 'after a switch 2', 'after a switch 3', 'after a switch 4']);
    expect(new Set(images.map((m) => m.id)).size).toBe(4);
    expect(images.every((m) => m.modelId.endsWith('/tiny-sd3-external/') && m.steps === 150)).toBe(true);
    expect(await queued(b.page)).toBe(0);
  });

  it('requests accepted for another model wait after a reload, named, until the person loads it', async () => {
    // two long ones on the built-in model, then two on the other model: the reload finds both kinds queued
    await b.page.getByTestId('model-kind').selectOption('tiny');
    await b.page.getByTestId('load-model').click();
    await waitForText(label(), /\/tiny-sd3\/ · .* · wasm/);
    // each model's runs held after 100 of the 400 steps: nothing finishes before the reload, however slow the switch
    await holdTransformerAfter(b.page, 100);
    await generate(b.page, ['built-in a', 'built-in b'], 400, 10);
    await b.page.locator('[data-testid="cell"][data-state="denoising"]', { hasText: 'built-in' }).nth(1).waitFor({ timeout: 60_000 });
    await loadUrl(b.page, external());
    await waitForText(label(), 'tiny-sd3-external');
    await holdTransformerAfter(b.page, 100);
    await generate(b.page, ['other model a', 'other model b'], 400, 20);
    await b.page.locator('[data-testid="cell"][data-state="denoising"]', { hasText: 'other model' }).nth(1).waitFor({ timeout: 60_000 });
    // the built-in ones are still running on their model: the queue holds both models' requests
    expect(await b.page.locator('[data-testid="cell"][data-state="done"]', { hasText: 'built-in' }).count()).toBe(0);
    await b.page.reload();
    await waitForText(label(), /\/tiny-sd3\/ · .* · wasm/);
    const waiting = b.page.getByTestId('waiting-model');
    await waitForText(waiting, /2 requests wait for model tiny-sd3-external/).catch(async (e) => {
      console.log('client and queue at the timeout:', JSON.stringify(await b.page.evaluate(async () => {
        const w = window as unknown as { __client: { waiting: unknown; model: { id: string } | null; restarts: number; banner: string; jobs: { prompt: string; state: string; resumed: boolean }[] }; __engine: { pending(): Promise<{ modelId: string; source?: unknown; request: { prompt: string } }[]> } };
        return { restarts: w.__client.restarts, banner: w.__client.banner, jobs: w.__client.jobs.map((j) => [j.prompt, j.state, j.resumed]), waiting: w.__client.waiting, model: w.__client.model?.id, pending: (await w.__engine.pending()).map((q) => [q.modelId, q.request.prompt, q.source]) };
      })));
      throw e;
    });
    await waitForCount(cells(b.page, 'done'), 2);
    expect((await storedImages(b.page)).filter((m) => m.prompt.startsWith('other model'))).toEqual([]);
    await waiting.getByTestId('waiting-load').click();
    await waitForCount(cells(b.page, 'done'), 4).catch(async (e) => {
      console.log('cells, model and client at the timeout:', JSON.stringify(await cells(b.page).evaluateAll((cs) => cs.map((c) => [c.getAttribute('data-state'), c.textContent]))), await b.page.getByTestId('model-label').textContent(), JSON.stringify(await b.page.evaluate(() => { const c = (window as unknown as { __client: { loadError: string; waiting: unknown; loading: boolean } }).__client; return { e: c.loadError, w: c.waiting, l: c.loading }; })));
      throw e;
    });
    await waitForCount(waiting, 0);
    const other = (await storedImages(b.page)).filter((m) => m.prompt.startsWith('other model'));
    expect(other.map((m) => m.modelId.endsWith('/tiny-sd3-external/'))).toEqual([true, true]);
    expect(await queued(b.page)).toBe(0);
  });

  it('a request that takes the engine down each time it runs stops after 2 attempts, saying why', async () => {
    await generate(b.page, ['crash the worker, twice'], 2);
    const cell = b.page.locator('[data-testid="cell"]', { hasText: 'crash the worker' });
    await waitForAttribute(cell, 'data-state', 'failed');
    expect(await cell.getByTestId('cell-error').textContent()).toMatch(/stopped after 2 attempts: each time it ran, the engine crashed/);
    expect(await b.page.evaluate(() => (window as unknown as { __client: { restarts: number } }).__client.restarts)).toBe(2);
    expect(await queued(b.page)).toBe(0);
    // the engine serves again
    await generate(b.page, ['after the poisoned one'], 2);
    await b.page.locator('[data-testid="cell"][data-state="done"]', { hasText: 'after the poisoned one' }).waitFor({ timeout: 120_000 });
  });

  it('a second tab does not run or replay the first tab’s queue; it takes over when the first closes', async () => {
    await generate(b.page, ['first tab a', 'first tab b'], 150, 30);
    await cells(b.page, 'denoising').first().waitFor({ timeout: 60_000 });
    const second = await b.context.newPage();
    await second.goto(`${inject('baseUrl')}?backend=wasm`);
    await waitForText(second.getByTestId('banner'), /open in another tab/);
    await b.page.locator('[data-testid="cell"][data-state="done"]', { hasText: 'first tab' }).nth(1).waitFor({ timeout: 120_000 });
    expect(await cells(second).count()).toBe(0);
    expect((await storedImages(b.page)).filter((m) => m.prompt.startsWith('first tab'))).toHaveLength(2);
    await b.page.close();
    // the lock passes to the second tab: it starts the engine
    await waitForText(second.getByTestId('model-label'), /tiny-sd3.* · wasm/);
    expect(await cells(second).count()).toBe(0);
    expect((await storedImages(second)).filter((m) => m.prompt.startsWith('first tab'))).toHaveLength(2);
  });
});
