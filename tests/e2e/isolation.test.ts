// Cross-origin isolation: the page and its worker are isolated (COOP same-origin,
// COEP credentialless, on every response and in the build's _headers), so the
// wasm backend runs on min(cores, 8) threads (1 under 4 cores: wasm-threads.ts); one image generates, and
// downloads by Hub repo id and by URL from a cross-origin server (the local Hub
// test server, which sends CORS headers) still load and generate.
// MEASURE_THREADS=<rounds> also times a transformer step at 256² with 1 thread (the
// page served without isolation) against N threads, and prints the figures.
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ImageMetadata } from '../../workers/engine/api/types.ts';
import type { WorkerStatus } from '../../workers/worker-api.ts';
import { startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';
import { openApp, openBrowser, waitForAttribute, waitForCount, waitForText, type BrowserSession } from './chromium.ts';
import { wasmThreads } from '../../workers/wasm-threads.ts';

const REPO = 'acme/isolated-sd3';
const ISOLATION = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'credentialless' };

type Api = { status(): Promise<WorkerStatus>; generate(r: object): Promise<{ metadata: ImageMetadata }> };
const status = (b: BrowserSession) => b.page.evaluate(() => (window as unknown as { __engine: Api }).__engine.status());
/** The engine's worker (onnxruntime's own pthread workers load its bundle instead). */
const engineWorker = (b: BrowserSession) => b.page.workers().find((w) => w.url().includes('engine.test-worker'));

