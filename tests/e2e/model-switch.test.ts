// Switching models while work runs, as a person does it in the page: Load on
// the model already loaded, a second model loaded while 4 requests run (they
// finish on the old one), a switch that re-runs them, then a load from idle
// with 2 long requests sent during it. Every accepted request ends with its
// image, and none lingers in the durable queue. Runs on wasm (journey.test.ts).
// On webgpu, the device's own buffer meter shows a switch under a GPU memory
// setting that holds one model never holding both models' weights.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { EngineStatus, ModelInfo } from '../../workers/engine/api/types.ts';
import type { GpuMemory } from '../../workers/gpu-memory.ts';
import { startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';
import { openApp, waitForAttribute, waitForCount, waitForText, type BrowserSession } from './chromium.ts';
import { storedImages } from './page-images.ts';

describe('model switch in the page', () => {
  let b: BrowserSession;
  let server: ModelServer;
  beforeAll(async () => {
    server = await startModelServer({ repos: [{ repo: 'acme/slow', folder: TINY_MODEL_EXTERNAL_DIR }] });
    b = await openApp(inject('baseUrl'));
  });
  afterAll(async () => {
    await b?.close();
    await server?.close();
  });

  const cells = () => b.page.getByTestId('cell');
  const cell = (i: number) => cells().nth(i);
  const label = () => b.page.getByTestId('model-label');
  const loadUrl = async (url: string) => {
    await b.page.getByTestId('model-kind').selectOption('url');
    await b.page.getByTestId('model-url').fill(url);
    await b.page.getByTestId('load-model').click();
  };
  const queued = () => b.page.evaluate(() => (window as unknown as { __engine: { pending(): Promise<unknown[]> } }).__engine.pending().then((p) => p.length));

  const doneCells = () => b.page.locator('[data-testid="cell"][data-state="done"]');

  it('Load model on the model already loaded, mid-run: nothing reloads, every image arrives', async () => {
    await b.page.getByTestId('prompts').fill(['same a', 'same b', 'same c'].join('\n'));
    await b.page.getByTestId('steps').fill('200');
    await b.page.getByTestId('generate').click();
    await b.page.locator('[data-testid="cell"][data-state="denoising"]').nth(2).waitFor({ timeout: 60_000 });
    await b.page.getByTestId('model-kind').selectOption('tiny');
    await b.page.getByTestId('load-model').click();
    await waitForCount(doneCells(), 3);
    expect(await b.page.locator('[data-testid="cell"][data-state="failed"]').count()).toBe(0);
    expect((await storedImages(b.page)).filter((m) => m.prompt.startsWith('same ')).length).toBe(3);
    expect(await queued()).toBe(0);
  });

  it('a switch while 4 requests run: each finishes on the model it started on, none fails, all stay in view', async () => {
    await b.page.getByTestId('prompts').fill(['one', 'two', 'three', 'four'].map((p) => `running ${p}`).join('\n'));
    await b.page.getByTestId('steps').fill('200');
    await b.page.getByTestId('generate').click();
    await b.page.locator('[data-testid="cell"][data-state="denoising"]').nth(3).waitFor({ timeout: 60_000 });
    const external = new URL('models/tiny-sd3-external/', inject('baseUrl')).href;
    await loadUrl(external);
    await waitForText(label(), 'tiny-sd3-external');
    // the new model serves before the old one's requests are through: they were running during the switch
    expect(await doneCells().count()).toBeLessThan(7);
    await waitForCount(doneCells(), 7);
    expect(await b.page.locator('[data-testid="cell"][data-state="failed"]').count()).toBe(0);
    const running = (await storedImages(b.page)).filter((m) => m.prompt.startsWith('running '));
    expect(running.map((m) => m.modelId.endsWith('/tiny-sd3/'))).toEqual([true, true, true, true]);
    expect(await queued()).toBe(0);
  });

  it("with 'start again on the new model', requests running at a switch are re-run there from their seed", async () => {
    await b.page.getByTestId('prompts').fill('rerun me');
    await b.page.getByTestId('steps').fill('200');
    await b.page.getByTestId('generate').click();
    await b.page.locator('[data-testid="cell"][data-state="denoising"]').first().waitFor({ timeout: 60_000 });
    await b.page.getByTestId('on-switch').selectOption('rerun');
    await b.page.getByTestId('model-kind').selectOption('tiny');
    await b.page.getByTestId('load-model').click();
    await waitForCount(doneCells(), 8);
    const [image] = (await storedImages(b.page)).filter((m) => m.prompt === 'rerun me');
    expect(image.modelId).toMatch(/\/tiny-sd3\/$/);
    await b.page.getByTestId('on-switch').selectOption('finish');
  });

  it('2 long requests sent while a load runs wait for it and finish on the new model', async () => {
    // a slow link: the transformer's weights take 4 s to start arriving
    server.faults.set('/acme/slow/resolve/main/transformer/model.onnx_data', { delayMs: 4000 });
    await b.page.getByTestId('model-kind').selectOption('hub');
    await b.page.getByTestId('hub-repo').fill('acme/slow');
    await b.page.getByTestId('hub-host').fill(server.url);
    await b.page.getByTestId('load-model').click();
    await waitForAttribute(b.page.getByTestId('model-form'), 'data-busy', 'true');
    // sent while the load is under way
    await b.page.getByTestId('prompts').fill('waited for the load\nalso waited');
    await b.page.getByTestId('steps').fill('60');
    await b.page.getByTestId('generate').click();
    await waitForCount(b.page.locator('[data-testid="cell"][data-state="queued"]'), 2);
    expect(await b.page.getByTestId('model-form').getAttribute('data-busy')).toBe('true');
    await waitForCount(doneCells(), 10);
    expect(await label().textContent()).toMatch(/acme\/slow ·/);
    const images = (await storedImages(b.page)).filter((i) => i.prompt.includes('waited'));
    expect(images.map((i) => i.prompt).sort()).toEqual(['also waited', 'waited for the load']);
    expect(images.every((i) => i.modelId === 'acme/slow' && i.steps === 60)).toBe(true);
    expect(await cells().count()).toBe(10);
    expect(await queued()).toBe(0);
  });
});

describe('model switch on webgpu: the device holds one model at a time when the GPU memory setting allows only one', () => {
  let b: BrowserSession;
  beforeAll(async () => {
    b = await openApp(inject('baseUrl'), 'webgpu');
  });
  afterAll(async () => b?.close());

  interface Switch {
    /** Live device bytes when the switch began, the most during it, and after. */
    before: number;
    peak: number;
    after: number;
    weights: number;
    models: NonNullable<EngineStatus['memory']>['models'];
    lastLoad: NonNullable<EngineStatus['memory']>['lastLoad'];
  }

  /** Loads a model with the page's worker API, the GPU meter's peak started afresh at the load; a refusal comes back as its message. */
  const switchTo = (folder: string, memoryBytes?: number) =>
    b.page.evaluate(
      async ({ folder, memoryBytes }) => {
        type Api = {
          loadModel(s: object, p: undefined, o: object): Promise<ModelInfo>;
          status(): Promise<EngineStatus & { gpuMemory: GpuMemory | null }>;
          resetGpuMemoryPeak(): Promise<void>;
        };
        const api = (window as unknown as { __engine: Api }).__engine;
        await api.resetGpuMemoryPeak();
        const before = (await api.status()).gpuMemory!.liveBytes;
        let info: ModelInfo;
        try {
          info = await api.loadModel({ kind: 'url', url: new URL(`models/${folder}/`, location.href).href }, undefined, memoryBytes ? { fit: { memoryBytes } } : {});
        } catch (e) {
          return (e as Error).message;
        }
        const s = await api.status();
        return { before, peak: s.gpuMemory!.peakBytes, after: s.gpuMemory!.liveBytes, weights: info.weightBytes, models: s.memory!.models, lastLoad: s.memory!.lastLoad } satisfies Switch;
      },
      { folder, memoryBytes },
    );

  it("the meter's peak during a switch stays below both models' weights together; with room for both, it holds both", async () => {
    // a model that cannot fit even alone is refused with its numbers, and nothing is released for it
    const refused = await switchTo('tiny-sd3-external', 1024 ** 2);
    expect(refused).toMatch(/tiny-sd3-external\/: this model needs ~[\d.]+ MB of GPU memory .* The loaded model, \S+, keeps serving\./);
    // the page's default setting (8 GB) holds both: the new model loads beside the old one
    const ample = (await switchTo('tiny-sd3-external')) as Switch;
    // a setting that holds what one model needs to serve (its weights, the reserve, its smallest request,
    // as the engine counted it for this load) and half a model more: never two
    const memoryBytes = Math.ceil(ample.lastLoad!.needBytes + ample.weights / 2);
    // one at a time: the old model goes before the new one's sessions are made, then again the other way
    const tight = [await switchTo('tiny-sd3', memoryBytes), await switchTo('tiny-sd3-external', memoryBytes)] as Switch[];
    console.log(JSON.stringify({ memoryBytes, ample, tight }));
    expect(ample.peak).toBeGreaterThanOrEqual(ample.before + ample.weights * 0.9);
    expect(ample.lastLoad).toMatchObject({ order: 'beside' });
    for (const t of tight) {
      expect(t.lastLoad).toMatchObject({ order: 'release-first', budgetBytes: memoryBytes });
      expect(t.models).toEqual([expect.objectContaining({ state: 'loaded', weightBytes: t.weights })]);
      // the new model's weights never came on top of the old one's
      expect(t.peak).toBeLessThan(t.before + t.weights / 2);
    }
  });
});
