// Faults as a person meets them in the page: the GPU device is lost mid-
// generation (device.destroy() in the worker), the worker crashes, storage is
// full. Each time the user is told, nothing accepted or stored is lost, and
// interrupted requests finish from their seeds with the images an undisturbed
// run gives (compared with the Node engine on wasm).
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Page } from 'playwright-core';
import { STATE_WAIT_MS, openApp, waitForAttribute, waitForCount, waitForGallery, waitForText, type BrowserSession } from './chromium.ts';
import { diffFromNode, storedImages } from './page-images.ts';

/** Every stored image against the Node engine's image for the same settings. */
async function compareWithNode(page: Page): Promise<{ prompt: string; diff: number }[]> {
  const out = [];
  for (const img of await storedImages(page)) out.push({ prompt: img.prompt, diff: (await diffFromNode(img.png, img)).diff });
  return out;
}

async function submit(page: Page, prompts: string[], steps: number, seed: number) {
  await page.getByTestId('prompts').fill(prompts.join('\n'));
  await page.getByTestId('steps').fill(String(steps));
  await page.getByTestId('seed').fill(String(seed));
  await page.getByTestId('generate').click();
}

const done = (page: Page) => page.locator('[data-testid="cell"][data-state="done"]');

describe('the GPU device is lost mid-generation (webgpu)', () => {
  let b: BrowserSession;
  beforeAll(async () => {
    b = await openApp(inject('baseUrl'), 'webgpu');
  });
  afterAll(async () => b?.close());

  it('the page says so, restarts the engine on a new device, and the requests finish with their images', async () => {
    await submit(b.page, ['lost a', 'lost b'], 12, 31);
    await b.page.locator('[data-testid="cell"][data-state="denoising"]').first().waitFor({ timeout: 120_000 });
    expect(await b.page.evaluate(() => (window as unknown as { __engine: { simulateDeviceLoss(): Promise<boolean> } }).__engine.simulateDeviceLoss())).toBe(true);
    await waitForText(b.page.getByTestId('banner'), /GPU device was lost/);
    await waitForCount(done(b.page), 2).catch(async (e) => {
      console.log('cells at the timeout:', JSON.stringify(await b.page.locator('[data-testid="cell"]').evaluateAll((cs) => cs.map((c) => [c.getAttribute('data-state'), c.textContent]))), 'banner:', await b.page.getByTestId('banner').textContent());
      throw e;
    });
    expect(await b.page.getByTestId('banner').textContent()).toMatch(/restarted and resumed/);
    expect(await b.page.getByTestId('model-label').textContent()).toMatch(/webgpu$/);
    const diffs = await compareWithNode(b.page);
    expect(diffs).toHaveLength(2);
    for (const d of diffs) expect(d.diff, d.prompt).toBeLessThanOrEqual(3); // webgpu vs wasm, fp32
  });
});

describe('worker crash and full storage (wasm)', () => {
  let b: BrowserSession;
  beforeAll(async () => {
    b = await openApp(inject('baseUrl'));
  });
  afterAll(async () => b?.close());

  it('a crashed worker is noticed and restarted, and the durable queue finishes its work', async () => {
    await submit(b.page, ['crash a', 'crash b'], 400, 41);
    await b.page.locator('[data-testid="cell"][data-state="denoising"]').first().waitFor({ timeout: 60_000 });
    await b.page.evaluate(() => (window as unknown as { __engine: { simulateCrash(): Promise<void> } }).__engine.simulateCrash());
    await waitForText(b.page.getByTestId('banner'), /worker crashed/);
    await waitForCount(done(b.page), 2);
    const diffs = await compareWithNode(b.page);
    expect(diffs.map((d) => d.prompt).sort()).toEqual(['crash a', 'crash b']);
    for (const d of diffs) expect(d.diff, d.prompt).toBeLessThanOrEqual(3);
  });

  it('when storage is full the image stays in its cell, downloadable, and is stored once there is room; stored images stay intact', async () => {
    const before = await b.page.getByTestId('gallery-item').count();
    expect(before).toBe(2);
    const cdp = await b.context.newCDPSession(b.page);
    const origin = new URL(inject('baseUrl')).origin;
    await cdp.send('Storage.overrideQuotaForOrigin', { origin, quotaSize: 1 });
    const q = await cdp.send('Storage.getUsageAndQuota', { origin });
    console.log('quota override', JSON.stringify({ usage: q.usage, quota: q.quota, overrideActive: q.overrideActive }));
    // Chrome applies the override with some delay: probe with a write of our own until it is refused
    const probe = () =>
      b.page.evaluate(
        () =>
          new Promise<string>((resolve) => {
            const open = indexedDB.open('quota-probe', 1);
            open.onupgradeneeded = () => open.result.createObjectStore('s');
            open.onerror = () => resolve(open.error?.name ?? 'open failed');
            open.onsuccess = () => {
              const tx = open.result.transaction('s', 'readwrite');
              tx.objectStore('s').put(new Uint8Array(256 * 1024), Math.random());
              tx.oncomplete = () => (open.result.close(), resolve('written'));
              tx.onabort = () => (open.result.close(), resolve(tx.error?.name ?? 'aborted'));
            };
          }),
      );
    // Chrome applies the quota override on its own time and tells no one: a real write is the
    // only way to see it, so this one wait tries writes (each one a state check, not a sleep)
    await expect.poll(probe, { timeout: STATE_WAIT_MS, interval: 500 }).toBe('QuotaExceededError');
    await submit(b.page, ['no room'], 2, 51);
    const cell = b.page.locator('[data-testid="cell"]', { hasText: 'no room' });
    // made, but the quota refused it: the cell keeps it, says so and offers it for download; nothing is dropped
    await waitForAttribute(cell, 'data-unsaved', 'true');
    expect(await cell.getAttribute('data-state')).toBe('done');
    await waitForText(b.page.getByTestId('banner'), /quota exceeded.*earlier images are safe/);
    const [download] = await Promise.all([b.page.waitForEvent('download'), cell.getByTestId('cell-download').click()]);
    const bytes = new Uint8Array(await readFile((await download.path())!));
    expect(Array.from(bytes.subarray(1, 4), (c) => String.fromCharCode(c)).join('')).toBe('PNG');
    expect(await b.page.getByTestId('gallery-item').count()).toBe(before);
    for (const d of await compareWithNode(b.page)) expect(d.diff).toBeLessThanOrEqual(3); // the stored PNGs are whole
    await cdp.send('Storage.overrideQuotaForOrigin', { origin }); // room again
    // the worker stores it on its own once there is room: it joins the gallery, once
    await waitForGallery(b.page, before + 1);
    await waitForAttribute(cell, 'data-unsaved', 'false');
    expect((await storedImages(b.page)).filter((m) => m.prompt === 'no room')).toHaveLength(1);
    await b.page.reload();
    await b.page.getByTestId('model-label').filter({ hasText: /tiny-sd3/ }).waitFor({ timeout: 60_000 });
    await waitForGallery(b.page, before + 1);
    expect(await b.page.evaluate(() => (window as unknown as { __engine: { pending(): Promise<unknown[]> } }).__engine.pending().then((p) => p.length))).toBe(0);
  });
});
