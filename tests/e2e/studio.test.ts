// The studio as a person uses it, in Chromium: settings inside downloaded PNGs,
// a dropped A1111 PNG filling the form, the viewer by keyboard, an X/Y plot and
// its sheet, gallery search / selection / ZIP, Ctrl+Enter, the first-run list,
// themes, a layout with no overlapping control at three widths, and axe-core.
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { decode as decodePng, encode as encodePng } from 'fast-png';
import { unzipSync, strFromU8 } from 'fflate';
import encodeChunks from 'png-chunks-encode';
import extractChunks from 'png-chunks-extract';
import * as tEXt from 'png-chunk-text';
import type { Download, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ImageMetadata } from '../../workers/engine/api/types.ts';
import { parseA1111, pngTextChunks } from '../../workers/engine/png/settings-chunks.ts';
import { openApp, waitForGallery, type BrowserSession } from './chromium.ts';
import { GALLERY_PAGE } from '../../workers/store/image-store.ts';
import { storedImages } from './page-images.ts';

const require = createRequire(import.meta.url);

async function downloaded(page: Page, click: () => Promise<void>): Promise<{ name: string; bytes: Uint8Array }> {
  const [d] = (await Promise.all([page.waitForEvent('download'), click()])) as [Download, void];
  return { name: d.suggestedFilename(), bytes: new Uint8Array(await readFile((await d.path())!)) };
}

/** Every visible control's box; no two may overlap, and none may leave the viewport's width. */
function controlBoxes(page: Page) {
  return page.evaluate(() =>
    [...document.querySelectorAll<HTMLElement>('button, input:not([type=hidden]), select, textarea, a[href], summary')]
      .filter((el) => el.checkVisibility() && !el.hidden && el.getClientRects().length > 0)
      .map((el) => {
        const r = el.getBoundingClientRect();
        return { what: `${el.tagName.toLowerCase()}[${el.dataset.testid ?? el.getAttribute('aria-label') ?? el.textContent?.trim().slice(0, 30)}]`, x: r.x, y: r.y + scrollY, w: r.width, h: r.height };
      }),
  );
}

async function axe(page: Page) {
  // evaluated through the DevTools protocol, so the page's CSP (no inline script) does not block it
  await page.evaluate(await readFile(require.resolve('axe-core/axe.min.js'), 'utf8'));
  return page.evaluate(async () => {
    const r = await (window as unknown as { axe: { run(ctx: Document, o: object): Promise<{ violations: { id: string; impact: string; nodes: { target: string[] }[] }[] }> } }).axe.run(document, { resultTypes: ['violations'] });
    return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
  });
}

