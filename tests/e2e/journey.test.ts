// The app as a person uses it, in Chromium: load the tiny model, run a grid of
// prompts, find them in the gallery after a reload, reproduce one exactly,
// cancel a cell, see a bad step count named next to its field, and reload
// mid-generation to watch the queued work finish. The journey runs on the wasm
// provider in the same worker code (WebGPU on SwiftShader compiles every new
// shape for seconds; foundation.test.ts covers webgpu against wasm).
import { mkdir } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { decode as decodePng } from 'fast-png';
import { pngTextChunks } from '../../workers/engine/png/settings-chunks.ts';
import { loadTinyWasmEngine, maxPixelDiff } from '../helpers/tiny-engine.ts';
import { STATE_WAIT_MS, holdTransformerAfter, openBrowser, waitForAttribute, waitForCount, waitForGallery, waitForText, type BrowserSession } from './chromium.ts';

const ARTIFACTS = 'test-results';

describe('the journey in the page', () => {
  let b: BrowserSession;
  let url: string;
  beforeAll(async () => {
    b = await openBrowser();
    url = `${inject('baseUrl')}?backend=wasm`;
    await b.page.goto(url);
    await b.page.getByTestId('model-label').filter({ hasText: /tiny-sd3/ }).waitFor({ timeout: 60_000 });
  });
  afterAll(async () => b?.close());

  const cells = () => b.page.getByTestId('cell');
  const doneCells = () => b.page.locator('[data-testid="cell"][data-state="done"]');
  const fill = async (testId: string, value: string) => b.page.getByTestId(testId).fill(value);

  it('loads the tiny model and shows backend and status', async () => {
    await waitForText(b.page.getByTestId('status-backend'), /^wasm$/);
    expect(await b.page.getByTestId('backend').textContent()).toMatch(/WebGPU: .*running on wasm by choice/);
  });

  it('runs a grid of 6 prompts side by side and shows 6 images', async () => {
    const prompts = ['a lighthouse', 'a red fox', 'a blue car', 'a green tree', 'a cup of tea', 'a mountain lake'];
    await fill('prompts', prompts.join('\n'));
    await fill('steps', '30');
    await fill('seed', '100');
    await b.page.getByTestId('generate').click();
    await waitForCount(doneCells(), 6);
    // several generated together, not one by one: a transformer run carried the rows of 4 or more (guided: 2 rows each)
    const status = await b.page.evaluate(() => (window as unknown as { __engine: { status(): Promise<{ maxRowsPerRun: number }> } }).__engine.status());
    expect(status.maxRowsPerRun).toBeGreaterThanOrEqual(8);
    await mkdir(ARTIFACTS, { recursive: true });
    await b.page.getByTestId('grid').screenshot({ path: `${ARTIFACTS}/grid.png` });
    // side by side: six image boxes of the image's size, none overlapping another
    const boxes = await Promise.all((await b.page.getByTestId('cell-image').all()).map((img) => img.boundingBox()));
    expect(boxes).toHaveLength(6);
    for (const [i, a] of boxes.entries()) {
      expect(a!.width).toBeGreaterThanOrEqual(64);
      expect(a!.height).toBeGreaterThanOrEqual(64);
      for (const c of boxes.slice(i + 1)) expect(a!.x + a!.width <= c!.x || c!.x + c!.width <= a!.x || a!.y + a!.height <= c!.y || c!.y + c!.height <= a!.y).toBe(true);
    }
    // each cell shows its own prompt's image: the pixels drawn in the cell equal the Node wasm engine's
    // image for that prompt with the settings the form sent (seeds count up from the form's, one per line)
    const asked = { negativePrompt: await b.page.getByTestId('negative').inputValue(), guidance: Number(await b.page.getByTestId('guidance').inputValue()), width: Number(await b.page.getByTestId('width').inputValue()), height: Number(await b.page.getByTestId('height').inputValue()) };
    const shown = await b.page.$$eval('[data-testid="cell"]', (els) =>
      els.map((cell) => {
        const img = cell.querySelector<HTMLImageElement>('[data-testid="cell-image"]')!;
        const c = document.createElement('canvas');
        c.width = img.naturalWidth;
        c.height = img.naturalHeight;
        const ctx = c.getContext('2d')!;
        ctx.drawImage(img, 0, 0);
        return { text: cell.textContent ?? '', width: c.width, height: c.height, rgba: Array.from(ctx.getImageData(0, 0, c.width, c.height).data) };
      }),
    );
    expect(shown).toHaveLength(6);
    const node = await loadTinyWasmEngine();
    const diffs: Record<string, number> = {};
    for (const [i, prompt] of prompts.entries()) {
      const cell = shown.filter((s) => s.text.includes(prompt));
      expect(cell, prompt).toHaveLength(1);
      expect([cell[0].width, cell[0].height], prompt).toEqual([asked.width, asked.height]);
      const ref = await node.generate({ prompt, seed: 100 + i, steps: 30, ...asked });
      diffs[prompt] = maxPixelDiff(Uint8ClampedArray.from(cell[0].rgba), ref.rgba);
    }
    console.log('grid cells vs the Node wasm engine, max channel difference:', JSON.stringify(diffs));
    expect(diffs).toEqual(Object.fromEntries(prompts.map((p) => [p, 0])));
  });

  it('finds them in the gallery after a reload, and reproduce gives identical pixels', async () => {
    await b.page.reload();
    await waitForGallery(b.page, 6);
    await waitForText(b.page.getByTestId('model-label'), /tiny-sd3/);
    const first = b.page.getByTestId('gallery-item').first();
    const originalId = await first.getAttribute('data-id');
    await first.getByTestId('gallery-reproduce').click();
    await waitForGallery(b.page, 7);
    const same = await b.page.evaluate(async (id) => {
      const api = (window as unknown as { __engine: { getImage(id: string): Promise<{ png: Blob; metadata: { seed: number; prompt: string } }>; listImages(q: object): Promise<{ id: string }[]> } }).__engine;
      const original = await api.getImage(id!);
      const newest = (await api.listImages({ limit: 1 }))[0];
      const copy = await api.getImage(newest.id);
      const bytes = async (b: Blob) => Array.from(new Uint8Array(await b.arrayBuffer()));
      return { differentIds: newest.id !== id, samePrompt: copy.metadata.prompt === original.metadata.prompt, sameSeed: copy.metadata.seed === original.metadata.seed, pngs: [await bytes(original.png), await bytes(copy.png)] };
    }, originalId);
    const { pngs, ...rest } = same;
    expect(rest).toEqual({ differentIds: true, samePrompt: true, sameSeed: true });
    // the same pixels and the same settings; the PNGs differ only in the JSON chunk (id, time)
    const [a, b2] = pngs.map((p) => Uint8Array.from(p));
    expect(Array.from(decodePng(b2).data)).toEqual(Array.from(decodePng(a).data));
    expect(pngTextChunks(b2).get('parameters')).toBe(pngTextChunks(a).get('parameters'));
  });

  it('cancels one running cell while the others finish; a bad step count is named next to its field', async () => {
    const before = await doneCells().count();
    await fill('prompts', ['slow one', 'slow two', 'slow three'].join('\n'));
    await fill('steps', '200');
    await b.page.getByTestId('generate').click();
    const target = b.page.locator('[data-testid="cell"]', { hasText: 'slow two' });
    await waitForAttribute(target, 'data-state', 'denoising');
    await target.getByTestId('cell-cancel').click();
    await waitForAttribute(target, 'data-state', 'cancelled');
    // bad input while the others run
    await fill('prompts', 'never runs');
    await fill('steps', '0');
    await b.page.getByTestId('generate').click();
    await waitForText(b.page.getByTestId('error-steps'), /steps: expected an integer in 1\.\.500, got 0/);
    await waitForCount(doneCells(), before + 2);
    expect(await b.page.locator('[data-testid="cell"]', { hasText: 'never runs' }).count()).toBe(0);
  });

  it('reloading mid-generation resumes the queued work, which finishes', async () => {
    const galleryBefore = await b.page.getByTestId('gallery-item').count();
    await fill('prompts', ['resume a', 'resume b', 'resume c'].join('\n'));
    await fill('steps', '150');
    await fill('seed', '4242');
    // 100 of the 150 steps at most: none can finish before the reload, however late the old page goes
    await holdTransformerAfter(b.page, 100);
    await b.page.getByTestId('generate').click();
    await b.page.locator('[data-testid="cell"][data-state="denoising"]').first().waitFor({ timeout: STATE_WAIT_MS });
    await b.page.reload();
    // after the reload the grid shows the resumed requests and they complete
    await waitForCount(cells(), 3);
    await waitForCount(doneCells(), 3);
    await waitForGallery(b.page, galleryBefore + 3);
    const seeds = await b.page.$$eval('[data-testid="gallery-item"] .meta', (els) => els.map((e) => e.textContent ?? ''));
    for (const s of [4242, 4243, 4244]) expect(seeds.some((t) => t.includes(`seed ${s} `))).toBe(true);
    expect(b.errors.slice(0, 5)).toEqual([]);
  });
});
