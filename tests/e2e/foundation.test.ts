// The foundation in a real browser: the page reports a WebGPU adapter, and the
// tiny transformer gives the same output on webgpu as on wasm, in the worker.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openBrowser, type BrowserSession } from './chromium.ts';

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
    expect(adapter!.maxBufferSize).toBeGreaterThan(0);
    await expect.poll(() => b.page.getByTestId('backend').textContent(), { timeout: 60_000 }).toMatch(/^WebGPU: /);
  });

  it('runs the tiny transformer on webgpu in the worker, matching wasm', async () => {
    const check = await b.page.evaluate(async () => {
      const api = (window as unknown as { __engine: { checkBackends(url: string): Promise<unknown> } }).__engine;
      return api.checkBackends(new URL('models/tiny-sd3/', location.href).href);
    });
    const c = check as { maxAbsDiff: number; maxAbs: number; finite: boolean; shape: number[]; webgpuMs: Record<string, number> };
    console.log('webgpu vs wasm', JSON.stringify(c));
    expect(c.shape).toEqual([2, 16, 8, 8]);
    expect(c.finite).toBe(true);
    expect(c.maxAbs).toBeGreaterThan(0.01);
    expect(c.maxAbsDiff).toBeLessThan(1e-3 * Math.max(1, c.maxAbs));
  });
});
