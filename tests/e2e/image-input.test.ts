// Image to image and inpainting from the page, as a person does it, on WebGPU
// (SwiftShader here): an image dropped on the prompt form's Image slot (or
// opened, pasted, or a stored image's "Use as input"), its strength set, a mask
// painted on it with the mouse, Generate. The stored image's metadata names the
// very files the page sent (their SHA-256), and its pixels equal the Node wasm
// engine's image for the same request; the mask tools (undo, erase, invert,
// clear) change the mask as they say; a strength axis in the X/Y plot; an A1111
// img2img PNG's "Denoising strength" fills the strength field.
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { mkdir, readFile } from 'node:fs/promises';
import { decode as decodePng, encode as encodePng } from 'fast-png';
import encodeChunks from 'png-chunks-encode';
import extractChunks from 'png-chunks-extract';
import * as tEXt from 'png-chunk-text';
import type { Download, Locator } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { openApp, waitForAttribute, waitForCount, waitForText, type BrowserSession } from './chromium.ts';
import { diffFromNodeImage, storedImages, type PageImage } from './page-images.ts';

const require = createRequire(import.meta.url);
const INIT = new URL('../fixtures/real-exports/reference/inputs/init-64.png', import.meta.url);
const sha256 = (b: Uint8Array | number[]) => createHash('sha256').update(Uint8Array.from(b)).digest('hex');
/** What the form is filled with below: the Node engine is asked the same, not what the page stored. */
const ASKED = { prompt: 'a red cube on a blue table', negativePrompt: 'blurry', seed: 42, steps: 4, guidance: 3, width: 64, height: 64 };

