// Image to image and inpainting in the page on WebGPU (SwiftShader here): the
// real-export fixtures served as Hub repos, loaded by the worker, and every case
// diffusers' own Img2Img / Inpaint pipelines ran generated through the worker's API,
// with the requests' tensors on the GPU (the inpaint blend as a compute pass) and on
// the host; then one batch mixing text to image, img2img and inpainting. Last, the
// input files kept in IndexedDB beside the images made from them.
import { join } from 'node:path';
import { decode } from 'fast-png';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { diffToRgb, expectedImageRgb, imageInput, imageReference, REAL_EXPORTS_DIR as ROOT, type ImageCase } from '../helpers/real-exports.ts';
import { startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { openApp, openBrowser, type BrowserSession } from './chromium.ts';

const inputs = (name: string) => Array.from(imageInput(name));
const cases = (ref: string) => imageReference(ref).cases;
const BASE = { prompt: 'a red cube on a blue table', negativePrompt: 'blurry', seed: 42, steps: 4, guidance: 3, width: 64, height: 64 };

type Wire = Record<string, unknown> & { image?: number[]; mask?: number[] };
interface PageResult {
  width: number;
  height: number;
  strength?: number;
  rgba: number[];
  channels: number;
  residency: string;
}

describe('img2img and inpainting in the page on WebGPU, against diffusers', () => {
  let b: BrowserSession;
  let server: ModelServer;

  /** Loads a fixture as a Hub repo in the worker; `onDevice` picks where requests' tensors live. */
  const load = (repo: string, onDevice: boolean) =>
    b.page.evaluate(
      async ({ repo, host, onDevice }) => {
        type Api = { loadModel(s: object, p: undefined, o: object): Promise<{ backend: string; imageInput: boolean }> };
        return (window as unknown as { __engine: Api }).__engine.loadModel({ kind: 'hub', repo, host }, undefined, { denoiseOnDevice: onDevice });
      },
      { repo, host: server.url, onDevice },
    );

  /** Requests through the worker's API at once; each result's pixels (from its stored PNG's bytes, decoded here) and metadata. */
  const generate = async (requests: Wire[]): Promise<PageResult[]> => {
    const replies = await b.page.evaluate(async (requests) => {
      type Reply = { png: Blob; metadata: { width: number; height: number; strength?: number; transfers: { residency: string } } };
      type Api = { generate(r: object): Promise<Reply>; status(): Promise<unknown> };
      const api = (window as unknown as { __engine: Api }).__engine;
      const out = await Promise.all(
        requests.map((r) => api.generate({ ...r, ...(r.image ? { image: Uint8Array.from(r.image) } : {}), ...(r.mask ? { mask: Uint8Array.from(r.mask) } : {}) })),
      );
      return Promise.all(out.map(async (x) => ({ png: Array.from(new Uint8Array(await x.png.arrayBuffer())), metadata: x.metadata })));
    }, requests);
    return replies.map(({ png, metadata }) => {
      const img = decode(Uint8Array.from(png));
      // the PNG's own size: with padding_mask_crop it is the original image's, not the request's
      return { width: img.width, height: img.height, strength: metadata.strength, rgba: Array.from(img.data), channels: img.channels, residency: metadata.transfers.residency };
    });
  };

  const wire = (c: ImageCase): Wire => ({ ...BASE, image: inputs(c.image), strength: c.strength, ...(c.mask ? { mask: inputs(c.mask) } : {}), ...(c.paddingMaskCrop !== undefined ? { paddingMaskCrop: c.paddingMaskCrop } : {}) });

  beforeAll(async () => {
    server = await startModelServer({ repos: [{ repo: 'tiny/sd3-img2img', folder: join(ROOT, 'sd3') }, { repo: 'tiny/sd35-img2img', folder: join(ROOT, 'sd35') }] });
    b = await openApp(inject('baseUrl'), 'webgpu');
  });
  afterAll(async () => {
    await b?.close();
    await server?.close();
  });

  it.each([
    ['sd3', 'tiny/sd3-img2img', true],
    ['sd3', 'tiny/sd3-img2img', false],
    ['sd35', 'tiny/sd35-img2img', true],
  ] as const)('%s (%s), tensors on the GPU: %s: every case within 2 levels', async (ref, repo, onDevice) => {
    const info = await load(repo, onDevice);
    expect(info).toMatchObject({ backend: 'webgpu', imageInput: true });
    const all = cases(ref);
    // one at a time, as diffusers ran them
    const diffs: Record<string, number> = {};
    for (const c of all) {
      const [r] = await generate([wire(c)]);
      expect(r.residency).toBe(onDevice ? 'device' : 'host');
      expect([r.width, r.height], c.name).toEqual(c.outputSize);
      expect(r.strength).toBe(c.strength);
      diffs[c.name] = diffToRgb(r.rgba, expectedImageRgb(ref, c), r.channels);
    }
    console.log(`${ref}, tensors on the ${onDevice ? 'GPU' : 'host'}: levels from diffusers per case`, JSON.stringify(diffs));
    expect(Math.max(...Object.values(diffs)), JSON.stringify(diffs)).toBeLessThanOrEqual(2);
    expect(Object.keys(diffs)).toHaveLength(8);
  });

  it('one batch of a text to image, an img2img and an inpaint request on the GPU: each matches diffusers', async () => {
    await load('tiny/sd3-img2img', true);
    const byName = new Map(cases('sd3').map((c) => [c.name, c]));
    const [text, img, inp] = await generate([{ ...BASE }, wire(byName.get('img2img-s0.6')!), wire(byName.get('inpaint-s0.3')!)]);
    const status = await b.page.evaluate(() => (window as unknown as { __engine: { status(): Promise<{ maxRowsPerRun: number }> } }).__engine.status());
    // text to image from the same noise at 4 steps is diffusers' img2img at strength 1
    expect(diffToRgb(text.rgba, expectedImageRgb('sd3', byName.get('img2img-s1')!), text.channels)).toBeLessThanOrEqual(2);
    expect(diffToRgb(img.rgba, expectedImageRgb('sd3', byName.get('img2img-s0.6')!), img.channels)).toBeLessThanOrEqual(2);
    expect(diffToRgb(inp.rgba, expectedImageRgb('sd3', byName.get('inpaint-s0.3')!), inp.channels)).toBeLessThanOrEqual(2);
    // all three guided requests' rows went in one transformer run
    expect(status.maxRowsPerRun).toBe(6);
  });
});

describe('input images in IndexedDB, beside the images made from them', () => {
  type Api = {
    generate(r: object): Promise<{ id: string; metadata: { image?: { sha256: string }; mask?: { sha256: string } } }>;
    getInputImage(sha: string): Promise<Blob>;
    deleteImage(id: string): Promise<void>;
    listImages(q: object): Promise<{ id: string }[]>;
  };
  let b: BrowserSession;
  afterAll(async () => b?.close());

  it('kept once by SHA-256 however many images use one, given back byte for byte, and gone with the last image that names it', async () => {
    b = await openApp(inject('baseUrl'), 'webgpu');
    const image = inputs('init-64.png');
    const mask = inputs('mask-64.png');
    const out = await b.page.evaluate(
      async ({ image, mask }) => {
        const api = (window as unknown as { __engine: Api }).__engine;
        const bytes = async (sha: string) => Array.from(new Uint8Array(await (await api.getInputImage(sha)).arrayBuffer()));
        const gone = (sha: string) => api.getInputImage(sha).then(() => 'present', (e: { code?: string }) => e.code ?? 'error');
        const req = { prompt: 'a red cube', seed: 1, steps: 2, width: 64, height: 64, image: Uint8Array.from(image), strength: 0.5 };
        const a = await api.generate(req);
        const c = await api.generate({ ...req, seed: 2, mask: Uint8Array.from(mask) });
        const sha = a.metadata.image!.sha256;
        const maskSha = c.metadata.mask!.sha256;
        const kept = { image: await bytes(sha), mask: await bytes(maskSha) };
        await api.deleteImage(c.id);
        const afterOne = { image: await gone(sha), mask: await gone(maskSha) };
        await api.deleteImage(a.id);
        const afterBoth = { image: await gone(sha), mask: await gone(maskSha) };
        return { sameSha: c.metadata.image!.sha256 === sha, kept, afterOne, afterBoth };
      },
      { image, mask },
    );
    expect(out.sameSha).toBe(true);
    expect(out.kept).toEqual({ image, mask });
    // the mask went with the only image that used it; the init image stays while the other image names it
    expect(out.afterOne).toEqual({ image: 'present', mask: 'not_found' });
    expect(out.afterBoth).toEqual({ image: 'not_found', mask: 'not_found' });
  });

  it('a gallery stored before input images were kept (database version 1) opens, its images intact', async () => {
    const fresh = await openBrowser();
    try {
      const origin = new URL(inject('baseUrl')).origin;
      // the origin's database as the previous version made it: two stores, one image
      await fresh.page.goto(`${origin}/favicon.svg`);
      await fresh.page.evaluate(
        () =>
          new Promise<void>((resolve, reject) => {
            const open = indexedDB.open('sd3-webgpu', 1);
            open.onupgradeneeded = () => {
              const db = open.result;
              db.createObjectStore('images', { keyPath: 'id' }).createIndex('createdAt', 'createdAt');
              db.createObjectStore('queue', { keyPath: 'id' }).createIndex('acceptedAt', 'acceptedAt');
            };
            open.onsuccess = () => {
              const tx = open.result.transaction('images', 'readwrite');
              const createdAt = new Date().toISOString();
              tx.objectStore('images').put({ id: 'old-image', createdAt, png: new Blob([new Uint8Array([1, 2, 3])]), metadata: { id: 'old-image', prompt: 'stored by version 1', createdAt, modelId: 'tiny-sd3' } });
              tx.oncomplete = () => (open.result.close(), resolve());
              tx.onerror = () => reject(tx.error);
            };
            open.onerror = () => reject(open.error);
          }),
      );
      await fresh.page.goto(inject('baseUrl'));
      // the worker's API is on window once the app has started its engine (as openApp waits for it)
      await fresh.page.getByTestId('model-label').filter({ hasText: /tiny-sd3/ }).waitFor({ timeout: 120_000 });
      const ids = await fresh.page.evaluate(() => (window as unknown as { __engine: Api }).__engine.listImages({}));
      expect(ids.map((m) => m.id)).toEqual(['old-image']);
      const version = await fresh.page.evaluate(async () => (await indexedDB.databases()).find((d) => d.name === 'sd3-webgpu')?.version);
      expect(version).toBe(2);
    } finally {
      await fresh.close();
    }
  });
});
