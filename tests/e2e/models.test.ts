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
import { startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';
import { openApp, waitForAttribute, waitForCount, waitForText, type BrowserSession } from './chromium.ts';

const REPO = 'acme/tiny-sd3-onnx';
const BROKEN = 'acme/broken-sd3';
const SUB = 'onnx';
const WEIGHT_FILES = ['text_encoder/model.onnx', 'text_encoder_2/model.onnx', 'text_encoder_2/model.onnx.data', 'text_encoder_3/model.onnx', 'transformer/model.onnx', 'transformer/model.onnx_data', 'vae_decoder/model.onnx'];

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
  const gets = () => server.requests.filter((r) => r.method === 'GET').map((r) => r.path);

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'sd3-e2e-hub-'));
    await cp(TINY_MODEL_EXTERNAL_DIR, join(root, 'repo', SUB), { recursive: true });
    for (const f of WEIGHT_FILES) weightBytes += (await stat(join(root, 'repo', SUB, f))).size;
    // the cache keeps every file the load reads: weights, configs and tokenizers (not the unused VAE encoder)
    for (const e of await readdir(join(root, 'repo', SUB), { withFileTypes: true, recursive: true })) {
      if (e.isFile() && !e.parentPath.includes('vae_encoder')) cachedBytes += (await stat(join(e.parentPath, e.name))).size;
    }
    server = await startModelServer({ repos: [{ repo: REPO, folder: join(root, 'repo') }, { repo: BROKEN, folder: join(root, 'repo') }] });
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

  it('after a reload, loading it again reads nothing from the network', async () => {
    await b.page.reload();
    await label().filter({ hasText: /tiny-sd3/ }).waitFor({ timeout: 60_000 });
    server.requests.length = 0;
    await loadFromHub(REPO);
    await waitForText(label(), `${REPO}/${SUB}`);
    expect(server.requests).toEqual([]);
  });

  it('a truncated entry in Cache Storage is detected and fetched again', async () => {
    const key = `${server.url}/${REPO}/resolve/main/${SUB}/transformer/model.onnx_data`;
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
    expect(gets()).toEqual([new URL(key).pathname]);
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

  it('deleting a downloaded model frees its cache', async () => {
    const item = b.page.getByTestId('cached-model').filter({ hasText: `${REPO}/${SUB}` });
    await item.getByTestId('cached-delete').click();
    await waitForCount(item, 0);
    const left = await b.page.evaluate(async () => (await (await caches.open('sd3-webgpu-models-v2')).keys()).filter((r) => r.url.includes('tiny-sd3-onnx')).length);
    expect(left).toBe(0);
  });
});
