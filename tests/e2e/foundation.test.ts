// The foundation in a real browser: the page reports a WebGPU adapter; the tiny
// transformer gives the same output on webgpu as on wasm, in the worker, even
// while the app is loading its model on webgpu at the same time (WebGPU refuses
// two session creates at once: both must go through the device queue); and the
// app generates through the UI on webgpu, matching the Node wasm engine.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openBrowser, waitForText, type BrowserSession } from './chromium.ts';
import { diffFromNode, storedImages } from './page-images.ts';

interface PageApi {
  checkBackends(url: string): Promise<unknown>;
}

describe('foundation in Chromium with WebGPU', () => {
  let b: BrowserSession;
  beforeAll(async () => {
    b = await openBrowser();
    await b.page.goto(inject('baseUrl'));
  });
  afterAll(async () => b?.close());

  it('navigator.gpu yields an adapter and the page says so', async () => {
    const adapter = await b.page.evaluate(async () => {
      const a = await navigator.gpu?.requestAdapter();
      return a ? { vendor: a.info.vendor, maxBufferSize: a.limits.maxBufferSize } : null;
    });
    expect(adapter).not.toBeNull();
    expect(adapter!.maxBufferSize).toBe(1024 ** 3); // SwiftShader's 1 GiB (a real GPU's adapter differs)
    await waitForText(b.page.getByTestId('backend'), /^WebGPU: /);
  });

  it('runs the tiny transformer on webgpu in the worker, matching wasm, while the app loads its model on webgpu', async () => {
    // started at once: the app's own load is still creating its sessions
    const check = await b.page.evaluate(async () => {
      const api = (window as unknown as { __engine: PageApi }).__engine;
      try {
        return await api.checkBackends(new URL('models/tiny-sd3/', location.href).href);
      } catch (e) {
        return { error: JSON.stringify(e) }; // a worker error arrives as a plain object
      }
    });
    expect(check).not.toHaveProperty('error');
    const c = check as { maxAbsDiff: number; maxAbs: number; finite: boolean; shape: number[]; webgpuMs: Record<string, number> };
    console.log('webgpu vs wasm', JSON.stringify(c));
    expect(c.shape).toEqual([2, 16, 8, 8]);
    expect(c.finite).toBe(true);
    expect(c.maxAbs).toBeGreaterThan(0.01);
    expect(c.maxAbsDiff).toBeLessThan(1e-3 * Math.max(1, c.maxAbs));
    await b.page.getByTestId('model-label').filter({ hasText: /webgpu$/ }).waitFor({ timeout: 120_000 });
    expect(await b.page.getByTestId('model-error').count()).toBe(0);
  });

  it('generates two images through the page on webgpu, matching the wasm engine in Node', async () => {
    await b.page.getByTestId('prompts').fill('a lighthouse\na red fox');
    await b.page.getByTestId('steps').fill('2');
    await b.page.getByTestId('seed').fill('7');
    await b.page.getByTestId('generate').click();
    await b.page.locator('[data-testid="cell"][data-state="done"]').nth(1).waitFor({ timeout: 200_000 });
    const images = await storedImages(b.page);
    expect(images).toHaveLength(2);
    for (const img of images) {
      expect(img.backend).toBe('webgpu');
      // fp32 on two backends: a level or two apart at most, not another image
      const { diff, channels } = await diffFromNode(img.png, img);
      console.log(`webgpu vs wasm pixels (${img.prompt}): max diff ${diff}`);
      expect(channels).toBe(4);
      expect(diff).toBeLessThanOrEqual(3);
    }
  });
});