describe('cross-origin isolation and wasm threads in the page', () => {
  let b: BrowserSession;
  let server: ModelServer;
  let expectedThreads = 0;
  const label = () => b.page.getByTestId('model-label');
  const gets = (part: string) => server.requests.filter((r) => r.method === 'GET' && r.path.includes(part));

  const load = async (kind: 'hub' | 'url', fill: () => Promise<void>) => {
    await b.page.getByTestId('model-kind').selectOption(kind);
    await fill();
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
    expect(await b.page.locator('[data-testid="cell"][data-state="failed"]').count()).toBe(0);
  };

  beforeAll(async () => {
    // Hub layout for the repo id, and the models folder as is for URLs: another origin than the page's
    server = await startModelServer({ root: dirname(TINY_MODEL_EXTERNAL_DIR), repos: [{ repo: REPO, folder: TINY_MODEL_EXTERNAL_DIR }] });
    b = await openApp(inject('baseUrl'));
    expectedThreads = wasmThreads(true, (await engineWorker(b)!.evaluate(() => navigator.hardwareConcurrency)) || 1);
  });
  afterAll(async () => {
    await b?.close();
    await server?.close();
  });

  it('the page, its worker script and the build’s _headers carry COOP and COEP', async () => {
    const page = await fetch(inject('baseUrl'));
    const worker = engineWorker(b);
    expect(worker).toBeDefined();
    const script = await fetch(worker!.url());
    for (const res of [page, script]) {
      for (const [name, value] of Object.entries(ISOLATION)) expect(res.headers.get(name)).toBe(value);
      expect(res.headers.get('content-security-policy')).toContain("worker-src 'self'");
    }
    const headers = await readFile(new URL('../../dist-test/_headers', import.meta.url), 'utf8');
    expect(headers).toContain('Cross-Origin-Opener-Policy: same-origin');
    expect(headers).toContain('Cross-Origin-Embedder-Policy: credentialless');
  });

  it('page and worker are cross-origin isolated; wasm runs on min(cores, 8) threads (1 under 4 cores) and generates', async () => {
    expect(await b.page.evaluate(() => crossOriginIsolated)).toBe(true);
    expect(await engineWorker(b)!.evaluate(() => self.crossOriginIsolated)).toBe(true);
    const s = await status(b);
    expect(s.backend).toBe('wasm');
    expect(s.gpu?.threads).toBe(expectedThreads);
    await generateOne('threaded wasm');
    // onnxruntime's pthreads are workers loading its own bundle; none failed to load under the CSP
    if (expectedThreads > 1) expect(b.page.workers().filter((w) => /ort\.[a-z]+\.bundle/.test(w.url())).length).toBeGreaterThanOrEqual(expectedThreads - 1);
    expect(b.errors.filter((e) => /Content Security Policy|worker|SharedArrayBuffer/i.test(e))).toEqual([]);
  });

  it('a Hub download from another origin loads and generates under isolation', async () => {
    await load('hub', async () => {
      await b.page.getByTestId('hub-repo').fill(REPO);
      await b.page.getByTestId('hub-subfolder').fill('');
      await b.page.getByTestId('hub-host').fill(server.url);
    });
    await waitForText(label(), REPO);
    expect(gets(`/${REPO}/resolve/`).filter((r) => r.path.endsWith('transformer/model.onnx_data'))).toHaveLength(1);
    await generateOne('from the hub, isolated');
  });

  it('a URL download from another origin loads and generates under isolation', async () => {
    await load('url', () => b.page.getByTestId('model-url').fill(`${server.url}/tiny-sd3-external/`));
    await waitForText(label(), 'tiny-sd3-external');
    expect(await label().textContent()).not.toContain(REPO);
    expect(gets('/tiny-sd3-external/transformer/model.onnx_data').length).toBeGreaterThanOrEqual(1);
    await generateOne('from a url, isolated');
  });

  it.runIf(process.env.MEASURE_THREADS)('per-step time at 1 thread against N threads (256², wasm)', async () => {
    const STEPS = 4;
    // one browser at a time (two cores leave no room for another), N and 1 threads in turn to even out drift
    const perStep = async (isolated: boolean) => {
      const s = await openBrowser();
      try {
        // the same build with COOP/COEP stripped from the page: not isolated, so one thread
        if (!isolated) {
          await s.context.route(/test\.html/, async (route) => {
            const res = await route.fetch();
            const headers = res.headers();
            for (const name of Object.keys(ISOLATION)) delete headers[name];
            await route.fulfill({ response: res, headers });
          });
        }
        await s.page.goto(`${inject('baseUrl')}?backend=wasm`);
        await s.page.getByTestId('model-label').filter({ hasText: /tiny-sd3.* · wasm/ }).waitFor({ timeout: 120_000 });
        expect(await s.page.evaluate(() => crossOriginIsolated)).toBe(isolated);
        expect((await status(s)).gpu?.threads).toBe(isolated ? expectedThreads : 1);
        const runs = await s.page.evaluate(async (steps) => {
          const api = (window as unknown as { __engine: Api }).__engine;
          const out: { transformerMs: number; runs: number }[] = [];
          // the first six warm up (wasm tiers up to optimised code over seconds); the next six are timed
          for (let i = 0; i < 12; i++) {
            const { metadata } = await api.generate({ prompt: 'timed', seed: i, steps, guidance: 4.5, width: 256, height: 256 });
            out.push({ transformerMs: metadata.timings.stages!.transformerMs, runs: metadata.timings.stages!.transformerRuns });
          }
          return out.slice(6);
        }, STEPS);
        expect(runs.every((r) => r.runs === STEPS)).toBe(true);
        return runs.map((r) => r.transformerMs / STEPS);
      } finally {
        await s.close();
      }
    };
    await b.close();
    const n: number[] = [];
    const one: number[] = [];
    const rounds = Number(process.env.MEASURE_THREADS) || 1;
    for (let round = 0; round < rounds; round++) {
      n.push(...(await perStep(true)));
      one.push(...(await perStep(false)));
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
    const f = (xs: number[]) => xs.map((x) => x.toFixed(1)).join(', ');
    console.log(`transformer ms per step at 256², ${STEPS} steps, guidance batched (1 run a step): 1 thread ${f(one)}; ${expectedThreads} threads ${f(n)}; ratio of medians ${(median(one) / median(n)).toFixed(2)}`);
    expect(Math.min(...one, ...n)).toBeGreaterThan(0);
  });
});
