// npm run bench -- --gallery: opening the gallery with 1,000 stored images
// against 10, as ratios within one run. Records are written straight into the
// page's IndexedDB (a real generated PNG, cloned with fresh metadata), then
// the page reloads and we time how long until its first page of images shows,
// and read the page's JS heap and DOM size from the DevTools protocol.
// With 1,000 records it also times "Show older images" (click to the next
// page in the DOM) while a model loads and while the engine idles, against
// the same page read through the worker, which a load keeps busy.
import { build, preview } from 'vite';
import type { Page } from 'playwright-core';
import { openApp } from '../tests/e2e/chromium.ts';
import { GALLERY_PAGE } from '../workers/store/image-store.ts';
import { writeResults } from './results-file.ts';

/** Click on "Show older images" to the next page in the DOM, and the same page asked of the worker at the same moment. */
interface Paging {
  /** A model load was under way when the page arrived. */
  duringLoad: boolean;
  /** The device call the worker had announced when the click came (null: idle). */
  busyWith: string | null;
  pageMs: number;
  workerMs: number;
}

interface Opened {
  records: number;
  paging?: Paging[];
  shown: number;
  /** From navigation start to the first page of gallery images in the DOM. */
  openMs: number;
  jsHeapMB: number;
  domNodes: number;
}

async function open(baseUrl: string, records: number, measurePaging = false): Promise<Opened> {
  const b = await openApp(baseUrl, 'wasm');
  try {
    await b.page.getByTestId('prompts').fill('gallery bench');
    await b.page.getByTestId('steps').fill('1');
    await b.page.getByTestId('generate').click();
    await b.page.locator('[data-testid="cell"][data-state="done"]').waitFor({ timeout: 120_000 });
    await b.page.evaluate(async (n) => {
      const db = await new Promise<IDBDatabase>((ok, fail) => Object.assign(indexedDB.open('sd3-webgpu'), { onsuccess(this: IDBRequest<IDBDatabase>) { ok(this.result); }, onerror: fail }));
      const read = db.transaction('images').objectStore('images').getAll();
      const [template] = await new Promise<{ png: Blob; metadata: Record<string, unknown> }[]>((ok) => (read.onsuccess = () => ok(read.result)));
      const tx = db.transaction('images', 'readwrite');
      const store = tx.objectStore('images');
      store.clear();
      for (let i = 0; i < n; i++) {
        const id = crypto.randomUUID();
        const createdAt = new Date(Date.UTC(2026, 0, 1) + i * 1000).toISOString();
        store.put({ id, png: template.png, createdAt, metadata: { ...template.metadata, id, createdAt, prompt: `stored image ${i}`, seed: i } });
      }
      await new Promise((ok) => (tx.oncomplete = ok));
      db.close();
    }, records);
    await b.page.reload();
    const shown = Math.min(records, GALLERY_PAGE);
    // the first frame that has them: the predicate's truthy value is the time it held
    const openMs = (await (await b.page.waitForFunction((k) => document.querySelectorAll('[data-testid="gallery-item"] img').length === k && performance.now(), shown, { polling: 'raf', timeout: 120_000 })).jsonValue()) as number;
    // a run of its own (its heap and DOM then count the pages it added)
    const paging: Paging[] = [];
    if (measurePaging) {
      // first, as a person would right after a reload: the start-up load is under way
      paging.push(await nextPage(b.page, 'boot'));
      await b.page.getByTestId('model-label').filter({ hasText: /tiny-sd3.* · wasm/ }).waitFor({ timeout: 120_000 });
      // alternate two models so that every load is a real switch (sessions made, shaders and wasm compiled)
      for (const model of ['tiny-sd3-external', 'tiny-sd3', 'tiny-sd3-external', 'tiny-sd3', 'tiny-sd3-external']) paging.push(await nextPage(b.page, model));
      for (let i = 0; i < 5; i++) paging.push(await nextPage(b.page, null));
    }
    const cdp = await b.context.newCDPSession(b.page);
    await cdp.send('HeapProfiler.collectGarbage');
    await cdp.send('Performance.enable');
    const { metrics } = await cdp.send('Performance.getMetrics');
    const metric = (name: string) => metrics.find((m) => m.name === name)!.value;
    return { records, ...(paging.length ? { paging } : {}), shown, openMs: Math.round(openMs), jsHeapMB: Math.round(metric('JSHeapUsedSize') / 1e4) / 100, domNodes: metric('Nodes') };
  } finally {
    await b.close();
  }
}