describe('the studio in the page', () => {
  let b: BrowserSession;
  const done = () => b.page.locator('[data-testid="cell"][data-state="done"]');
  const value = (id: string) => b.page.getByTestId(id).inputValue();

  beforeAll(async () => {
    b = await openApp(inject('baseUrl'), 'wasm');
  });
  afterAll(async () => b?.close());

  it('says the built-in model is random weights and fills the Hub form with a real model in one click', async () => {
    const first = b.page.getByTestId('first-run');
    expect(await first.textContent()).toMatch(/random weights.*noise/s);
    const models = JSON.parse(await readFile(new URL('../../src/data/real-models.json', import.meta.url), 'utf8')).models as { repo: string }[];
    expect(await first.getByTestId('real-model').count()).toBe(models.length);
    // SwiftShader has no shader-f16: the list says so
    expect(await first.getByTestId('needs-f16').first().textContent()).toBe('needs shader-f16 (this GPU lacks it)');
    await first.getByTestId('fill-hub').nth(1).click();
    expect(await value('model-kind')).toBe('hub');
    expect(await value('hub-repo')).toBe(models[1].repo);
    expect(await b.page.evaluate(() => (document.activeElement as HTMLElement).dataset.testid)).toBe('hub-repo');
    await b.page.getByTestId('model-kind').selectOption('tiny');
  });

  it('Ctrl+Enter generates; a downloaded PNG carries `parameters` with the stored Seed and Steps; the tab shows progress', async () => {
    await b.page.getByTestId('prompts').fill('studio one\nstudio two');
    await b.page.getByTestId('negative').fill('fog, rain');
    await b.page.getByTestId('steps').fill('40');
    await b.page.getByTestId('seed').fill('900');
    await b.page.getByTestId('prompts').press('Control+Enter');
    await b.page.waitForFunction(() => /^[0-2]\/2 · SD3 WebGPU$/.test(document.title));
    await done().nth(1).waitFor({ timeout: 120_000 });
    await b.page.waitForFunction(() => document.title === 'SD3 WebGPU');
    expect(await b.page.getByTestId('overall-text').textContent()).toBe('2/2 images · done');
    // the gallery's download link for "studio two" gives its PNG, settings inside
    const card = b.page.locator('[data-testid="gallery-item"]', { hasText: 'studio two' });
    const id = (await card.getAttribute('data-id'))!;
    const [stored] = await storedImages(b.page, [id]);
    const file = await downloaded(b.page, () => card.getByTestId('gallery-download').click());
    expect(file.name).toBe(`sd3-${stored.seed}-${id.slice(0, 8)}.png`);
    const parameters = pngTextChunks(file.bytes).get('parameters')!;
    expect(parameters).toBe(`studio two\nNegative prompt: fog, rain\nSteps: 40, Sampler: Euler (flow match), CFG scale: ${stored.guidance}, Seed: ${stored.seed}, Size: 64x64, Model: ${JSON.stringify(stored.modelId)}`);
    expect(parseA1111(parameters).settings).toMatchObject({ seed: 901, steps: 40 });
    expect(stored).toMatchObject({ seed: 901, steps: 40 });
    expect(JSON.parse(pngTextChunks(file.bytes).get('sd3-webgpu')!)).toMatchObject({ id, seed: 901, steps: 40, prompt: 'studio two' });
  });

  it('a dropped PNG with an A1111 `parameters` chunk fills the form and names what it could not use; a pasted one of ours fills it exactly', async () => {
    const text = 'a castle on a hill\nNegative prompt: people, cars\nSteps: 12, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 424242, Size: 96x64, Model hash: abc123, Model: sd3_medium';
    const pixels = encodePng({ width: 4, height: 4, data: new Uint8Array(64).fill(90), channels: 4, depth: 8 });
    const chunks = extractChunks(pixels);
    const png = encodeChunks([chunks[0], tEXt.encode('parameters', text), ...chunks.slice(1)]);
    await b.page.evaluate((bytes) => {
      const dt = new DataTransfer();
      dt.items.add(new File([Uint8Array.from(bytes)], 'from-a1111.png', { type: 'image/png' }));
      document.querySelector('main')!.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
    }, Array.from(png));
    await b.page.getByTestId('form-notice').filter({ hasText: 'from-a1111.png' }).waitFor();
    expect([await value('prompts'), await value('negative'), await value('seed'), await value('steps'), await value('guidance'), await value('width'), await value('height')]).toEqual(['a castle on a hill', 'people, cars', '424242', '12', '6.5', '96', '64']);
    expect(await b.page.getByTestId('form-unused').locator('li').allTextContents()).toEqual(['Sampler: DPM++ 2M Karras (this app samples with Euler (flow match))', 'Model hash: abc123', 'Model: sd3_medium (the loaded model is ' + (await storedImages(b.page))[0].modelId + ')']);
    // one of our own PNGs, pasted: its JSON chunk gives the exact settings
    const [ours] = await storedImages(b.page);
    await b.page.evaluate((bytes) => {
      const dt = new DataTransfer();
      dt.items.add(new File([Uint8Array.from(bytes)], 'ours.png', { type: 'image/png' }));
      document.body.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    }, ours.png);
    await b.page.getByTestId('form-notice').filter({ hasText: 'ours.png (its sd3-webgpu settings)' }).waitFor();
    expect([await value('prompts'), await value('negative'), await value('seed'), await value('steps'), await value('guidance')]).toEqual([ours.prompt, ours.negativePrompt, String(ours.seed), String(ours.steps), String(ours.guidance)]);
    expect(await b.page.getByTestId('form-unused').count()).toBe(0);
    // a PNG without settings: a clear message, the form as it was
    await b.page.getByTestId('png-file').setInputFiles({ name: 'plain.png', mimeType: 'image/png', buffer: Buffer.from(pixels) });
    await b.page.getByTestId('form-notice').filter({ hasText: 'plain.png carries no generation settings' }).waitFor();
    expect(await value('prompts')).toBe(ours.prompt);
  });

  it('the viewer opens on a click, moves with the arrows, closes with Esc and gives focus back', async () => {
    const opener = b.page.getByTestId('gallery-open').first();
    await opener.focus();
    await b.page.keyboard.press('Enter');
    const viewer = b.page.getByTestId('viewer');
    await viewer.waitFor();
    const ids = await b.page.getByTestId('gallery-item').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.id));
    expect(await viewer.getAttribute('data-id')).toBe(ids[0]);
    await b.page.keyboard.press('ArrowRight');
    await b.page.locator(`[data-testid="viewer"][data-id="${ids[1]}"]`).waitFor();
    await b.page.keyboard.press('ArrowLeft');
    await b.page.locator(`[data-testid="viewer"][data-id="${ids[0]}"]`).waitFor();
    const [first] = await storedImages(b.page, [ids[0]!]);
    expect(await b.page.getByTestId('viewer-seed').textContent()).toBe(String(first.seed));
    expect(await axe(b.page)).toEqual([]);
    await b.page.keyboard.press('Escape');
    await viewer.waitFor({ state: 'detached' });
    expect(await b.page.evaluate(() => (document.activeElement as HTMLElement).dataset.testid)).toBe('gallery-open');
    expect(await b.page.evaluate(() => (document.activeElement!.closest('[data-testid="gallery-item"]') as HTMLElement).dataset.id)).toBe(ids[0]);
    // "Use these settings" fills the form with that image's
    await opener.click();
    await b.page.getByTestId('viewer-use').click();
    await viewer.waitFor({ state: 'detached' });
    expect([await value('prompts'), await value('seed'), await value('steps')]).toEqual([first.prompt, String(first.seed), String(first.steps)]);
  });

  it('a 2×3 X/Y plot (CFG scale × seed) makes 6 images and one labelled sheet PNG of the right size', async () => {
    await b.page.getByTestId('prompts').fill('xy plot');
    await b.page.getByTestId('steps').fill('2');
    await b.page.getByTestId('seed').fill('50');
    await b.page.getByTestId('width').fill('64');
    await b.page.getByTestId('height').fill('64');
    await b.page.getByTestId('xy-x-kind').selectOption('guidance');
    await b.page.getByTestId('xy-x-values').fill('2, 5.5');
    await b.page.getByTestId('xy-y-kind').selectOption('seed');
    await b.page.getByTestId('xy-y-values').fill('+10 ×3');
    const galleryBefore = await b.page.getByTestId('gallery-item').count();
    await b.page.getByTestId('xy-run').click();
    await b.page.locator('[data-testid="xy-cell"][data-state="done"]').nth(5).waitFor({ timeout: 120_000 });
    expect(await b.page.getByTestId('xy-cell').count()).toBe(6);
    await b.page.getByTestId('xy-progress').filter({ hasText: '6/6 cells' }).waitFor();
    // each cell is an ordinary gallery image with its own settings
    await waitForGallery(b.page, galleryBefore + 6);
    const newest = (await storedImages(b.page)).filter((m) => m.prompt === 'xy plot');
    expect(newest.map((m) => `${m.guidance}/${m.seed}`).sort()).toEqual(['2/50', '2/60', '2/70', '5.5/50', '5.5/60', '5.5/70']);
    const sheet = await downloaded(b.page, () => b.page.getByTestId('xy-export').click());
    expect(sheet.name).toBe('sd3-xy-2x3.png');
    const img = decodePng(sheet.bytes);
    // 160 px of row labels + 2 columns of 128 (64-px images drawn at 2×); 32 + 40 px of titles + 3 rows
    expect([img.width, img.height]).toEqual([160 + 2 * 128, 32 + 40 + 3 * 128]);
    const text = pngTextChunks(sheet.bytes);
    expect(parseA1111(text.get('parameters')!).unused).toEqual(['Script: X/Y plot', 'X Type: CFG scale', 'X Values: 2, 5.5', 'Y Type: Seed', 'Y Values: 50, 60, 70']);
    const json = JSON.parse(text.get('sd3-webgpu')!) as { cells: ImageMetadata[] };
    expect(json.cells.map((c) => `${c.guidance}/${c.seed}`)).toEqual(['2/50', '5.5/50', '2/60', '5.5/60', '2/70', '5.5/70']);
    // the sheet exactly: its labels where the layout puts them, drawn as this browser draws that text
    // (titles bold 16 px in the 32-px band, values 14 px in the 40-px band and the 160-px column), and
    // in each 128-px cell the stored image of that cell's CFG scale and seed, each pixel drawn 2×2
    const labels = decodePng(
      Uint8Array.from(
        await b.page.evaluate(async () => {
          const c = new OffscreenCanvas(416, 456);
          const ctx = c.getContext('2d')!;
          ctx.fillStyle = '#ffffff';
          ctx.fillRect(0, 0, 416, 456);
          ctx.fillStyle = '#111111';
          ctx.textBaseline = 'middle';
          const text = (font: string, align: CanvasTextAlign, t: string, x: number, y: number, max: number) => {
            ctx.font = font;
            ctx.textAlign = align;
            ctx.fillText(t, x, y, max);
          };
          text('bold 16px sans-serif', 'center', 'CFG scale', 160 + 128, 16, 256);
          text('bold 16px sans-serif', 'left', '↓ Seed', 8, 16, 144);
          for (const [col, v] of ['2', '5.5'].entries()) text('14px sans-serif', 'center', v, 160 + col * 128 + 64, 52, 120);
          for (const [row, v] of ['50', '60', '70'].entries()) text('14px sans-serif', 'right', v, 152, 72 + row * 128 + 64, 144);
          return Array.from(new Uint8Array(await (await c.convertToBlob({ type: 'image/png' })).arrayBuffer()));
        }),
      ),
    );
    const cellImages = new Map(newest.map((m) => [`${m.guidance}/${m.seed}`, decodePng(Uint8Array.from(m.png))]));
    const region = (x: number, y: number) => (y < 32 ? 'titles' : y < 72 ? (x < 160 ? 'value band, left' : 'column values') : x < 160 ? `row label ${[50, 60, 70][Math.floor((y - 72) / 128)]}` : `cell ${[2, 5.5][Math.floor((x - 160) / 128)]}/${[50, 60, 70][Math.floor((y - 72) / 128)]}`);
    const expected = (x: number, y: number, ch: number): number => {
      if (x < 160 || y < 72) return ch < 3 ? labels.data[(y * labels.width + x) * labels.channels + ch] : 255;
      const cell = cellImages.get(region(x, y).slice('cell '.length))!;
      const [cx, cy] = [((x - 160) % 128) >> 1, ((y - 72) % 128) >> 1];
      return ch < 3 || cell.channels === 4 ? cell.data[(cy * cell.width + cx) * cell.channels + ch] : 255;
    };
    const wrong: Record<string, number> = {};
    for (let y = 0; y < img.height; y++)
      for (let x = 0; x < img.width; x++)
        for (let ch = 0; ch < 4; ch++) {
          const got = ch < img.channels ? img.data[(y * img.width + x) * img.channels + ch] : 255;
          if (got !== expected(x, y, ch)) {
            wrong[region(x, y)] = (wrong[region(x, y)] ?? 0) + 1;
            break;
          }
        }
    expect(wrong, 'pixels that differ, by region of the sheet').toEqual({});
    // a bad axis is named, nothing is sent
    await b.page.getByTestId('xy-x-values').fill('2, lots');
    await b.page.getByTestId('xy-run').click();
    expect(await b.page.getByTestId('xy-error').textContent()).toBe('X axis (CFG scale): "lots" is not a number or a range (a-b)');
  });

  it('the gallery searches by prompt, zips a selection and deletes it', async () => {
    await b.page.getByTestId('gallery-search').fill('studio');
    await waitForGallery(b.page, 2);
    const items = b.page.getByTestId('gallery-item');
    const ids = await items.evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.id!));
    for (const i of [0, 1]) await items.nth(i).getByTestId('gallery-select').check();
    const zip = await downloaded(b.page, () => b.page.getByTestId('gallery-zip').click());
    const files = unzipSync(zip.bytes);
    const pngs = Object.keys(files).filter((f) => f.endsWith('.png')).sort();
    expect(pngs).toHaveLength(2);
    const stored = await storedImages(b.page, ids);
    for (const s of stored) {
      const name = `sd3-${s.seed}-${s.id.slice(0, 8)}.png`;
      expect(Array.from(files[name])).toEqual(s.png);
      expect(JSON.parse(strFromU8(files[name.replace('.png', '.json')])).id).toBe(s.id);
    }
    await b.page.getByTestId('gallery-delete-selected').click();
    await waitForGallery(b.page, 0);
    // the delete reaches storage once its Undo toast has gone
    await b.page.getByTestId('undo-toast').waitFor({ state: 'detached' });
    expect((await storedImages(b.page)).filter((m) => m.prompt.startsWith('studio'))).toEqual([]);
    await b.page.getByTestId('gallery-search').fill('');
    await waitForGallery(b.page, (await storedImages(b.page)).length);
  });

  it('follows the colour scheme, and no control overlaps another or leaves the page at 1440, 1024 and 390 px', async () => {
    const bg = () => b.page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    await b.page.emulateMedia({ colorScheme: 'dark' });
    const dark = await bg();
    await b.page.emulateMedia({ colorScheme: 'light' });
    expect([dark, await bg()]).toEqual(['rgb(15, 17, 21)', 'rgb(244, 245, 247)']);
    // the page as it opens: scrolled past the form, a pinned Generate floats over the content on purpose
    await b.page.evaluate(() => window.scrollTo(0, 0));
    await b.page.getByTestId('generate-pinned').waitFor({ state: 'detached' });
    for (const width of [1440, 1024, 390]) {
      await b.page.setViewportSize({ width, height: 900 });
      const boxes = await controlBoxes(b.page);
      expect(boxes.length).toBeGreaterThan(40);
      const overlaps: string[] = [];
      for (const [i, a] of boxes.entries()) {
        if (a.x < -0.5 || a.x + a.w > width + 0.5) overlaps.push(`${a.what} leaves the page at ${width}px`);
        for (const c of boxes.slice(i + 1)) {
          const ox = Math.min(a.x + a.w, c.x + c.w) - Math.max(a.x, c.x);
          const oy = Math.min(a.y + a.h, c.y + c.h) - Math.max(a.y, c.y);
          if (ox > 0.5 && oy > 0.5) overlaps.push(`${a.what} overlaps ${c.what} at ${width}px`);
        }
      }
      expect(overlaps).toEqual([]);
      expect(await b.page.evaluate(() => document.documentElement.scrollWidth)).toBe(width);
    }
    await b.page.setViewportSize({ width: 1280, height: 900 });
  });

  it('the gallery opens on one page of 48 and shows older ones on request, none twice, even when many share a millisecond', async () => {
    const total = await b.page.evaluate(async () => {
      const db = await new Promise<IDBDatabase>((ok, fail) => {
        const r = indexedDB.open('sd3-webgpu');
        r.onsuccess = () => ok(r.result);
        r.onerror = () => fail(r.error);
      });
      const all = await new Promise<{ png: Blob; metadata: Record<string, unknown> }[]>((ok) => {
        const q = db.transaction('images').objectStore('images').getAll();
        q.onsuccess = () => ok(q.result);
      });
      const tx = db.transaction('images', 'readwrite');
      const createdAt = new Date(Date.UTC(2020, 0, 1)).toISOString(); // older than the rest, all in one millisecond
      for (let i = 0; i < 60; i++) {
        const id = `old-${String(i).padStart(2, '0')}`;
        tx.objectStore('images').put({ id, png: all[0].png, createdAt, metadata: { ...all[0].metadata, id, createdAt, prompt: `old ${i}` } });
      }
      await new Promise((ok) => (tx.oncomplete = ok));
      db.close();
      return all.length + 60;
    });
    await b.page.reload();
    // the page's own count says when each page is in: no timer decides
    await waitForGallery(b.page, GALLERY_PAGE);
    for (let shown = GALLERY_PAGE; shown < total; ) {
      await b.page.getByTestId('gallery-more').click();
      shown = Math.min(total, shown + GALLERY_PAGE);
      await waitForGallery(b.page, shown);
    }
    expect(await b.page.getByTestId('gallery-more').count()).toBe(0);
    const ids = await b.page.getByTestId('gallery-item').evaluateAll((els) => els.map((e) => (e as HTMLElement).dataset.id!));
    expect(ids).toHaveLength(total);
    expect(new Set(ids).size).toBe(total);
    // newest first: the 60 old ones last
    expect(ids.slice(-60).every((id) => id.startsWith('old-'))).toBe(true);
  });

  it('axe-core finds no serious or critical violation in the main view, light or dark', async () => {
    expect(await axe(b.page)).toEqual([]);
    await b.page.emulateMedia({ colorScheme: 'dark' });
    expect(await axe(b.page)).toEqual([]);
    await b.page.emulateMedia({ colorScheme: 'light' });
    expect(b.errors).toEqual([]);
  });
});
