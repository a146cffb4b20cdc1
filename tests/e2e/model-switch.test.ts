// Switching models while work runs, as a person does it in the page: a second
// model loads while 4 requests run, then a load starts from idle and 2 long
// requests are sent during it. Every request ends as documented — an image,
// or a refusal that names the model switch — and none disappears from the
// grid or lingers in the durable queue. Runs on wasm (see journey.test.ts).
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

  it('a load while 4 requests run: they end naming the switch, and stay in view', async () => {
    await b.page.getByTestId('prompts').fill(['one', 'two', 'three', 'four'].map((p) => `running ${p}`).join('\n'));
    await b.page.getByTestId('steps').fill('500');
    await b.page.getByTestId('generate').click();
    await b.page.locator('[data-testid="cell"][data-state="denoising"]').nth(3).waitFor({ timeout: 60_000 });
    const external = new URL('models/tiny-sd3-external/', inject('baseUrl')).href;
    await loadUrl(external);
    await waitForText(label(), 'tiny-sd3-external');
    await waitForCount(b.page.locator('[data-testid="cell"][data-state="failed"]'), 4);
    expect(await cells().count()).toBe(4);
    for (let i = 0; i < 4; i++) {
      expect(await cell(i).getByTestId('cell-error').textContent()).toMatch(/was stopped: the engine switched from model .*tiny-sd3\/ to .*tiny-sd3-external\/ while it ran; run it again/);
    }
    expect(await queued()).toBe(0);
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
    await waitForCount(b.page.locator('[data-testid="cell"][data-state="done"]'), 2);
    expect(await label().textContent()).toMatch(/acme\/slow ·/);
    const images = await storedImages(b.page);
    expect(images.map((i) => i.prompt).sort()).toEqual(['also waited', 'waited for the load']);
    expect(images.every((i) => i.modelId === 'acme/slow' && i.steps === 60)).toBe(true);
    expect(await cells().count()).toBe(6);
    expect(await queued()).toBe(0);
  });
});
