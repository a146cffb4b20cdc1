// Exports made by real tools (tools/fixtures/make_real_exports.py: torch.onnx in
// Optimum's layout, onnxruntime's optimizer, its fp16 converter, the Amuse /
// AMD / TensorStack layouts) served by the local Hub-layout server as gated
// repos, loaded through the page's Hub form with a token, on WebGPU
// (SwiftShader here): each generates diffusers' own pixels. The fp16 exports
// are refused by name where the adapter has no shader-f16, and the AMD layout
// loads its io32 variant on the wasm backend instead.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { decode } from 'fast-png';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { formatBytes } from '../../workers/engine/errors.ts';
import { REAL_EXPORTS_DIR, REAL_REPOS, reference, referenceRgb, diffToRgb, serveRealRepos, type RealRepo } from '../helpers/real-exports.ts';
import type { ModelServer } from '../helpers/model-server.ts';
import { openApp, waitForAttribute, waitForCount, waitForText, type BrowserSession } from './chromium.ts';
import { storedImages } from './page-images.ts';

const TOKEN = 'hf_PageRealExportsToken0123456789';
const FP16_IO16 = 'stabilityai/tiny-sd3.5-fp16-io16';
const FP16_IO32 = 'stabilityai/tiny-sd3.5-fp16-io32';
/** Bytes of a model folder's graphs and weights (what the load bar counts). */
async function graphBytes(dir: string): Promise<number> {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true, recursive: true })) if (e.isFile() && /\.onnx/.test(e.name)) n += (await stat(join(e.parentPath, e.name))).size;
  return n;
}
/** The model label once `name` is loaded on `backend` ("<id> · <family> · <backend>[ · no T5]"). */
const loadedLabel = (name: string, backend: string) => new RegExp(`^${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} · .+ · ${backend}( · no T5)?$`);
const repo = (name: string) => REAL_REPOS.find((r) => r.repo === name)!;
const [OPTIMUM, FUSED, AMUSE, AMD, TENSORSTACK] = ['stabilityai/tiny-sd3-onnx', 'stabilityai/tiny-sd3-onnx-directml', 'TensorStack/tiny-sd3.5-amuse', 'stabilityai/tiny-sd3.5_amdgpu', 'TensorStack/tiny-sd3-onnx'].map(repo);

