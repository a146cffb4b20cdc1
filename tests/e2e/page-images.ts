// Stored images read back through the worker's API in the page, and compared
// with the Node engine's image for the same settings: the browser suites' one
// way of saying "this is the image that seed gives".
import { decode } from 'fast-png';
import type { Page } from 'playwright-core';
import { expect } from 'vitest';
import { summarize, type SoakOutcome, type SoakReport, type SoakRequest } from '../../bench/soak.ts';
import type { GenerateRequest, GenerateResult, ImageMetadata } from '../../workers/engine/api/types.ts';
import { diffGpuMemory, parseKind, type GpuMemory, type GpuMemoryDiff } from '../../workers/gpu-memory.ts';
import { loadTinyWasmEngine, maxPixelDiff } from '../helpers/tiny-engine.ts';

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
  const ref = await (await loadTinyWasmEngine()).generate({ prompt, negativePrompt, seed, steps, guidance, width, height });
  return { diff: maxPixelDiff(new Uint8ClampedArray(img.data.buffer, img.data.byteOffset, img.data.byteLength), ref.rgba), channels: img.channels };
}

/** diffFromNode for an image request: the same settings with the very image (and mask) files the page sent, and its strength. */
export async function diffFromNodeImage(
  png: number[],
  s: Pick<GenerateRequest, 'prompt' | 'negativePrompt' | 'seed' | 'steps' | 'guidance' | 'width' | 'height' | 'strength'> & { image: Uint8Array; mask?: Uint8Array },
): Promise<{ diff: number; channels: number }> {
  const img = decode(Uint8Array.from(png));
  const { prompt, negativePrompt, seed, steps, guidance, width, height, image, mask, strength } = s;
  const ref = await (await loadTinyWasmEngine()).generate({ prompt, negativePrompt, seed, steps, guidance, width, height, image, strength, ...(mask ? { mask } : {}) });
  return { diff: maxPixelDiff(new Uint8ClampedArray(img.data.buffer, img.data.byteOffset, img.data.byteLength), ref.rgba), channels: img.channels };
}

// The soak in the page (soak.test.ts, and its 100-request WebGPU form in
// tests/scale/soak-webgpu.test.ts): a mix sent all at once through the worker,
// each request cancelled as it asks, every outcome checked against its request.

interface SoakPageApi {
  generate(r: object, cb?: unknown): Promise<{ id: string; metadata: Record<string, unknown> }>;
  cancel(id: string): Promise<boolean>;
  pending(): Promise<unknown[]>;
  status(): Promise<{ requestsActive: number; requestsQueued: number; requestBytes: number; admittedBytes: number; gpuMemory: GpuMemory | null }>;
  resetGpuMemoryPeak(): Promise<void>;
  listImages(q: object): Promise<{ id: string }[]>;
}

/** The worker's GPU buffer meter as it stands (null on wasm). */
export function gpuMemoryIn(page: Page): Promise<GpuMemory | null> {
  return page.evaluate(async () => (await (window as unknown as { __engine: SoakPageApi }).__engine.status()).gpuMemory);
}

/** Starts the meter's peak again from what is live now. */
export function resetGpuPeakIn(page: Page): Promise<void> {
  return page.evaluate(() => (window as unknown as { __engine: SoakPageApi }).__engine.resetGpuMemoryPeak());
}

/** One request through the worker, to its end. */
export async function generateIn(page: Page, request: GenerateRequest & { id: string }): Promise<void> {
  await page.evaluate((r) => (window as unknown as { __engine: SoakPageApi }).__engine.generate(r), request);
}

export interface PageSoak {
  report: SoakReport;
  /** Requests left in the durable queue afterwards. */
  pending: number;
  status: Awaited<ReturnType<SoakPageApi['status']>>;
}

/** Sends the whole mix at once; 'before' cancels right after submitting, 'mid' at the request's first step. */
export async function soakInPage(page: Page, requests: SoakRequest[]): Promise<PageSoak> {
  const started = Date.now();
  const raw = await page.evaluate(async (reqs) => {
    const w = window as unknown as { __engine: SoakPageApi; __Comlink: { proxy<T>(f: T): T } };
    const api = w.__engine;
    const outcomes = await Promise.all(
      reqs.map((r) => {
        const { cancel, ...req } = r;
        let cancelled: Promise<boolean> | undefined;
        const p = api.generate(
          req,
          w.__Comlink.proxy((e: { status: string }) => {
            if (cancel === 'mid' && e.status === 'step' && !cancelled) cancelled = api.cancel(r.id);
          }),
        );
        if (cancel === 'before') cancelled = api.cancel(r.id);
        return p
          .then(
            (v) => ({ id: r.id, metadata: v.metadata }),
            (e: { code?: string; message: string }) => ({ id: r.id, error: { code: e.code, message: e.message } }),
          )
          .then(async (o) => ({ ...o, cancelAccepted: cancelled ? await cancelled : undefined }));
      }),
    );
    return { outcomes, pending: (await api.pending()).length, status: await api.status() };
  }, requests);
  // the shared checks need results: stored metadata stands in (pixels are compared from the stored PNGs)
  const outcomes: SoakOutcome[] = raw.outcomes.map((o) => {
    const request = requests.find((r) => r.id === o.id)!;
    const cancelAccepted = o.cancelAccepted;
    if (!('metadata' in o)) return { request, error: o.error, cancelAccepted };
    const m = o.metadata as unknown as GenerateResult['metadata'];
    return { request, cancelAccepted, result: { id: o.id, width: m.width, height: m.height, rgba: new Uint8ClampedArray(m.width * m.height * 4), png: new Blob(), metadata: m } };
  });
  return { report: summarize(outcomes, Date.now() - started), pending: raw.pending, status: raw.status };
}

