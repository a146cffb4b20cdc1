// Privacy and security in the page: every network request of a full session
// (worker included) goes to the app's own origin or the model host the user
// chose; the Content-Security-Policy blocks inline and remote script; prompts
// render as text, never HTML; "Delete all data" wipes images, queue and
// downloaded models, and they stay gone after a reload.
import { cp, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { servedCommit, startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';
import { openBrowser, waitForCount, waitForGallery, waitForText, type BrowserSession } from './chromium.ts';

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

  it('"Delete all data" wipes images, queue and downloaded models, for good', async () => {
    await waitForCount(b.page.getByTestId('cached-model'), 1);
    b.page.once('dialog', (d) => void d.accept());
    await b.page.getByTestId('delete-all').click();
    await waitForGallery(b.page, 0);
    await waitForCount(b.page.getByTestId('cached-model'), 0);
    await b.page.reload();
    await b.page.getByTestId('model-label').filter({ hasText: /tiny-sd3/ }).waitFor({ timeout: 60_000 });
    const left = await b.page.evaluate(async () => {
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
      // downloaded files and their records, and no cache of an older layout
      let cached = 0;
      for (const name of await caches.keys()) cached += (await (await caches.open(name)).keys()).length;
      return { ...counts, cached };
    });
    expect(left).toEqual({ images: 0, queue: 0, cached: 0 });
    expect(await b.page.getByTestId('gallery-item').count()).toBe(0);
  });
});
