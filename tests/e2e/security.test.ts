// Privacy and security in the page: every network request of a full session
// (worker included) goes to the app's own origin or the model host the user
// chose; the Content-Security-Policy blocks inline and remote script; prompts
// render as text, never HTML; the policy comes as a response header, so it
// governs the worker too (its fetch to an unlisted origin never leaves); a
// hostile PNG is read in the worker, capped, while the page keeps drawing;
// "Delete all data" wipes images, queue and downloaded models, and they stay
// gone after a reload.
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { servedCommit, startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { pngWithCompressedITXt, zeroBomb } from '../helpers/png-bomb.ts';
import { TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';
import { CONTENT_SECURITY_POLICY } from '../../content-security-policy.ts';
import encodeChunks from 'png-chunks-encode';
import extractChunks from 'png-chunks-extract';
import { STATE_WAIT_MS, holdTransformerAfter, openBrowser, waitForCount, waitForGallery, waitForText, type BrowserSession } from './chromium.ts';

const HOSTILE = `<img src=x onerror="window.__pwned=1"><b>bold</b><script>window.__pwned=2</script>`;

describe('privacy and security in the page', () => {
  let b: BrowserSession;
  let server: ModelServer;
  let root: string;
  let appOrigin: string;
  const requests: string[] = [];

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sd3-e2e-sec-'));
    await cp(TINY_MODEL_EXTERNAL_DIR, join(root, 'repo'), { recursive: true });
    server = await startModelServer({ repos: [{ repo: 'acme/tiny', folder: join(root, 'repo') }] });
    b = await openBrowser();
    // every request of the session, the worker's included
    b.context.on('request', (r) => void requests.push(r.url()));
    appOrigin = new URL(inject('baseUrl')).origin;
    await b.page.goto(`${inject('baseUrl')}?backend=wasm`);
    await b.page.getByTestId('model-label').filter({ hasText: /tiny-sd3/ }).waitFor({ timeout: 60_000 });
  });
  afterAll(async () => {
    await b?.close();
    await server?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('a full session talks only to the app and the chosen model host; prompts render as text', async () => {
    await b.page.getByTestId('model-kind').selectOption('hub');
    await b.page.getByTestId('hub-repo').fill('acme/tiny');
    await b.page.getByTestId('hub-host').fill(server.url);
    await b.page.getByTestId('load-model').click();
    await waitForText(b.page.getByTestId('model-label'), 'acme/tiny');
    await b.page.getByTestId('prompts').fill(HOSTILE);
    await b.page.getByTestId('steps').fill('2');
    await b.page.getByTestId('generate').click();
    await waitForGallery(b.page, 1);
    await b.page.reload();
    await waitForGallery(b.page, 1);

    // the worker's downloads were seen, so the log is complete
    expect(requests.some((u) => u.includes('/models/tiny-sd3/transformer/model.onnx'))).toBe(true);
    // Hub files come from the commit the branch resolved to
    expect(requests.some((u) => u.startsWith(`${server.url}/acme/tiny/resolve/${servedCommit({ repo: 'acme/tiny', folder: '' })}/transformer/model.onnx_data`))).toBe(true);
    const allowed = new Set([appOrigin, server.url]);
    const elsewhere = requests.filter((u) => !u.startsWith('blob:') && !u.startsWith('data:') && !allowed.has(new URL(u).origin));
    expect(elsewhere).toEqual([]);

    // the prompt shows as its own characters, and none of it became markup
    expect(await b.page.getByTestId('gallery-item').first().locator('.prompt').textContent()).toBe(HOSTILE);
    expect(await b.page.locator('img[src="x"], b:text("bold")').count()).toBe(0);
    expect(await b.page.evaluate(() => (window as unknown as { __pwned?: number }).__pwned)).toBeUndefined();
  });

  it('the Content-Security-Policy blocks inline and remote script', async () => {
    const csp = await b.page.locator('meta[http-equiv="Content-Security-Policy"]').getAttribute('content');
    expect(csp).toMatch(/script-src 'self' 'wasm-unsafe-eval';/);
    expect(csp).not.toMatch(/unsafe-inline'[^;]*;.*script|script-src[^;]*unsafe-inline/);
    const result = await b.page.evaluate(async () => {
      const violations: string[] = [];
      // both blocked scripts report a violation: wait for the two reports, not for a timer
      const reported = new Promise<void>((r) =>
        document.addEventListener('securitypolicyviolation', (e) => {
          violations.push(`${e.violatedDirective} ${e.blockedURI}`);
          if (violations.length === 2) r();
        }),
      );
      const inline = document.createElement('script');
      inline.textContent = 'window.__inline = 1';
      document.body.append(inline);
      const remote = document.createElement('script');
      remote.src = 'https://example.com/evil.js';
      const remoteFailed = new Promise<boolean>((r) => {
        remote.onerror = () => r(true);
        remote.onload = () => r(false);
      });
      document.body.append(remote);
      const failed = await remoteFailed;
      await reported;
      return { inlineRan: (window as unknown as { __inline?: number }).__inline === 1, remoteFailed: failed, violations };
    });
    expect(result.inlineRan).toBe(false);
    expect(result.remoteFailed).toBe(true);
    expect(result.violations.some((v) => v.startsWith('script-src') && v.includes('inline'))).toBe(true);
    expect(result.violations.some((v) => v.includes('https://example.com/evil.js'))).toBe(true);
  });

  it('the policy comes as a response header, so it governs the worker: its fetch to an unlisted origin never leaves', async () => {
    // the page and the worker's own script both came with the header (a worker's policy is its script's)
    const workerUrl = requests.find((u) => /\/engine\.test-worker[^/]*\.js$/.test(u));
    expect(workerUrl).toBeDefined();
    for (const url of [inject('baseUrl'), workerUrl!]) expect((await fetch(url)).headers.get('content-security-policy')).toBe(CONTENT_SECURITY_POLICY);

    // a server that answers anyone, on every loopback address: 127.0.0.1 is listed in connect-src, 127.0.0.2 is not
    const seen: string[] = [];
    const other = createServer((req, res) => {
      seen.push(`${req.headers.host}${req.url}`);
      res.writeHead(200, { 'access-control-allow-origin': '*' }).end('answered');
    });
    await new Promise<void>((r) => other.listen(0, '0.0.0.0', r));
    const port = (other.address() as AddressInfo).port;
    type Fetched = { status: number | null; error: string | null; violations: string[] };
    const fromWorker = (url: string) => b.page.evaluate((u) => (window as unknown as { __engine: { fetchFromWorker(u: string): Promise<Fetched> } }).__engine.fetchFromWorker(u), url);
    try {
      expect(await (await fetch(`http://127.0.0.2:${port}/from-node`)).text()).toBe('answered');
      expect(await fromWorker(`http://127.0.0.1:${port}/listed`)).toEqual({ status: 200, error: null, violations: [] });
      const blocked = await fromWorker(`http://127.0.0.2:${port}/unlisted`);
      expect(blocked.status).toBeNull();
      expect(blocked.violations).toHaveLength(1);
      expect(blocked.violations[0]).toMatch(new RegExp(`^connect-src http://127\\.0\\.0\\.2:${port}`));
      // the block is the policy's: the server, which answers that address, never heard of it
      expect(seen).toEqual([`127.0.0.2:${port}/from-node`, `127.0.0.1:${port}/listed`]);
    } finally {
      await new Promise((r) => other.close(r));
    }
  });

  /** Drops a PNG on the page: the time from the drop to the form's notice naming it, the frames drawn meanwhile (ms after the drop, up to the one after the notice), and the notice. */
  const drop = (name: string, png: Uint8Array) =>
    b.page.evaluate(
      async ({ name, base64 }) => {
        const file = new File([Uint8Array.from(atob(base64), (c) => c.charCodeAt(0))], name, { type: 'image/png' });
        const dt = new DataTransfer();
        dt.items.add(file);
        let answeredAt = 0;
        const answered = new Promise<void>((resolve) => {
          const observer = new MutationObserver(() => {
            if (!document.querySelector('[data-testid="form-notice"]')?.textContent?.includes(name)) return;
            answeredAt = performance.now();
            observer.disconnect();
            resolve();
          });
          observer.observe(document.body, { subtree: true, childList: true, characterData: true });
        });
        const dropped = performance.now();
        document.querySelector('main')!.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
        // every frame the page draws from the drop until the one after the answer: a busy main thread draws none
        const frames: number[] = [];
        await new Promise<void>((done) => {
          const frame = () => {
            frames.push(performance.now() - dropped);
            if (answeredAt) done();
            else requestAnimationFrame(frame);
          };
          requestAnimationFrame(frame);
        });
        await answered;
        return { answerMs: answeredAt - dropped, frames, notice: document.querySelector('[data-testid="form-notice"]')!.textContent! };
      },
      { name, base64: Buffer.from(png).toString('base64') },
    );

  /** Frames the page draws in `ms` from now, when nothing else is asked of it. */
  const idleFrames = (ms: number) =>
    b.page.evaluate(
      (ms) =>
        new Promise<number>((done) => {
          const start = performance.now();
          let n = 0;
          const frame = () => {
            if (performance.now() - start > ms) return done(n);
            n++;
            requestAnimationFrame(frame);
          };
          requestAnimationFrame(frame);
        }),
      ms,
    );

  it('a hostile PNG (1.5 GB of text in 1.5 MB) is answered as fast as one whose text is just over the cap, naming the cap', async () => {
    const hostile = pngWithCompressedITXt('parameters', zeroBomb(1536));
    expect(hostile.length).toBeLessThan(1.7 * 2 ** 20);
    // the control: its text inflates to 2 MiB, over the 1 MiB cap too, and a chunk no reader looks into pads it to the
    // hostile file's length. Capped, both cost the reader the first MiB and a step; uncapped, the hostile one costs 768× more
    const small = extractChunks(pngWithCompressedITXt('parameters', zeroBomb(2)));
    const control = encodeChunks([small[0], small[1], { name: 'prVt', data: new Uint8Array(hostile.length - encodeChunks(small).length - 12) }, ...small.slice(2)]);
    expect(control.length).toBe(hostile.length);
    const prompts = await b.page.getByTestId('prompts').inputValue();
    const first = await drop('hostile.png', hostile);
    expect(first.notice).toContain('hostile.png: its "parameters" settings text is over 1 MB');
    expect(first.notice).toContain('the form is unchanged');
    // then in turns, so that load on this machine falls on both alike
    const times: { hostile: number[]; control: number[] } = { hostile: [], control: [] };
    for (let i = 1; i <= 3; i++) {
      const c = await drop(`control-${i}.png`, control);
      expect(c.notice).toContain(`control-${i}.png: its "parameters" settings text is over 1 MB`);
      times.control.push(c.answerMs);
      const h = await drop(`hostile-${i}.png`, hostile);
      expect(h.notice).toContain(`hostile-${i}.png: its "parameters" settings text is over 1 MB`);
      times.hostile.push(h.answerMs);
    }
    console.log(`answers from drop to notice (ms): first hostile ${first.answerMs.toFixed(0)}; ${JSON.stringify(Object.fromEntries(Object.entries(times).map(([k, v]) => [k, v.map(Math.round)])))}`);
    // the fastest of each, so what load adds drops out. Measured on this 2-core machine, idle and beside 2 or 4 busy
    // processes: hostile 16–21 ms, control 18–23 ms (ratio 0.8–1.1). Inflating all 1.5 GiB (the cap's loop bound
    // removed, tried): hostile 7.3–8.1 s against control 24–31 ms (ratio ~300). A bound of 4× is far from both.
    expect(Math.min(...times.hostile)).toBeLessThan(4 * Math.min(...times.control));
    expect(await b.page.getByTestId('prompts').inputValue()).toBe(prompts);
  });

  it('a PNG that takes the reader long (100 text chunks over the cap) is read while the page keeps drawing', async () => {
    // each chunk is capped, so each costs a MiB of inflating: a second or so of reading in all, off the page's thread.
    // (The 1.5 GB PNG is no test of this: capped, it is read in milliseconds, and read on the page's thread, tried,
    // its longest gap between frames was 62 ms.)
    const one = extractChunks(pngWithCompressedITXt('Comment', zeroBomb(2)));
    const slow = encodeChunks([one[0], ...Array<typeof one[number]>(100).fill(one[1]), ...one.slice(2)]);
    const read = await drop('slow.png', slow);
    expect(read.notice).toContain('slow.png carries no generation settings');
    // the frames drawn while it was read, against those drawn in as long a span right after with nothing to do
    const during = read.frames.filter((t) => t <= read.answerMs).length;
    const idle = await idleFrames(read.answerMs);
    console.log(`slow PNG read in ${read.answerMs.toFixed(0)} ms: ${during} frames meanwhile, ${idle} in as long an idle span`);
    // the span is long enough to tell: a read on the page's thread draws no frame in it, whatever its length
    expect(idle).toBeGreaterThanOrEqual(10);
    // measured, idle and beside 2 or 4 busy processes: reads of 1.0–1.7 s, 64–104 frames during, the idle span's
    // within 1 of that. Read on the page's thread (tried): 0 frames during 978 ms against 59 idle. Half is far from both.
    expect(during).toBeGreaterThanOrEqual(idle / 2);
  });

  it('"Delete all data" wipes images, queue and downloaded models, for good', async () => {
    await waitForCount(b.page.getByTestId('cached-model'), 1);
    // the durable queue holds work of both kinds when the data is deleted: a request that waits for
    // another model (not running, so only clearing the queue removes it) and one running in the worker
    const label = b.page.getByTestId('model-label');
    await waitForText(label, /\/tiny-sd3\/ · /);
    // each model's runs held after 100 of the 150 steps: nothing finishes before the reload
    await holdTransformerAfter(b.page, 100);
    await generate(['for the built-in model'], 150, 70);
    await b.page.locator('[data-testid="cell"][data-state="denoising"]', { hasText: 'for the built-in model' }).waitFor({ timeout: STATE_WAIT_MS });
    await b.page.getByTestId('model-kind').selectOption('hub');
    await b.page.getByTestId('hub-repo').fill('acme/tiny');
    await b.page.getByTestId('hub-host').fill(server.url);
    await b.page.getByTestId('load-model').click();
    await waitForText(label, 'acme/tiny');
    await holdTransformerAfter(b.page, 100);
    await generate(['waits for acme/tiny a', 'waits for acme/tiny b'], 150, 80);
    await b.page.locator('[data-testid="cell"][data-state="denoising"]', { hasText: 'waits for acme/tiny' }).nth(1).waitFor({ timeout: STATE_WAIT_MS });
    // after a reload the built-in model loads (its request is queued too) and finishes its request; acme/tiny's wait
    await b.page.reload();
    await waitForText(label, /\/tiny-sd3\/ · .* · wasm/);
    await waitForText(b.page.getByTestId('waiting-model'), /2 requests wait for model .*acme\/tiny/);
    await waitForGallery(b.page, 2);
    await holdTransformerAfter(b.page, 100);
    await generate(['running at the delete'], 150, 90);
    await b.page.locator('[data-testid="cell"][data-state="denoising"]', { hasText: 'running at the delete' }).waitFor({ timeout: STATE_WAIT_MS });
    const before = await stored();
    expect({ ...before, cached: before.cached > 0 }).toEqual({ images: 2, queue: 3, cached: true });

    b.page.once('dialog', (d) => void d.accept());
    await b.page.getByTestId('delete-all').click();
    await waitForGallery(b.page, 0);
    await waitForCount(b.page.getByTestId('cached-model'), 0);
    expect(await stored()).toEqual({ images: 0, queue: 0, cached: 0 });
    // the requests that waited for another model went with the queue: the page stops saying they wait (before any reload)
    expect(await b.page.getByTestId('waiting-model').count()).toBe(0);
    await b.page.reload();
    await b.page.getByTestId('model-label').filter({ hasText: /tiny-sd3/ }).waitFor({ timeout: 60_000 });
    expect(await stored()).toEqual({ images: 0, queue: 0, cached: 0 });
    expect(await b.page.getByTestId('gallery-item').count()).toBe(0);
    // nothing was resumed, nothing waits
    expect(await b.page.getByTestId('cell').count()).toBe(0);
    expect(await b.page.getByTestId('waiting-model').count()).toBe(0);
  });

  async function generate(prompts: string[], steps: number, seed: number) {
    await b.page.getByTestId('prompts').fill(prompts.join('\n'));
    await b.page.getByTestId('steps').fill(String(steps));
    await b.page.getByTestId('seed').fill(String(seed));
    await b.page.getByTestId('generate').click();
  }

  /** What this browser keeps: stored images, queued requests and downloaded files (and their records, in every cache). */
  function stored(): Promise<{ images: number; queue: number; cached: number }> {
    return b.page.evaluate(async () => {
      const db = await new Promise<IDBDatabase>((res, rej) => {
        const r = indexedDB.open('sd3-webgpu');
        r.onsuccess = () => res(r.result);
        r.onerror = () => rej(r.error);
      });
      const count = (store: string) =>
        new Promise<number>((res) => {
          const q = db.transaction(store).objectStore(store).count();
          q.onsuccess = () => res(q.result);
        });
      const counts = { images: await count('images'), queue: await count('queue') };
      db.close();
      let cached = 0;
      for (const name of await caches.keys()) cached += (await (await caches.open(name)).keys()).length;
      return { ...counts, cached };
    });
  }
});