/**
 * Every request accounted for exactly once: an image for each that ran to its end
 * (stored, with its own settings, a sample equal to the Node engine's image for its
 * seed), a cancellation for each cancelled, no failure; the durable queue empty and
 * the engine's request memory back to zero.
 */
export async function expectSoakAccountedFor(page: Page, requests: SoakRequest[], soak: PageSoak, opts: { sampleEvery?: number } = {}): Promise<void> {
  const { sampleEvery = 8 } = opts;
  const { report } = soak;
  expect(report.wrongOutcome).toEqual([]);
  expect(report.mismatched).toEqual([]);
  expect(report.failed).toBe(0);
  expect(report.completed + report.cancelled).toBe(requests.length);
  expect(new Set(report.outcomes.map((o) => o.request.id)).size).toBe(requests.length);
  expect(soak.pending).toBe(0);
  expect(soak.status).toMatchObject({ requestsActive: 0, requestsQueued: 0, requestBytes: 0, admittedBytes: 0 });

  // stored images: one per completed request of this mix, and a sample equals the Node engine's image
  const ids = report.outcomes.filter((o) => o.result).map((o) => o.request.id);
  const mine = new Set(requests.map((r) => r.id));
  const listed = await page.evaluate(async () => (await (window as unknown as { __engine: SoakPageApi }).__engine.listImages({ limit: 1000 })).map((m) => m.id));
  expect(listed.filter((id) => mine.has(id)).sort()).toEqual([...ids].sort());
  // compared with what was asked, not with what was stored: a swapped image would show
  for (const img of await storedImages(page, ids.filter((_, i) => i % sampleEvery === 0))) {
    const asked = requests.find((r) => r.id === img.id)!;
    expect((await diffFromNode(img.png, asked)).diff, img.id).toBeLessThanOrEqual(3);
  }
}

/** Live buffers the app made itself (not onnxruntime), by kind. */
export function appBuffers(m: GpuMemory): Record<string, number> {
  return Object.fromEntries(Object.entries(m.byKind).filter(([k]) => parseKind(k).origin === 'app'));
}

/**
 * The soak on the device's own buffer meter: `baseline` is the meter after the
 * model's load and one warm-up request; after the soak the device must hold
 * exactly the baseline plus what onnxruntime's buffer cache may keep (see
 * ORT_STORAGE_BUCKET_LIMITS in workers/gpu-memory.ts), none of the app's own
 * buffers, and repeating the warm-up request must change nothing at all.
 */
export async function expectGpuMemoryBackToBaseline(page: Page, baseline: GpuMemory, warmUp: GenerateRequest & { id: string }): Promise<{ after: GpuMemory; diff: GpuMemoryDiff }> {
  const after = (await gpuMemoryIn(page))!;
  const diff = diffGpuMemory(baseline, after);
  expect(diff.unexplained, 'live GPU buffers nothing keeps on purpose').toEqual({});
  expect(diff.missing, 'baseline buffers destroyed').toEqual({});
  expect(appBuffers(after), "the app's own buffers").toEqual(appBuffers(baseline));
  // the totals agree with the kinds: the baseline and onnxruntime's cache are all there is
  expect(after.liveBytes).toBe(baseline.liveBytes + diff.ortCache.bytes);
  expect(after.buffers).toBe(baseline.buffers + diff.ortCache.buffers);
  // a request like the warm-up now runs on what is there: nothing made, nothing kept
  await generateIn(page, { ...warmUp, id: `${warmUp.id}-again` });
  const again = (await gpuMemoryIn(page))!;
  expect({ liveBytes: again.liveBytes, buffers: again.buffers, byKind: again.byKind }).toEqual({ liveBytes: after.liveBytes, buffers: after.buffers, byKind: after.byKind });
  return { after, diff };
}