describe('image to image and inpainting from the page (webgpu)', () => {
  let b: BrowserSession;
  let init: Uint8Array;
  const id = (testId: string) => b.page.getByTestId(testId);
  const done = () => b.page.locator('[data-testid="cell"][data-state="done"]');
  const slot = () => id('image-slot');
  const canvas = () => id('mask-canvas');
  /** The stored image of the newest cell (the grid's last), once it is done. */
  let cellsDone = 0;
  async function generate(): Promise<PageImage> {
    await id('generate').click();
    cellsDone++;
    await waitForCount(done(), cellsDone);
    const cellId = (await done().last().getAttribute('data-id'))!;
    const [img] = await storedImages(b.page, [cellId]);
    return img;
  }

  /** A drop of one file on `target`, as the browser dispatches a drag-and-drop of a file. */
  async function dropFile(target: Locator, bytes: Uint8Array, name: string, type: string) {
    const dataTransfer = await b.page.evaluateHandle(
      ({ bytes, name, type }) => {
        const dt = new DataTransfer();
        dt.items.add(new File([Uint8Array.from(bytes)], name, { type }));
        return dt;
      },
      { bytes: Array.from(bytes), name, type },
    );
    await target.dispatchEvent('drop', { dataTransfer });
    await dataTransfer.dispose();
  }

  /** The painted pixels as the page counts them, and as its canvas shows them (alpha above 0). */
  async function white(): Promise<number> {
    const attr = Number(await canvas().getAttribute('data-white'));
    const drawn = await canvas().evaluate((c: HTMLCanvasElement) => {
      const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n;
    });
    expect(drawn, 'the canvas shows what the page counts').toBe(attr);
    return attr;
  }

  /** A mouse stroke through image pixels (x, y) of the 64×64 input. */
  async function paint(points: [number, number][]) {
    await canvas().scrollIntoViewIfNeeded();
    const box = (await canvas().boundingBox())!;
    const at = ([x, y]: [number, number]) => [box.x + ((x + 0.5) * box.width) / 64, box.y + ((y + 0.5) * box.height) / 64] as const;
    await b.page.mouse.move(...at(points[0]));
    await b.page.mouse.down();
    for (const p of points.slice(1)) await b.page.mouse.move(...at(p), { steps: 6 });
    await b.page.mouse.up();
  }

  /** The mask PNG the page sends, through its "Download the mask" button. */
  async function downloadMask(): Promise<Uint8Array> {
    const [d] = (await Promise.all([b.page.waitForEvent('download'), id('mask-download').click()])) as [Download, void];
    expect(d.suggestedFilename()).toBe('mask-64x64.png');
    return new Uint8Array(await readFile((await d.path())!));
  }

  /** An 80×48 JPEG, made by this browser's own encoder. */
  const makeJpeg = async () =>
    Uint8Array.from(
      await b.page.evaluate(async () => {
        const c = new OffscreenCanvas(80, 48);
        const ctx = c.getContext('2d')!;
        ctx.fillStyle = '#3366cc';
        ctx.fillRect(0, 0, 80, 48);
        ctx.fillStyle = '#cc3333';
        ctx.fillRect(20, 10, 30, 20);
        return Array.from(new Uint8Array(await (await c.convertToBlob({ type: 'image/jpeg', quality: 0.9 })).arrayBuffer()));
      }),
    );

  /** The SHA-256 of the PNG file the Image slot holds now, as the page states it. */
  const slotSha = async () => (await id('image-info').getAttribute('data-sha256'))!;
  /** The size of the image the slot shows. */
  const shown = () => id('image-preview').evaluate((img: HTMLImageElement) => (img.decode().then(() => [img.naturalWidth, img.naturalHeight])));

  beforeAll(async () => {
    init = new Uint8Array(await readFile(INIT));
    b = await openApp(inject('baseUrl'), 'webgpu');
  });
  afterAll(async () => b?.close());

  let inpainted: PageImage;
  let maskBytes: Uint8Array;

  it('a dropped image, a strength and a mask painted with the mouse make an inpainting request; the stored image names those files and equals the Node engine’s', async () => {
    expect(await slot().getAttribute('data-state')).toBe('empty');
    await id('prompts').fill('a red cube on a blue table');
    await id('negative').fill('blurry');
    await id('seed').fill('42');
    await id('steps').fill('4');
    await id('guidance').fill('3');
    await dropFile(slot(), init, 'init-64.png', 'image/png');
    await waitForAttribute(slot(), 'data-state', 'filled');
    const info = id('image-info');
    expect([await info.getAttribute('data-width'), await info.getAttribute('data-height'), await info.getAttribute('data-converted-from')]).toEqual(['64', '64', '']);
    // the PNG is kept byte for byte; width and height take the image's size
    expect(await slotSha()).toBe(sha256(init));
    expect([await id('width').inputValue(), await id('height').inputValue()]).toEqual(['64', '64']);
    // strength: the slider starts at the engine's default; the number field sets it
    expect(await id('strength').inputValue()).toBe('0.6');
    await id('strength-number').fill('0.75');
    expect(await id('strength').inputValue()).toBe('0.75');
    // a bigger brush, by keyboard on its slider
    expect(await white()).toBe(0);
    await id('mask-brush-size').focus();
    await b.page.keyboard.press('ArrowRight');
    await b.page.keyboard.press('ArrowRight');
    expect(await id('mask-brush-size').inputValue()).toBe('6');
    await paint([[12, 14], [30, 22], [44, 40]]);
    const painted = await white();
    expect(painted).toBeGreaterThan(100);
    expect(painted).toBeLessThan(64 * 64 / 2);
    expect(await id('mask-status').textContent()).toMatch(/Inpainting: \d+% of the image/);
    // the mask as the page sends it: a 64×64 black-and-white PNG, opaque, white where painted
    await mkdir('test-results', { recursive: true });
    await id('image-slot').screenshot({ path: 'test-results/image-slot.png' });
    maskBytes = await downloadMask();
    const mask = decodePng(maskBytes);
    expect([mask.width, mask.height, mask.channels, mask.depth]).toEqual([64, 64, 1, 8]);
    expect(new Set(mask.data)).toEqual(new Set([0, 255]));
    expect(Array.from(mask.data).filter((v) => v === 255).length).toBe(painted);

    inpainted = await generate();
    expect(inpainted).toMatchObject({ ...ASKED, strength: 0.75, backend: 'webgpu' });
    expect(inpainted.image).toEqual({ sha256: sha256(init), width: 64, height: 64 });
    expect(inpainted.mask).toEqual({ sha256: sha256(maskBytes), width: 64, height: 64 });
    // the grid's cell shows the input beside the result
    const cell = done().last();
    await waitForText(cell.getByTestId('cell-input'), 'masked');
    expect(await cell.getByTestId('cell-input-image').evaluate((img: HTMLImageElement) => [img.naturalWidth, img.naturalHeight])).toEqual([64, 64]);
    await b.page.locator('#prompt-form').screenshot({ path: 'test-results/image-form.png' });
    await id('grid').screenshot({ path: 'test-results/image-grid.png' });
    const { diff, channels } = await diffFromNodeImage(inpainted.png, { ...ASKED, image: init, mask: maskBytes, strength: 0.75 });
    console.log('inpainting, webgpu vs the Node wasm engine, max channel difference:', diff);
    expect(channels).toBe(4);
    expect(diff).toBeLessThanOrEqual(2);
  });

  it('the mask tools: undo gives the previous mask back (over 20 steps), erase paints black, invert flips, clear empties; a cleared mask sends plain image to image', async () => {
    const first = await white();
    await paint([[50, 4], [60, 10]]);
    const two = await white();
    expect(two).toBeGreaterThan(first);
    await id('mask-undo').click();
    expect(await white()).toBe(first);
    // invert flips every pixel; undo flips it back
    await id('mask-invert').click();
    expect(await white()).toBe(64 * 64 - first);
    expect(await downloadMask().then((m) => Array.from(decodePng(m).data).filter((v) => v === 255).length)).toBe(64 * 64 - first);
    await id('mask-undo').click();
    expect(await white()).toBe(first);
    expect(sha256(await downloadMask())).toBe(sha256(maskBytes));
    // erase paints "keep" over the stroke
    await id('mask-erase').click();
    expect(await id('mask-erase').getAttribute('aria-pressed')).toBe('true');
    await paint([[12, 14], [30, 22]]);
    const erased = await white();
    expect(erased).toBeLessThan(first);
    await id('mask-undo').click();
    expect(await white()).toBe(first);
    await id('mask-erase').click();
    expect(await id('mask-erase').getAttribute('aria-pressed')).toBe('false');
    // 22 dots, each its own step; 20 undos go back to the mask after the second
    const counts = [first];
    for (let i = 0; i < 22; i++) {
      await paint([[2 + (i % 11) * 5, 52 + Math.floor(i / 11) * 8]]);
      counts.push(await white());
      expect(counts[i + 1], `dot ${i}`).toBeGreaterThan(counts[i]);
    }
    for (let i = 0; i < 20; i++) await id('mask-undo').click();
    expect(await white()).toBe(counts[2]);
    // clear empties it: no mask, and nothing to download
    await id('mask-clear').click();
    expect(await white()).toBe(0);
    expect(await id('mask-status').textContent()).toMatch(/No mask/);
    expect(await id('mask-download').isDisabled()).toBe(true);
    await id('mask-undo').click();
    expect(await white()).toBe(counts[2]);
    await id('mask-clear').click();

    const plain = await generate();
    expect(plain).toMatchObject({ seed: 42, steps: 4, width: 64, height: 64, strength: 0.75 });
    expect(plain.image).toEqual({ sha256: sha256(init), width: 64, height: 64 });
    expect(plain.mask).toBeUndefined();
    expect(await done().last().getByTestId('cell-input').getAttribute('data-mask')).toBe('false');
    const { diff } = await diffFromNodeImage(plain.png, { ...ASKED, image: init, strength: 0.75 });
    console.log('image to image, webgpu vs the Node wasm engine, max channel difference:', diff);
    expect(diff).toBeLessThanOrEqual(2);
  });

  it('Remove empties the slot; Open, paste and a dropped JPEG fill it (the JPEG converted to PNG in the page); a file that is no image is refused', async () => {
    await id('image-remove').click();
    await waitForAttribute(slot(), 'data-state', 'empty');
    expect(await canvas().count()).toBe(0);
    // "open": the file input
    await id('image-input').setInputFiles({ name: 'opened.png', mimeType: 'image/png', buffer: Buffer.from(init) });
    await waitForAttribute(slot(), 'data-state', 'filled');
    expect(await id('image-info').textContent()).toContain('opened.png');
    expect(await slotSha()).toBe(sha256(init));
    // a new image starts with an empty mask and no undo steps
    expect(await white()).toBe(0);
    expect(await canvas().getAttribute('data-undo')).toBe('0');
    // a JPEG the browser decodes: converted to a PNG of its size
    const jpeg = await makeJpeg();
    await dropFile(slot(), jpeg, 'photo.jpg', 'image/jpeg');
    await waitForText(id('image-info'), 'photo.jpg');
    expect(await id('image-info').getAttribute('data-converted-from')).toBe('image/jpeg');
    expect(await id('image-info').textContent()).toContain('JPEG converted to PNG');
    expect(await shown()).toEqual([80, 48]);
    expect(await slotSha()).not.toBe(sha256(jpeg));
    // the size fields follow, in the model's multiples
    expect([await id('width').inputValue(), await id('height').inputValue()]).toEqual(['80', '48']);
    // a file that is not an image: said so, the slot as it was
    await dropFile(slot(), new TextEncoder().encode('not an image'), 'notes.png', 'image/png');
    await waitForText(id('image-error'), 'notes.png');
    expect(await id('image-info').textContent()).toContain('photo.jpg');
    // a paste while the focus is in the slot
    await id('image-open').focus();
    await b.page.evaluate((bytes) => {
      const dt = new DataTransfer();
      dt.items.add(new File([Uint8Array.from(bytes)], 'image.png', { type: 'image/png' }));
      document.activeElement!.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }));
    }, Array.from(init));
    await waitForText(id('image-info'), 'the pasted image');
    expect(await b.page.locator('[data-testid="image-error"]').count()).toBe(0);
    expect(await slotSha()).toBe(sha256(init));
  });

  it('"Use as input" in the viewer puts that stored image in the slot: the next request’s image is its PNG; the gallery’s does the same', async () => {
    const item = b.page.locator(`[data-testid="gallery-item"][data-id="${inpainted.id}"]`);
    await item.getByTestId('gallery-open').click();
    await waitForAttribute(id('viewer'), 'data-id', inpainted.id);
    expect(await id('viewer-strength').textContent()).toBe('0.75');
    await id('viewer').getByTestId('use-as-input').click();
    await id('viewer').waitFor({ state: 'detached' });
    await waitForText(id('image-info'), `image ${inpainted.id.slice(0, 8)}`);
    expect(await slotSha()).toBe(sha256(inpainted.png));
    await id('strength-number').fill('0.5');
    const next = await generate();
    expect(next.image).toEqual({ sha256: sha256(inpainted.png), width: 64, height: 64 });
    expect(next.mask).toBeUndefined();
    expect(next.strength).toBe(0.5);
    // the gallery card's button: the plain image-to-image result into the slot
    const plainId = (await storedImages(b.page)).find((m) => m.image && !m.mask && m.strength === 0.75)!.id;
    const [plain] = await storedImages(b.page, [plainId]);
    await b.page.locator(`[data-testid="gallery-item"][data-id="${plainId}"]`).getByTestId('use-as-input').click();
    await waitForText(id('image-info'), `image ${plainId.slice(0, 8)}`);
    expect(await slotSha()).toBe(sha256(plain.png));
  });

  it('Reproduce on an inpainted image runs it again from its stored input and mask: the same pixels; "Use these settings" puts them back in the slot', async () => {
    const item = b.page.locator(`[data-testid="gallery-item"][data-id="${inpainted.id}"]`);
    await item.getByTestId('gallery-reproduce').click();
    cellsDone++;
    await waitForCount(done(), cellsDone);
    const [again] = await storedImages(b.page, [(await done().last().getAttribute('data-id'))!]);
    expect(again).toMatchObject({ ...ASKED, strength: 0.75, image: inpainted.image, mask: inpainted.mask });
    expect(decodePng(Uint8Array.from(again.png)).data).toEqual(decodePng(Uint8Array.from(inpainted.png)).data);
    // the viewer's "Use these settings": every field, the input image in the slot and the mask painted over it again
    await item.getByTestId('gallery-open').click();
    await waitForAttribute(id('viewer'), 'data-id', inpainted.id);
    await id('viewer').getByTestId('viewer-use').click();
    await waitForText(id('image-info'), `the input of image ${inpainted.id.slice(0, 8)}`);
    expect(await slotSha()).toBe(sha256(init));
    expect(await white()).toBe(decodePng(maskBytes).data.filter((v) => v === 255).length);
    expect(await id('strength').inputValue()).toBe('0.75');
    expect(sha256((await downloadMask()))).toBe(inpainted.mask!.sha256);
  });

  it('the X/Y plot takes strength as an axis (with an input image only): 2 values give 2 images with those strengths, from a JPEG the page made a PNG of', async () => {
    await id('xy-x-kind').selectOption('strength');
    await id('xy-x-values').fill('0.3, 0.9');
    await id('xy-y-kind').selectOption('');
    // without an image the axis says what it needs
    await id('image-remove').click();
    await id('xy-run').click();
    await waitForText(id('xy-error'), 'strength needs an input image');
    await id('image-input').setInputFiles({ name: 'photo.jpg', mimeType: 'image/jpeg', buffer: Buffer.from(await makeJpeg()) });
    await waitForText(id('image-info'), 'JPEG converted to PNG');
    const png = await slotSha();
    await id('xy-run').click();
    await waitForCount(b.page.locator('[data-testid="xy-cell"][data-state="done"]'), 2);
    cellsDone += 2;
    await waitForText(id('xy-progress'), '2/2 cells');
    expect(await id('xy-sheet').locator('.corner').textContent()).toBe('Strength →');
    expect(await id('xy-sheet').locator('.col-label').allTextContents()).toEqual(['0.3', '0.9']);
    const ids = await b.page.locator('[data-testid="cell"]').evaluateAll((els) => els.slice(-2).map((e) => (e as HTMLElement).dataset.id!));
    const cells = await storedImages(b.page, ids);
    expect(cells.map((m) => m.strength)).toEqual([0.3, 0.9]);
    // the engine took the page's PNG of the JPEG, at its size
    for (const m of cells) expect(m).toMatchObject({ image: { sha256: png, width: 80, height: 48 }, width: 80, height: 48 });
  });

  it('a dropped A1111 img2img PNG ("Denoising strength: 0.45") fills the strength slider; the input image stays; axe-core passes the filled slot', async () => {
    await id('strength-number').fill('0.8');
    const before = await slotSha();
    const text = 'a castle on a hill\nSteps: 12, Sampler: Euler, CFG scale: 6.5, Seed: 424242, Size: 64x64, Denoising strength: 0.45';
    const chunks = extractChunks(encodePng({ width: 4, height: 4, data: new Uint8Array(64).fill(90), channels: 4, depth: 8 }));
    const png = encodeChunks([chunks[0], tEXt.encode('parameters', text), ...chunks.slice(1)]);
    await dropFile(b.page.locator('main'), png, 'img2img-a1111.png', 'image/png');
    await waitForText(id('form-notice'), 'img2img-a1111.png');
    expect(await id('strength').inputValue()).toBe('0.45');
    expect(await id('strength-number').inputValue()).toBe('0.45');
    expect([await id('prompts').inputValue(), await id('seed').inputValue()]).toEqual(['a castle on a hill', '424242']);
    expect(await slotSha()).toBe(before);
    // the filled slot and its mask tools: no serious or critical axe-core violation
    await b.page.evaluate(await readFile(require.resolve('axe-core/axe.min.js'), 'utf8'));
    const violations = await b.page.evaluate(async () => {
      const r = await (window as unknown as { axe: { run(ctx: Element, o: object): Promise<{ violations: { id: string; impact: string; nodes: { target: string[] }[] }[] }> } }).axe.run(document.getElementById('prompt-form')!, { resultTypes: ['violations'] });
      return r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical').map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).join(', ')}`);
    });
    expect(violations).toEqual([]);
    // onnxruntime's own load-time warnings (node placement, unused initializers) come through console.error
    expect(b.errors.filter((e) => !/\[W:onnxruntime:/.test(e))).toEqual([]);
  });
});
