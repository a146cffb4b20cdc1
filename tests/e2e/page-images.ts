// Stored images read back through the worker's API in the page, and compared
// with the Node engine's image for the same settings: the browser suites' one
// way of saying "this is the image that seed gives".
import { decode } from 'fast-png';
import type { Page } from 'playwright-core';
import type { GenerateRequest, ImageMetadata } from '../../workers/engine/api/types.ts';
import { loadTinyEngine, maxPixelDiff } from '../helpers/tiny-engine.ts';

export type PageImage = ImageMetadata & { png: number[] };

/** Every stored image (or those with these ids), metadata and PNG bytes. */
export function storedImages(page: Page, ids?: string[]): Promise<PageImage[]> {
  return page.evaluate(async (ids) => {
    type Api = { listImages(q: object): Promise<{ id: string }[]>; getImage(id: string): Promise<{ png: Blob; metadata: ImageMetadata }> };
    const api = (window as unknown as { __engine: Api }).__engine;
    const wanted = ids ?? (await api.listImages({ limit: 1000 })).map((m) => m.id);
    return Promise.all(
      wanted.map(async (id) => {
        const { png, metadata } = await api.getImage(id);
        return { ...metadata, png: Array.from(new Uint8Array(await png.arrayBuffer())) };
      }),
    );
  }, ids);
}

/** Decodes a stored PNG and compares it with the Node wasm engine's image for the same settings. */
export async function diffFromNode(png: number[], s: Pick<GenerateRequest, 'prompt' | 'negativePrompt' | 'seed' | 'steps' | 'guidance' | 'width' | 'height'>): Promise<{ diff: number; channels: number }> {
  const img = decode(Uint8Array.from(png));
  const { prompt, negativePrompt, seed, steps, guidance, width, height } = s;
  const ref = await (await loadTinyEngine()).generate({ prompt, negativePrompt, seed, steps, guidance, width, height });
  return { diff: maxPixelDiff(new Uint8ClampedArray(img.data.buffer, img.data.byteOffset, img.data.byteLength), ref.rgba), channels: img.channels };
}
