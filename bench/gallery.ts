// npm run bench -- --gallery: opening the gallery with 1,000 stored images
// against 10, as ratios within one run. Records are written straight into the
// page's IndexedDB (a real generated PNG, cloned with fresh metadata), then
// the page reloads and we time how long until its first page of images shows,
// and read the page's JS heap and DOM size from the DevTools protocol.
import { build, preview } from 'vite';
import { openApp } from '../tests/e2e/chromium.ts';
import { GALLERY_PAGE } from '../workers/store/image-store.ts';
import { writeResults } from './results-file.ts';

interface Opened {
  records: number;
  shown: number;
  /** From navigation start to the first page of gallery images in the DOM. */
  openMs: number;
  jsHeapMB: number;
  domNodes: number;
}

async function open(baseUrl: string, records: number): Promise<Opened> {
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
    const cdp = await b.context.newCDPSession(b.page);
    await cdp.send('HeapProfiler.collectGarbage');
    await cdp.send('Performance.enable');
    const { metrics } = await cdp.send('Performance.getMetrics');
    const metric = (name: string) => metrics.find((m) => m.name === name)!.value;
    return { records, shown, openMs: Math.round(openMs), jsHeapMB: Math.round(metric('JSHeapUsedSize') / 1e4) / 100, domNodes: metric('Nodes') };
  } finally {
    await b.close();
  }
}

export async function galleryBench(out: string) {
  await build({ mode: 'test', logLevel: 'warn' });
  const server = await preview({ mode: 'test', preview: { port: 4176, strictPort: false, host: '127.0.0.1' }, logLevel: 'warn' });
  const baseUrl = `${server.resolvedUrls!.local[0]}test.html`;
  try {
    await open(baseUrl, 10); // warms the build's HTTP cache and shader-free wasm paths
    const ten = await open(baseUrl, 10);
    const thousand = await open(baseUrl, 1000);
    const figures = {
      date: new Date().toISOString(),
      pageSize: GALLERY_PAGE,
      runs: [ten, thousand],
      openTimeRatio: Math.round((thousand.openMs / ten.openMs) * 100) / 100,
      jsHeapRatio: Math.round((thousand.jsHeapMB / ten.jsHeapMB) * 100) / 100,
      domNodesRatio: Math.round((thousand.domNodes / ten.domNodes) * 100) / 100,
    };
    console.table(figures.runs);
    writeResults(out, 'gallery', figures);
    return figures;
  } finally {
    await server.close();
  }
}
