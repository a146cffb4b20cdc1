// Denoising on the GPU, in Chromium on WebGPU (SwiftShader): the same requests
// through the host path (every step uploads rows and reads velocities back)
// and the device path (embeddings uploaded once, latents and the update on the
// GPU) give images within a level of each other, batched or alone, while the
// bytes a guided request moves per step drop to a few dozen; a cancelled and a
// failed request give their GPU buffers back.
import { decode } from 'fast-png';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { GenerateRequest, ImageMetadata } from '../../workers/engine/api/types.ts';
import type { WorkerStatus } from '../../workers/worker-api.ts';
import { maxPixelDiff } from '../helpers/tiny-engine.ts';
import { openApp, type BrowserSession } from './chromium.ts';

interface Reply {
  metadata: ImageMetadata;
  rgba: number[];
}

type Transfers = NonNullable<ImageMetadata['transfers']>;

const LATENT_CHANNELS = 16;
const latentBytes = (side: number) => LATENT_CHANNELS * (side / 8) ** 2 * 4;

describe('denoising on the GPU (webgpu)', () => {
  let b: BrowserSession;
  beforeAll(async () => {
    b = await openApp(inject('baseUrl'), 'webgpu');
  });
  afterAll(async () => b?.close());

  /** Loads the tiny model on one path and runs groups of requests, each group together. */
  const runOn = async (onDevice: boolean, groups: Partial<GenerateRequest>[][]): Promise<{ replies: Reply[]; status: WorkerStatus }> => {
    const raw = await b.page.evaluate(
      async ({ onDevice, groups }) => {
        type Api = {
          loadModel(s: object, p: undefined, o: object): Promise<unknown>;
          generate(r: object): Promise<{ metadata: ImageMetadata; png: Blob }>;
          status(): Promise<unknown>;
        };
        const api = (window as unknown as { __engine: Api }).__engine;
        await api.loadModel({ kind: 'url', url: new URL('models/tiny-sd3/', location.href).href }, undefined, { denoiseOnDevice: onDevice });
        const replies: { metadata: ImageMetadata; png: number[] }[] = [];
        for (const group of groups) {
          for (const r of await Promise.all(group.map((q) => api.generate(q)))) replies.push({ metadata: r.metadata, png: Array.from(new Uint8Array(await r.png.arrayBuffer())) });
        }
        return { replies, status: await api.status() };
      },
      { onDevice, groups },
    );
    const replies = raw.replies.map((r) => {
      const img = decode(Uint8Array.from(r.png));
      return { metadata: r.metadata, rgba: Array.from(img.data) };
    });
    return { replies, status: raw.status as WorkerStatus };
  };

  it('images equal the host path within a level, batched or alone; a guided request moves 44 bytes a step instead of its rows', async () => {
    const a = { prompt: 'a lighthouse on a cliff', seed: 3, steps: 2, guidance: 4.5, width: 64, height: 64 };
    const c = { prompt: 'a red fox in snow', seed: 4, steps: 2, guidance: 4.5, width: 64, height: 64 };
    const big = { prompt: 'a harbour at dusk', seed: 5, steps: 2, guidance: 4.5, width: 256, height: 256 };
    const groups = [[a, c], [a], [big]];
    const host = await runOn(false, groups);
    const device = await runOn(true, groups);
    expect(host.status.denoise?.residency).toBe('host');
    expect(device.status.denoise?.residency).toBe('device');
    expect(device.status.denoise?.liveDeviceTensors).toBe(0);
    // and the page says where denoising runs
    await b.page.getByTestId('status-denoise').filter({ hasText: /^on the GPU/ }).waitFor({ timeout: 30_000 });

    // batched (a with c), alone (a), and at 256²: each within a level of the host path's image
    const diffs = host.replies.map((h, i) => maxPixelDiff(Uint8ClampedArray.from(device.replies[i].rgba), Uint8ClampedArray.from(h.rgba)));
    console.log('device vs host pixel diffs', diffs);
    for (const d of diffs) expect(d).toBeLessThanOrEqual(1);

    for (const [i, side] of [64, 64, 64, 256].entries()) {
      const steps = 2;
      const t = (r: Reply) => r.metadata.transfers as Transfers;
      const [h, d] = [t(host.replies[i]), t(device.replies[i])];
      expect([h.residency, d.residency, h.steps, d.steps]).toEqual(['host', 'device', steps, steps]);
      // host: both rows go up whole each step, and both velocities come back
      expect(h.stepDownloadBytes).toBe(2 * latentBytes(side) * steps);
      expect(h.stepUploadBytes).toBeGreaterThan(2 * latentBytes(side) * steps);
      // device: two timesteps (4 bytes each) and the update's 32-byte parameters up, its 4-byte finite flag down
      expect([d.stepUploadBytes, d.stepDownloadBytes, d.previewBytes]).toEqual([40 * steps, 4 * steps, 0]);
      expect((d.stepUploadBytes + d.stepDownloadBytes) / steps).toBeLessThanOrEqual(2 * latentBytes(side));
      console.log(`${side}²: bytes per guided step, host ${(h.stepUploadBytes + h.stepDownloadBytes) / steps}, device ${(d.stepUploadBytes + d.stepDownloadBytes) / steps}`);
    }
  });

  it('a cancelled and a failed request give their GPU buffers back; the other finishes', async () => {
    const outcome = await b.page.evaluate(async () => {
      type Api = {
        loadModel(s: object, p: undefined, o: object): Promise<unknown>;
        generate(r: object, onProgress?: unknown): Promise<unknown>;
        cancel(id: string): Promise<boolean>;
        status(): Promise<{ denoise: { liveDeviceTensors: number } | null; requestBytes: number }>;
        poisonTransformerRun(run: number): Promise<void>;
      };
      const w = window as unknown as { __engine: Api; __Comlink: { proxy<T>(f: T): T } };
      const api = w.__engine;
      await api.loadModel({ kind: 'url', url: new URL('models/tiny-sd3/', location.href).href }, undefined, { denoiseOnDevice: true });
      // the second transformer run's first row is the first request's unconditional one
      await api.poisonTransformerRun(2);
      let liveDuring = -1;
      let cancelSent: Promise<boolean> | null = null;
      const onProgress = w.__Comlink.proxy((e: { status: string }) => {
        if (e.status !== 'step' || cancelSent) return;
        // the worker answers in order: the count first, then the cancel
        void api.status().then((s) => (liveDuring = s.denoise?.liveDeviceTensors ?? -1));
        cancelSent = api.cancel('gpu-cancelled');
      });
      // the request an error concerns comes in its own field across the worker boundary, not in the message
      const settle = (p: Promise<unknown>) => p.then(() => 'done', (e) => `${(e as { requestId?: string }).requestId ?? '-'}: ${(e as { message?: string }).message ?? e}`);
      const ends = await Promise.all([
        settle(api.generate({ id: 'gpu-failed', prompt: 'poisoned', seed: 1, steps: 6, guidance: 4.5 })),
        settle(api.generate({ id: 'gpu-done', prompt: 'untouched', seed: 2, steps: 6, guidance: 4.5 })),
        settle(api.generate({ id: 'gpu-cancelled', prompt: 'cancelled', seed: 3, steps: 6, guidance: 4.5 }, onProgress)),
      ]);
      await cancelSent;
      const after = await api.status();
      return { ends, liveDuring, liveAfter: after.denoise?.liveDeviceTensors, requestBytes: after.requestBytes };
    });
    console.log('cancel/fail on the device', JSON.stringify(outcome));
    expect(outcome.ends[0]).toMatch(/^gpu-failed: non-finite values at step \d/);
    expect(outcome.ends[1]).toBe('done');
    expect(outcome.ends[2]).toMatch(/cancel/i);
    // while they ran: at least each request's own 7 buffers (latents, 2 embeddings, 2 pooled, 2 velocities)
    expect(outcome.liveDuring).toBeGreaterThanOrEqual(7 * 2);
    expect([outcome.liveAfter, outcome.requestBytes]).toEqual([0, 0]);
  });
});
