// The soak in the browser: the same 100-request mix as the Node soak
// (bench/soak.ts) through the worker, with its IndexedDB storage. Each request
// finishes or is cancelled as asked, each stored image carries its own
// request's settings, a sample matches the Node engine's image for the same
// seed, the durable queue is empty, and the engine's memory is back to zero.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { soakRequests, summarize, type SoakOutcome } from '../../bench/soak.ts';
import type { GenerateResult } from '../../workers/engine/api/types.ts';
import { openApp, type BrowserSession } from './chromium.ts';
import { diffFromNode, storedImages } from './page-images.ts';

describe('soak in the page', () => {
  let b: BrowserSession;
  beforeAll(async () => {
    b = await openApp(inject('baseUrl'));
  });
  afterAll(async () => b?.close());

  it('100 mixed requests through the worker: right outcomes, stored with their own settings, nothing left behind', async () => {
    const requests = soakRequests(100, 'page');
    const started = Date.now();
    const raw = await b.page.evaluate(async (reqs) => {
      type Api = {
        generate(r: object, cb: unknown): Promise<{ id: string; metadata: Record<string, unknown> }>;
        cancel(id: string): Promise<boolean>;
        pending(): Promise<unknown[]>;
        status(): Promise<{ requestsActive: number; requestsQueued: number; requestBytes: number; admittedBytes: number }>;
      };
      const w = window as unknown as { __engine: Api; __Comlink: { proxy<T>(f: T): T } };
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
    const wallMs = Date.now() - started;

    // the shared checks need results: stored metadata stands in (pixels are compared below)
    const outcomes: SoakOutcome[] = raw.outcomes.map((o) => {
      const request = requests.find((r) => r.id === o.id)!;
      const cancelAccepted = o.cancelAccepted;
      if (!('metadata' in o)) return { request, error: o.error, cancelAccepted };
      const m = o.metadata as unknown as GenerateResult['metadata'];
      return { request, cancelAccepted, result: { id: o.id, width: m.width, height: m.height, rgba: new Uint8ClampedArray(m.width * m.height * 4), png: new Blob(), metadata: m } };
    });
    const report = summarize(outcomes, wallMs);
    console.log(`browser soak: ${report.completed} done, ${report.cancelled} cancelled in ${wallMs} ms`);
    expect(report.wrongOutcome).toEqual([]);
    expect(report.mismatched).toEqual([]);
    expect(report.failed).toBe(0);
    expect(report.completed + report.cancelled).toBe(100);
    expect(raw.pending).toBe(0);
    expect(raw.status).toMatchObject({ requestsActive: 0, requestsQueued: 0, requestBytes: 0, admittedBytes: 0 });

    // stored images: one per completed request, and a sample equals the Node engine's image
    const ids = outcomes.filter((o) => o.result).map((o) => o.request.id);
    const listed = await b.page.evaluate(async () => {
      const api = (window as unknown as { __engine: { listImages(q: object): Promise<{ id: string }[]> } }).__engine;
      return (await api.listImages({ limit: 1000 })).map((m) => m.id);
    });
    expect(listed.sort()).toEqual([...ids].sort());
    // compared with what was asked, not with what was stored: a swapped image would show
    for (const img of await storedImages(b.page, ids.filter((_, i) => i % 8 === 0))) {
      const asked = requests.find((r) => r.id === img.id)!;
      expect((await diffFromNode(img.png, asked)).diff, img.id).toBeLessThanOrEqual(3);
    }
  });
});