describe('real-tool exports as gated Hub repos in the page', () => {
  let b: BrowserSession;
  let served: Awaited<ReturnType<typeof serveRealRepos>>;
  let server: ModelServer;
  let hasF16 = false;
  /** Pixels of each repo's image, to compare the fused export with the unfused one. */
  const pixels = new Map<string, Uint8Array>();

  const loadFromHub = async (name: string, token?: string) => {
    await b.page.getByTestId('model-kind').selectOption('hub');
    if (token !== undefined) await b.page.getByTestId('hub-token').fill(token);
    await b.page.getByTestId('hub-repo').fill(name);
    await b.page.getByTestId('hub-subfolder').fill('');
    await b.page.getByTestId('hub-host').fill(server.url);
    await b.page.getByTestId('load-model').click();
    await waitForAttribute(b.page.getByTestId('model-form'), 'data-busy', 'false');
  };

  /** Loads through the form and waits for the label; a refusal fails at once with the page's message. */
  const loadExpecting = async (name: string, backend: string) => {
    await loadFromHub(name, TOKEN);
    const error = b.page.getByTestId('model-error');
    expect(await error.count(), (await error.allTextContents()).join()).toBe(0);
    await waitForText(b.page.getByTestId('model-label'), loadedLabel(name, backend));
  };

  /** Generates diffusers' reference run (its last guidance) through the form; compares the stored PNG with diffusers' pixels. */
  const generateReference = async (r: RealRepo) => {
    const ref = reference(r.reference);
    const run = ref.runs.at(-1)!;
    const fields: [string, string][] = [['prompts', ref.prompt], ['negative', ref.negativePrompt], ['seed', String(ref.seed)], ['steps', String(ref.steps)], ['guidance', String(run.guidance)], ['width', String(ref.width)], ['height', String(ref.height)], ['count', '1']];
    for (const [id, value] of fields) await b.page.getByTestId(id).fill(value);
    const done = b.page.locator('[data-testid="cell"][data-state="done"]');
    const before = await done.count();
    await b.page.getByTestId('generate').click();
    await waitForCount(done, before + 1);
    const images = (await storedImages(b.page)).filter((m) => m.modelId === r.repo);
    expect(images).toHaveLength(1);
    expect(images[0]).toMatchObject({ seed: ref.seed, steps: ref.steps, guidance: run.guidance, width: ref.width, height: ref.height });
    const img = decode(Uint8Array.from(images[0].png));
    pixels.set(r.repo, Uint8Array.from(img.data));
    return { diff: diffToRgb(img.data, referenceRgb(r.reference, run), img.channels), backend: images[0].backend };
  };

  beforeAll(async () => {
    served = await serveRealRepos(TOKEN, [
      { repo: FP16_IO16, fixture: 'sd35-fp16-io16' },
      { repo: FP16_IO32, fixture: 'sd35-fp16-io32' },
    ]);
    server = served.server;
    b = await openApp(inject('baseUrl'), 'webgpu');
    hasF16 = await b.page.evaluate(async () => Boolean((await navigator.gpu.requestAdapter())?.features.has('shader-f16')));
  });
  afterAll(async () => {
    await b?.close();
    await served?.close();
  });

  it('without the token, the error names the repo and the token; no model file is served', async () => {
    await loadFromHub(OPTIMUM.repo);
    await waitForText(b.page.getByTestId('model-error'), `${OPTIMUM.repo} is gated: it needs a Hugging Face token. Accept its license at ${server.url}/${OPTIMUM.repo}`);
    expect(server.requests.filter((q) => q.path.includes('/resolve/') && q.status === 200)).toEqual([]);
    expect(await b.page.getByTestId('model-label').textContent()).toMatch(/tiny-sd3.* · webgpu/);
  });

  it("with the token it loads; the load bar shows only this load's numbers, never the previous model's", async () => {
    const [previous, own] = [formatBytes(await graphBytes(join(process.cwd(), 'public/models/tiny-sd3'))), formatBytes(await graphBytes(join(REAL_EXPORTS_DIR, 'sd3')))];
    expect(previous).not.toBe(own);
    // every text the load bar shows, as the page changes it (no polling)
    await b.page.evaluate(() => {
      const seen: string[] = [];
      (window as unknown as { __progressTexts: string[] }).__progressTexts = seen;
      new MutationObserver(() => {
        const t = document.querySelector('[data-testid="load-progress"]')?.textContent;
        if (t && t !== seen.at(-1)) seen.push(t);
      }).observe(document.body, { subtree: true, childList: true, characterData: true });
    });
    // a slow first file: the bar has a long moment in which only the previous load's numbers exist
    server.faults.set(`/${OPTIMUM.repo}/resolve/main/model_index.json`, { delayMs: 1500 });
    await loadExpecting(OPTIMUM.repo, 'webgpu');
    server.faults.clear();
    const texts = await b.page.evaluate(() => (window as unknown as { __progressTexts: string[] }).__progressTexts);
    expect(texts.filter((t) => t.includes(`/ ${previous}`))).toEqual([]);
    expect(texts.at(-1)).toContain(`/ ${own}`);
  });

  it.each([OPTIMUM, FUSED, AMUSE, TENSORSTACK].map((r) => [r.repo, r] as const))('%s loads with the token on webgpu and generates within 2 levels of diffusers', async (name, r) => {
    await loadExpecting(name, 'webgpu');
    const { diff, backend } = await generateReference(r);
    expect(backend).toBe('webgpu');
    expect(diff).toBeLessThanOrEqual(r.tolerance);
    // the status panel says where the model was found
    const layout = b.page.getByTestId('status-layout');
    if (r === AMUSE) await waitForText(layout, 'components at the root; transformer in transformer/; no model_index.json; scheduler: SD3 defaults');
    else await waitForText(layout, 'components at the root; transformer in transformer/; model_index.json; scheduler config');
  });

  it('the optimizer-fused export: its operators WebGPU lacks are lowered (the status panel lists them) and it matches the unfused one within 1 level', async () => {
    expect(pixels.get(FUSED.repo)).toBeDefined();
    let d = 0;
    const [plain, fused] = [pixels.get(OPTIMUM.repo)!, pixels.get(FUSED.repo)!];
    for (let i = 0; i < plain.length; i++) d = Math.max(d, Math.abs(plain[i] - fused[i]));
    expect(d).toBeLessThanOrEqual(1);
    // the fused one was loaded before the Amuse and TensorStack ones: load it again (cached) to read its status
    await loadFromHub(FUSED.repo);
    await waitForText(b.page.getByTestId('status-lowered'), 'vae_decoder: NhwcConv ×25, GroupNorm ×14, SkipGroupNorm ×7');
    await loadFromHub(OPTIMUM.repo);
    await b.page.getByTestId('status-lowered').waitFor({ state: 'detached' });
  });

  it('fp16 exports without shader-f16: refused by name (file, shader-f16) at the first graph, before any other file downloads; AMD picks io32', async () => {
    if (hasF16) {
      // an adapter with shader-f16 (not SwiftShader): the io16 variant is the AMD layout's choice, and it loads
      await loadFromHub(AMD.repo);
      await waitForText(b.page.getByTestId('status-layout'), 'variant folder stable-diffusion-3.5-medium_io16');
      return;
    }
    for (const [name, file] of [[FP16_IO16, 'text_encoder/model.onnx'], [FP16_IO32, 'text_encoder/model.onnx'], [AMD.repo, 'stable-diffusion-3.5-medium_io32/text_encoder/model.onnx']]) {
      server.requests.length = 0;
      await loadFromHub(name);
      await waitForText(b.page.getByTestId('model-error'), `could not load ${file}: it holds float16 weights, but this GPU adapter does not offer the shader-f16 feature`);
      // the graphs after the refused one, and every weight file, were never asked for
      const files = server.requests.filter((q) => q.method === 'GET' && q.path.includes('/resolve/') && /\.onnx/.test(q.path)).map((q) => q.path.replace(/^.*\/resolve\/[^/]+\//, ''));
      expect(files).toEqual([file]);
      expect(await b.page.getByTestId('model-label').textContent()).toMatch(loadedLabel(OPTIMUM.repo, 'webgpu'));
    }
  });

  it('the AMD layout on the wasm backend: its io32 variant found and chosen (the status panel says so), within 12 levels of diffusers (fp16 inside)', async () => {
    await b.page.goto(`${inject('baseUrl')}?backend=wasm`);
    await b.page.getByTestId('model-label').filter({ hasText: /tiny-sd3.* · wasm/ }).waitFor({ timeout: 120_000 });
    await loadExpecting(AMD.repo, 'wasm');
    await waitForText(b.page.getByTestId('status-layout'), 'variant folder stable-diffusion-3.5-medium_io32 (io32: float32 inputs and outputs for the wasm backend; found: stable-diffusion-3.5-medium_io16, stable-diffusion-3.5-medium_io32); transformer in unet/; no model_index.json; scheduler: SD3 defaults');
    const { diff, backend } = await generateReference(AMD);
    expect(backend).toBe('wasm');
    expect(diff).toBeLessThanOrEqual(AMD.tolerance);
  });
});
