// Loading a model as a person does, from a Hub-layout server (a real local HTTP
// server: repo id, revision, subfolder, external data), into the browser's
// Cache Storage: the second load reads no network, a truncated cache entry is
// fetched again, a model over the memory setting is refused with the numbers,
// a broken repo names its file while the loaded model keeps working, and the
// downloaded model can be deleted. Runs on wasm (see journey.test.ts for why).
import { cp, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { formatBytes } from '../../workers/engine/errors.ts';
import { servedCommit, startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';
import { openApp, waitForAttribute, waitForCount, waitForText, type BrowserSession } from './chromium.ts';

const REPO = 'acme/tiny-sd3-onnx';
const BROKEN = 'acme/broken-sd3';
const GATED = 'acme/gated-sd3';
const TOKEN = 'hf_PageTokenThatMustNeverBeStored42';
const SUB = 'onnx';
const WEIGHT_FILES = ['text_encoder/model.onnx', 'text_encoder_2/model.onnx', 'text_encoder_2/model.onnx.data', 'text_encoder_3/model.onnx', 'transformer/model.onnx', 'transformer/model.onnx_data', 'vae_decoder/model.onnx', 'vae_encoder/model.onnx'];

describe('loading real-checkpoint style models in the page', () => {
  let b: BrowserSession;
  let server: ModelServer;
  let root: string;
  let weightBytes = 0;
  let cachedBytes = 0;

  const label = () => b.page.getByTestId('model-label');
  const loadFromHub = async (repo: string) => {
    await b.page.getByTestId('model-kind').selectOption('hub');
    await b.page.getByTestId('hub-repo').fill(repo);
    await b.page.getByTestId('hub-subfolder').fill(SUB);
    await b.page.getByTestId('hub-host').fill(server.url);
    await b.page.getByTestId('load-model').click();
    await waitForAttribute(b.page.getByTestId('model-form'), 'data-busy', 'false');
  };
  const generateOne = async (prompt: string) => {
    const done = b.page.locator('[data-testid="cell"][data-state="done"]');
    const before = await done.count();
    await b.page.getByTestId('prompts').fill(prompt);
    await b.page.getByTestId('steps').fill('2');
    await b.page.getByTestId('generate').click();
    await waitForCount(done, before + 1);
  };
  // files come from the commit the branch resolved to; paths here name the branch
  const atBranch = (path: string) => path.replace(`/resolve/${servedCommit({ repo: REPO, folder: '' })}/`, '/resolve/main/');
  const gets = () => server.requests.filter((r) => r.method === 'GET' && r.path.includes('/resolve/')).map((r) => atBranch(r.path));

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sd3-e2e-hub-'));
    await cp(TINY_MODEL_EXTERNAL_DIR, join(root, 'repo', SUB), { recursive: true });
    for (const f of WEIGHT_FILES) weightBytes += (await stat(join(root, 'repo', SUB, f))).size;
    // the cache keeps every file the load reads: weights (the VAE encoder's too), configs and tokenizers
    for (const e of await readdir(join(root, 'repo', SUB), { withFileTypes: true, recursive: true })) {
      if (e.isFile()) cachedBytes += (await stat(join(e.parentPath, e.name))).size;
    }
    server = await startModelServer({ repos: [{ repo: REPO, folder: join(root, 'repo') }, { repo: BROKEN, folder: join(root, 'repo') }, { repo: GATED, folder: join(root, 'repo'), gatedToken: TOKEN }] });
    b = await openApp(inject('baseUrl'));
  });
  afterAll(async () => {
    await b?.close();
    await server?.close();
    await rm(root, { recursive: true, force: true });
  });

  it('loads a model by repo id with download progress, caches every file once, and generates', async () => {
    // every text the progress line shows, as the page changes it (no polling)
    await b.page.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { __progressTexts: string[] }).__progressTexts = seen;
      new MutationObserver(() => {
        const t = document.querySelector('[data-testid="load-progress"]')?.textContent;
        if (t && t !== seen.at(-1)) seen.push(t);
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    await loadFromHub(REPO);
    const texts = await b.page.evaluate(() => (window as unknown as { __progressTexts: string[] }).__progressTexts);
    const lastProgress = texts.at(-1) ?? '';
    await waitForText(label(), `${REPO}/${SUB}`);
    // progress shows bytes over the whole model, out of its true total
    expect(lastProgress).toContain(`/ ${formatBytes(weightBytes)}`);
    for (const f of WEIGHT_FILES) expect(gets().filter((p) => p === `/${REPO}/resolve/main/${SUB}/${f}`)).toHaveLength(1);
    const item = b.page.getByTestId('cached-model').filter({ hasText: `${REPO}/${SUB}` });
    await waitForText(item, formatBytes(cachedBytes));
    await generateOne('from the hub');
  });

  it('after a reload, loading it again reads no model file from the network (only its revision)', async () => {
    await b.page.reload();
    await label().filter({ hasText: /tiny-sd3/ }).waitFor({ timeout: 60_000 });
    server.requests.length = 0;
    await loadFromHub(REPO);
    await waitForText(label(), `${REPO}/${SUB}`);
    // only the revision, to find its commit: the files and that commit's listing come from the cache
    expect(server.requests.map((r) => r.path)).toEqual([`/api/models/${REPO}/revision/main`]);
  });

  it('a truncated entry in Cache Storage is detected and fetched again', async () => {
    const key = `${server.url}/${REPO}/resolve/${servedCommit({ repo: REPO, folder: '' })}/${SUB}/transformer/model.onnx_data`;
    const cut = await b.page.evaluate(async (key) => {
      const cache = await caches.open('sd3-webgpu-models-v2');
      const r = await cache.match(key);
      if (!r) return -1;
      const bytes = new Uint8Array(await r.arrayBuffer());
      await cache.put(key, new Response(bytes.slice(0, 1000), { headers: r.headers })); // same metadata, short body
      return bytes.length;
    }, key);
    expect(cut).toBeGreaterThan(1000);
    // load the built-in model, so the hub model loads afresh (the repo's name matches /tiny-sd3/ too: wait for the form)
    await b.page.getByTestId('model-kind').selectOption('tiny');
    await b.page.getByTestId('load-model').click();
    await waitForAttribute(b.page.getByTestId('model-form'), 'data-busy', 'false');
    expect(await label().textContent()).not.toContain(REPO);
    server.requests.length = 0;
    await loadFromHub(REPO);
    await waitForText(label(), `${REPO}/${SUB}`);
    expect(gets()).toEqual([atBranch(new URL(key).pathname)]);
    await generateOne('healed cache');
  });

  it('a model over the GPU memory setting is refused with the numbers; the loaded one keeps working', async () => {
    await b.page.getByTestId('model-kind').selectOption('hub');
    await b.page.locator('details summary', { hasText: 'Memory' }).click();
    await b.page.getByTestId('gpu-memory').fill('0.001');
    await loadFromHub(BROKEN);
    await waitForText(b.page.getByTestId('model-error'), /this model needs ~.* of GPU memory \(.* of weights \+ .* for the smallest image, 16×16; its default is 64×64\); this adapter offers 1\.0 MB/);
    expect(await label().textContent()).toMatch(`${REPO}/${SUB}`);
    await b.page.getByTestId('gpu-memory').fill('8');
    await generateOne('still serving');
  });

  it('a missing file names itself; the loaded model keeps working', async () => {
    server.faults.set(`/${BROKEN}/resolve/main/${SUB}/transformer/model.onnx_data`, 404);
    await loadFromHub(BROKEN);
    await waitForText(b.page.getByTestId('model-error'), /transformer\/model\.onnx_data/);
    expect(await label().textContent()).toMatch(`${REPO}/${SUB}`);
    await generateOne('after a broken repo');
  });

  it('a gated repo: the first-run panel says so with the license link; the token field loads it; no PNG, IndexedDB or Cache Storage byte holds the token', async () => {
    const logs: string[] = [];
    b.page.on('console', (m) => void logs.push(m.text()));
    await b.page.reload();
    await label().filter({ hasText: /tiny-sd3/ }).waitFor({ timeout: 60_000 });
    const first = b.page.getByTestId('first-run');
    expect(await first.getByTestId('gated').first().textContent()).toMatch(/^gated: needs a Hugging Face token ·\s+accept its license$/);
    expect(await first.getByTestId('license-link').first().getAttribute('href')).toBe('https://huggingface.co/stabilityai/stable-diffusion-3-medium_amdgpu');
    // the Amuse repo is not gated: two of the three say so
    expect(await first.getByTestId('gated').count()).toBe(2);

    await loadFromHub(GATED);
    await waitForText(b.page.getByTestId('model-error'), `${GATED} is gated: it needs a Hugging Face token. Accept its license at ${server.url}/${GATED}`);
    server.requests.length = 0;
    await b.page.getByTestId('hub-token').fill(TOKEN);
    await loadFromHub(GATED);
    await waitForText(label(), `${GATED}/${SUB}`);
    // the token went with every request to the Hub host (a CORS preflight carries none)
    const sent = server.requests.filter((r) => r.method !== 'OPTIONS');
    expect(sent.length).toBeGreaterThan(10);
    expect(sent.filter((r) => !r.authorization)).toEqual([]);
    await generateOne('gated in the page');

    const found = await b.page.evaluate(async (token) => {
      const hits: string[] = [];
      let pngs = 0;
      const has = async (where: string, v: unknown): Promise<void> => {
        if (v instanceof Blob && v.type === 'image/png') pngs++;
        if (v instanceof Blob) v = new TextDecoder('latin1').decode(await v.arrayBuffer());
        else if (v instanceof ArrayBuffer || ArrayBuffer.isView(v)) v = new TextDecoder('latin1').decode(v as ArrayBuffer);
        if (typeof v === 'string') {
          if (v.includes(token)) hits.push(where);
        } else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) await has(`${where}.${k}`, x);
      };
      let records = 0;
      for (const { name } of await indexedDB.databases()) {
        const db = await new Promise<IDBDatabase>((ok, no) => Object.assign(indexedDB.open(name!), { onsuccess(this: IDBRequest<IDBDatabase>) { ok(this.result); }, onerror: no }));
        for (const store of Array.from(db.objectStoreNames)) {
          const all = await new Promise<unknown[]>((ok, no) => Object.assign(db.transaction(store).objectStore(store).getAll(), { onsuccess(this: IDBRequest<unknown[]>) { ok(this.result); }, onerror: no }));
          for (const [i, v] of all.entries()) await has(`idb:${name}/${store}[${i}]`, v);
          records += all.length;
        }
        db.close();
      }
      let cached = 0;
      for (const name of await caches.keys()) {
        const cache = await caches.open(name);
        for (const req of await cache.keys()) {
          const res = (await cache.match(req))!;
          await has(`cache:${name} ${req.url}`, `${req.url} ${JSON.stringify([...res.headers])}`);
          await has(`cache:${name} ${req.url} body`, await res.blob());
          cached++;
        }
      }
      return { hits, records, cached, pngs };
    }, TOKEN);
    expect(found.hits).toEqual([]);
    // the gallery's PNGs (settings chunks included) are among the stored records scanned
    expect(found.pngs).toBeGreaterThanOrEqual(1);
    expect(found.records).toBeGreaterThanOrEqual(found.pngs);
    expect(found.cached).toBeGreaterThan(10);
    expect(logs.filter((l) => l.includes(TOKEN))).toEqual([]);
    // kept in this browser until forgotten
    expect(await b.page.evaluate(() => localStorage.getItem('sd3.hubToken'))).toBe(TOKEN);
    await b.page.getByTestId('forget-token').click();
    expect(await b.page.evaluate(() => localStorage.getItem('sd3.hubToken'))).toBeNull();
    expect(await b.page.getByTestId('hub-token').inputValue()).toBe('');
  });

  it('deleting a downloaded model frees its cache', async () => {
    const item = b.page.getByTestId('cached-model').filter({ hasText: `${REPO}/${SUB}` });
    await item.getByTestId('cached-delete').click();
    await waitForCount(item, 0);
    const left = await b.page.evaluate(async () => (await (await caches.open('sd3-webgpu-models-v2')).keys()).filter((r) => r.url.includes('tiny-sd3-onnx')).length);
    expect(left).toBe(0);
  });
});
