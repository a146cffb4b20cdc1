// Switching models while work runs, as a person does it in the page: Load on
// the model already loaded, a second model loaded while 4 requests run (they
// finish on the old one), a switch that re-runs them, then a load from idle
// with 2 long requests sent during it. Every accepted request ends with its
// image, and none lingers in the durable queue. Runs on wasm (journey.test.ts).
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';
import { openApp, waitForAttribute, waitForCount, waitForText, type BrowserSession } from './chromium.ts';
import { storedImages } from './page-images.ts';

describe('model switch in the page', () => {
  let b: BrowserSession;
  let server: ModelServer;
  beforeAll(async () => {
    server = await startModelServer({ repos: [{ repo: 'acme/slow', folder: TINY_MODEL_EXTERNAL_DIR }] });
    b = await openApp(inject('baseUrl'));
  });
  afterAll(async () => {
    await b?.close();
    await server?.close();
  });

  const cells = () => b.page.getByTestId('cell');
  const cell = (i: number) => cells().nth(i);
  const label = () => b.page.getByTestId('model-label');
  const loadUrl = async (url: string) => {
    await b.page.getByTestId('model-kind').selectOption('url');
    await b.page.getByTestId('model-url').fill(url);
    await b.page.getByTestId('load-model').click();
  };
  const queued = () => b.page.evaluate(() => (window as unknown as { __engine: { pending(): Promise<unknown[]> } }).__engine.pending().then((p) => p.length));

  const doneCells = () => b.page.locator('[data-testid="cell"][data-state="done"]');

  it('Load model on the model already loaded, mid-run: nothing reloads, every image arrives', async () => {
    await b.page.getByTestId('prompts').fill(['same a', 'same b', 'same c'].join('\n'));
    await b.page.getByTestId('steps').fill('200');
    await b.page.getByTestId('generate').click();
    await b.page.locator('[data-testid="cell"][data-state="denoising"]').nth(2).waitFor({ timeout: 60_000 });
    await b.page.getByTestId('model-kind').selectOption('tiny');
    await b.page.getByTestId('load-model').click();
    await waitForCount(doneCells(), 3);
    expect(await b.page.locator('[data-testid="cell"][data-state="failed"]').count()).toBe(0);
    expect((await storedImages(b.page)).filter((m) => m.prompt.startsWith('same ')).length).toBe(3);
    expect(await queued()).toBe(0);
  });

  it('a switch while 4 requests run: each finishes on the model it started on, none fails, all stay in view', async () => {
    await b.page.getByTestId('prompts').fill(['one', 'two', 'three', 'four'].map((p) => `running ${p}`).join('\n'));
    await b.page.getByTestId('steps').fill('200');
    await b.page.getByTestId('generate').click();
    await b.page.locator('[data-testid="cell"][data-state="denoising"]').nth(3).waitFor({ timeout: 60_000 });
    const external = new URL('models/tiny-sd3-external/', inject('baseUrl')).href;
    await loadUrl(external);
    await waitForText(label(), 'tiny-sd3-external');
    // the new model serves before the old one's requests are through: they were running during the switch
    expect(await doneCells().count()).toBeLessThan(7);
    await waitForCount(doneCells(), 7);
    expect(await b.page.locator('[data-testid="cell"][data-state="failed"]').count()).toBe(0);
    const running = (await storedImages(b.page)).filter((m) => m.prompt.startsWith('running '));
    expect(running.map((m) => m.modelId.endsWith('/tiny-sd3/'))).toEqual([true, true, true, true]);
    expect(await queued()).toBe(0);
  });

  it("with 'start again on the new model', requests running at a switch are re-run there from their seed", async () => {
    await b.page.getByTestId('prompts').fill('rerun me');
    await b.page.getByTestId('steps').fill('200');
    await b.page.getByTestId('generate').click();
    await b.page.locator('[data-testid="cell"][data-state="denoising"]').first().waitFor({ timeout: 60_000 });
    await b.page.getByTestId('on-switch').selectOption('rerun');
    await b.page.getByTestId('model-kind').selectOption('tiny');
    await b.page.getByTestId('load-model').click();
    await waitForCount(doneCells(), 8);
    const [image] = (await storedImages(b.page)).filter((m) => m.prompt === 'rerun me');
    expect(image.modelId).toMatch(/\/tiny-sd3\/$/);
    await b.page.getByTestId('on-switch').selectOption('finish');
  });

  it('2 long requests sent while a load runs wait for it and finish on the new model', async () => {
    // a slow link: the transformer's weights take 4 s to start arriving
    server.faults.set('/acme/slow/resolve/main/transformer/model.onnx_data', { delayMs: 4000 });
    await b.page.getByTestId('model-kind').selectOption('hub');
    await b.page.getByTestId('hub-repo').fill('acme/slow');
    await b.page.getByTestId('hub-host').fill(server.url);
    await b.page.getByTestId('load-model').click();
    await waitForAttribute(b.page.getByTestId('model-form'), 'data-busy', 'true');
    // sent while the load is under way
    await b.page.getByTestId('prompts').fill('waited for the load\nalso waited');
    await b.page.getByTestId('steps').fill('60');
    await b.page.getByTestId('generate').click();
    await waitForCount(b.page.locator('[data-testid="cell"][data-state="queued"]'), 2);
    expect(await b.page.getByTestId('model-form').getAttribute('data-busy')).toBe('true');
    await waitForCount(doneCells(), 10);
    expect(await label().textContent()).toMatch(/acme\/slow ·/);
    const images = (await storedImages(b.page)).filter((i) => i.prompt.includes('waited'));
    expect(images.map((i) => i.prompt).sort()).toEqual(['also waited', 'waited for the load']);
    expect(images.every((i) => i.modelId === 'acme/slow' && i.steps === 60)).toBe(true);
    expect(await cells().count()).toBe(10);
    expect(await queued()).toBe(0);
  });
});