/** Times one "Show older images", with a model load started just before it ('boot': the start-up load; null: none), and the worker's answer for the same page. */
async function nextPage(page: Page, loadModel: string | null): Promise<Paging> {
  const timed = await page.evaluate(async (model) => {
    // `busy` is the worker's last heartbeat: a device call (a session being made) under way
    type Client = { load(s: { kind: 'url'; url: string }): Promise<void>; loading: boolean; busy: { what: string } | null };
    type Api = { listImages(q: object): Promise<unknown[]> };
    const w = window as unknown as { __client: Client; __engine: Api };
    const list = document.querySelector('[data-testid="gallery-list"]')!;
    const [last] = [...document.querySelectorAll<HTMLElement>('[data-testid="gallery-item"]')].slice(-1);
    const shown = Number(list.getAttribute('data-count'));
    const loading = model && model !== 'boot' ? w.__client.load({ kind: 'url', url: new URL(`models/${model}/`, location.href).href }) : null;
    // click once the worker says it has started making a session: the part of a load that blocks it
    while (model && model !== 'boot' && !w.__client.busy) await new Promise(requestAnimationFrame);
    const busyWith = w.__client.busy?.what ?? null;
    const t0 = performance.now();
    const arrived = new Promise<{ ms: number; duringLoad: boolean }>((resolve) => {
      const seen = new MutationObserver(() => {
        if (Number(list.getAttribute('data-count')) === shown) return;
        seen.disconnect();
        resolve({ ms: performance.now() - t0, duringLoad: w.__client.loading });
      });
      seen.observe(list, { attributes: true, attributeFilter: ['data-count'] });
    });
    document.querySelector<HTMLButtonElement>('[data-testid="gallery-more"]')!.click();
    // the same page through the worker, asked at the same moment (its createdAt cursor is the page's own)
    const worker = w.__engine.listImages({ limit: 48, after: { createdAt: last.dataset.createdAt, id: last.dataset.id } }).then(() => performance.now() - t0);
    const [{ ms, duringLoad }, workerMs] = await Promise.all([arrived, worker]);
    await loading;
    return { duringLoad, busyWith, pageMs: ms, workerMs };
  }, loadModel);
  return { duringLoad: timed.duringLoad, busyWith: timed.busyWith, pageMs: Math.round(timed.pageMs), workerMs: Math.round(timed.workerMs) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export async function galleryBench(out: string) {
  await build({ mode: 'test', logLevel: 'warn' });
  const server = await preview({ mode: 'test', preview: { port: 4176, strictPort: false, host: '127.0.0.1' }, logLevel: 'warn' });
  const baseUrl = `${server.resolvedUrls!.local[0]}test.html`;
  try {
    await open(baseUrl, 10); // warms the build's HTTP cache and shader-free wasm paths
    const ten = await open(baseUrl, 10);
    const thousand = await open(baseUrl, 1000);
    const paged = await open(baseUrl, 1000, true);
    const figures = {
      date: new Date().toISOString(),
      pageSize: GALLERY_PAGE,
      runs: [ten, thousand],
      paging: paged.paging,
      openTimeRatio: Math.round((thousand.openMs / ten.openMs) * 100) / 100,
      jsHeapRatio: Math.round((thousand.jsHeapMB / ten.jsHeapMB) * 100) / 100,
      domNodesRatio: Math.round((thousand.domNodes / ten.domNodes) * 100) / 100,
      nextPage: pagingFigures(paged.paging ?? []),
    };
    console.table(figures.runs);
    console.table(paged.paging);
    console.log('next page (median ms):', figures.nextPage);
    writeResults(out, 'gallery', figures);
    return figures;
  } finally {
    await server.close();
  }
}

/** Medians of the next-page times during a load and idle, and their ratio, for the page and for the worker. */
function pagingFigures(paging: Paging[]) {
  const loadRuns = paging.filter((p) => p.duringLoad);
  const boot = paging[0];
  const idleRuns = paging.slice(-5);
  const during = { pageMs: median(loadRuns.map((p) => p.pageMs)), workerMs: median(loadRuns.map((p) => p.workerMs)) };
  const idle = { pageMs: median(idleRuns.map((p) => p.pageMs)), workerMs: median(idleRuns.map((p) => p.workerMs)) };
  return {
    samplesDuringLoad: loadRuns.length,
    /** The first click right after a reload, while the start-up load runs. */
    afterReload: { pageMs: boot?.pageMs, workerMs: boot?.workerMs, duringLoad: boot?.duringLoad },
    duringLoad: during,
    idle,
    /** How much longer the next page takes during a load than idle: near 1 means it does not wait on the engine. */
    pageLoadOverIdle: Math.round((during.pageMs / idle.pageMs) * 100) / 100,
    workerLoadOverIdle: Math.round((during.workerMs / idle.workerMs) * 100) / 100,
  };
}
