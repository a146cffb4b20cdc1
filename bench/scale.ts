// npm run bench -- --scale: real-size models, built by the project, in
// Chromium on WebGPU (SwiftShader here: 1 GiB buffers, ~1 GFLOP/s, buffers in
// RAM). Not part of npm test: it builds ~10 GB of models and runs for half an
// hour. It records, into bench/results.json under `scale`:
//   - plan time (Node), download + cache time and session creation time (page);
//   - the load-time memory of the full-depth SD3-medium fp32 transformer
//     (one 8.3 GB external data file, no re-sharding): renderer and GPU process
//     RSS peaks against the model's bytes, streamed (JSPI Blobs) and, for a
//     smaller model, streamed against buffers;
//   - s/step at 256² and 1024² for a full-width SD3-medium with 2 blocks, the
//     largest GPU buffer, and the engine's activation estimate against the GPU
//     buffers onnxruntime really allocated.
// `--steps-only [--sides 1024]` runs only the steps (on the 2-block model) and
// merges them into the figures already recorded: the 1024² step alone takes
// SwiftShader about half an hour.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Page } from 'playwright-core';
import { build, preview } from 'vite';
import { ensureBuilt } from './built-model.ts';
import type { GenerateRequest, ModelInfo, ModelSourceSpec, ProgressEvent } from '../workers/engine/api/types.ts';
import type { LoadModelOptions } from '../workers/engine/engine.ts';
import { fitRequest } from '../workers/engine/memory/budget.ts';
import { planModel } from '../workers/engine/model/load-model.ts';
import { nodeFolderFiles } from '../workers/engine/model/node-folder-files.ts';
import type { WorkerStatus } from '../workers/worker-api.ts';
import { openApp } from '../tests/e2e/chromium.ts';
import { startModelServer } from '../tests/helpers/model-server.ts';

const ROOT = fileURLToPath(new URL('../models/scale/', import.meta.url));
const GiB = 1024 ** 3;
const gb = (b: number) => Number((b / GiB).toFixed(3));

/** The models, as `npm run build:model` arguments; rebuilt when their arguments change. */
const MODELS = {
  // the full-depth transformer at fp32 (8.3 GB in one file), small encoders and VAE to load beside it
  load: ['--preset', 'sd3-medium', '--weights', 'fp32', '--encoder-layers', '1', '--vae-layers', '1', '--no-t5', '--no-vae-encoder'],
  // full width, 2 blocks: what SwiftShader can step at 1024² in minutes; a narrow VAE so the decode does not take hours
  step: ['--preset', 'sd3-medium', '--weights', 'fp32', '--layers', '2', '--encoder-layers', '1', '--vae-layers', '1', '--vae-channels', '32,32,32,32', '--no-t5', '--no-vae-encoder'],
} as const;

const ensureModel = (name: keyof typeof MODELS) => ensureBuilt(join(ROOT, name), MODELS[name]);

/** Resident memory of Chromium's processes by type, from /proc: RSS, its private and shared parts, and the peak (VmHWM). */
function chromiumMemory(): Record<string, { rss: number; anon: number; shmem: number; hwm: number }> {
  const out: Record<string, { rss: number; anon: number; shmem: number; hwm: number }> = {};
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    let cmd: string;
    let st: string;
    try {
      cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.includes('chromium')) continue;
      st = readFileSync(`/proc/${pid}/status`, 'utf8');
    } catch {
      continue;
    }
    const type = /--type=([a-z-]+)/.exec(cmd)?.[1] ?? 'browser';
    const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(st)?.[1] ?? 0) * 1024;
    const m = (out[type] ??= { rss: 0, anon: 0, shmem: 0, hwm: 0 });
    m.rss += kb('VmRSS');
    m.anon += kb('RssAnon');
    m.shmem += kb('RssShmem');
    m.hwm += kb('VmHWM');
  }
  return out;
}

/** Samples Chromium's memory while `f` runs: the peaks of the renderer's private and total memory, and of the GPU process. */
async function sampled<T>(f: () => Promise<T>): Promise<{ result: T; before: ReturnType<typeof chromiumMemory>; peak: { rendererRss: number; rendererAnon: number; gpuRss: number }; after: ReturnType<typeof chromiumMemory> }> {
  const before = chromiumMemory();
  const peak = { rendererRss: 0, rendererAnon: 0, gpuRss: 0 };
  const sample = () => {
    const m = chromiumMemory();
    peak.rendererRss = Math.max(peak.rendererRss, m.renderer?.rss ?? 0);
    peak.rendererAnon = Math.max(peak.rendererAnon, m.renderer?.anon ?? 0);
    peak.gpuRss = Math.max(peak.gpuRss, m['gpu-process']?.rss ?? 0);
  };
  const timer = setInterval(sample, 100);
  try {
    const result = await f();
    sample();
    return { result, before, peak, after: chromiumMemory() };
  } finally {
    clearInterval(timer);
  }
}

interface Api {
  loadModel(source: ModelSourceSpec, onProgress?: unknown, opts?: LoadModelOptions): Promise<ModelInfo>;
  generate(request: GenerateRequest, onProgress?: unknown): Promise<{ id: string; metadata: { timings: Record<string, number> } }>;
  status(): Promise<WorkerStatus>;
  resetGpuMemoryPeak(): Promise<void>;
}

/** Loads a model through the worker's API; resolves with the load's time and its progress events' files. */
function loadIn(page: Page, source: ModelSourceSpec, opts: LoadModelOptions): Promise<{ ms: number; info: ModelInfo; downloadMs: number }> {
  return page.evaluate(
    async ({ source, opts }) => {
      const w = window as unknown as { __engine: Api; __Comlink: { proxy<T>(f: T): T } };
      let firstByte = 0;
      let lastDownload = 0;
      const t = performance.now();
      const info = await w.__engine.loadModel(
        source,
        w.__Comlink.proxy((e: ProgressEvent) => {
          if (e.status === 'download') {
            firstByte ||= performance.now();
            lastDownload = performance.now();
          } else (window as unknown as { __lastProgress: string }).__lastProgress = `${e.status} ${e.file ?? ''}`;
        }),
        opts,
      );
      return { ms: performance.now() - t, info, downloadMs: firstByte ? lastDownload - firstByte : 0 };
    },
    { source, opts },
  );
}

/** One request; the time of each step from its progress events, and the GPU buffers it took. */
function stepIn(page: Page, request: GenerateRequest) {
  return page.evaluate(async (request) => {
    const w = window as unknown as { __engine: Api; __Comlink: { proxy<T>(f: T): T } };
    await w.__engine.resetGpuMemoryPeak();
    const before = (await w.__engine.status()).gpuMemory!;
    const steps: number[] = [];
    const r = await w.__engine.generate(
      request,
      w.__Comlink.proxy((e: ProgressEvent) => {
        if (e.status === 'step') steps.push(e.elapsedMs ?? 0);
      }),
    );
    const after = (await w.__engine.status()).gpuMemory!;
    return { timings: r.metadata.timings, stepElapsedMs: steps, liveBefore: before.liveBytes, peak: after.peakBytes, largest: after.largestBufferBytes };
  }, request);
}

export interface ScaleBenchOptions {
  quick?: boolean;
  /** Skip the 8.3 GB load and the streamed-against-buffers compare; merge the steps into what is recorded. */
  stepsOnly?: boolean;
  /** Image sides to step at (default 256 and 1024; 256 alone with `quick`). */
  sides?: number[];
}

export async function scaleBench(out: string, o: ScaleBenchOptions = {}): Promise<Record<string, unknown>> {
  const quick = o.quick ?? false;
  const sides = o.sides ?? (quick ? [256] : [256, 1024]);
  const started = Date.now();
  const log = (m: string) => console.log(`[scale ${((Date.now() - started) / 1000).toFixed(0)} s] ${m}`);
  const step = await ensureModel('step');
  const models = o.stepsOnly ? { step } : { load: await ensureModel('load'), step };
  log(`models ready: ${Object.entries(models).map(([k, m]) => `${k} ${gb(m.bytes)} GB${m.buildSeconds ? ` (built in ${m.buildSeconds.toFixed(0)} s)` : ''}`).join(', ')}`);

  // plan: configs, graphs and sizes only
  const fit = { memoryBytes: 20 * GiB, maxBufferBytes: GiB, maxFileBytes: Infinity, features: [] as string[] };
  const planned: Record<string, number> = {};
  for (const [name, m] of Object.entries(models)) {
    const t = performance.now();
    await planModel(nodeFolderFiles(m.dir), { backend: 'webgpu', fit });
    planned[name] = performance.now() - t;
  }
  const stepPlan = await planModel(nodeFolderFiles(step.dir), { backend: 'webgpu', fit });

  // the test build: the app with its worker's API on window
  await build({ mode: 'test', logLevel: 'warn' });
  const server = await preview({ mode: 'test', preview: { port: 4174, strictPort: false, host: '127.0.0.1' }, logLevel: 'warn' });
  const baseUrl = `${server.resolvedUrls!.local[0]}test.html`;
  const files = await startModelServer({ repos: Object.entries(models).map(([k, m]) => ({ repo: `scale/${k}`, folder: m.dir })) });
  const hub = (repo: string): ModelSourceSpec => ({ kind: 'hub', repo, host: files.url });
  const opts = { fit: { memoryBytes: 20 * GiB } };
  const results: Record<string, unknown> = { date: new Date().toISOString(), device: 'SwiftShader (Chromium 156 headless, CPU)', planMs: planned };

  let previous: Record<string, unknown> = {};
  try {
    previous = JSON.parse(readFileSync(out, 'utf8'));
  } catch {
    /* first run */
  }
  const recorded = (previous.scale ?? {}) as Record<string, unknown>;
  try {
    if (!o.stepsOnly) await measureLoad();
    await stepAndCompare();
  } finally {
    await files.close();
    await server.close();
  }
  const merged = o.stepsOnly
    ? { ...recorded, steps: { ...(recorded.steps as object | undefined), ...(results.steps as object), date: results.date }, planMs: { ...(recorded.planMs as object | undefined), ...planned } }
    : results;
  results.totalMinutes = Number(((Date.now() - started) / 60000).toFixed(1));
  writeFileSync(out, `${JSON.stringify({ ...previous, scale: merged }, null, 2)}\n`);
  console.log(JSON.stringify(results, null, 2));
  console.log(`wrote scale figures to ${out}`);
  return results;

  async function measureLoad(): Promise<void> {
    const load = models.load!;
    // 1. the 8.3 GB transformer: first load (download into Cache Storage + sessions), then again from the cache
    let b = await openApp(baseUrl, 'webgpu');
    b.page.on('console', (m) => log(`page: ${m.text().slice(0, 300)}`));
    const status = await b.page.evaluate(() => (window as unknown as { __engine: Api }).__engine.status());
    results.runtime = status.gpu?.runtime;
    const transformerFile = (await stat(join(load.dir, 'transformer/model.onnx_data'))).size;
    const watch = (page: Page) =>
      setInterval(() => {
        void page
          .evaluate(() => `${document.querySelector('[data-testid="banner"]')?.textContent ?? ''} | last: ${(window as unknown as { __lastProgress?: string }).__lastProgress ?? ''}`)
          .then((t) => log(`waiting: ${t}`))
          .catch(() => undefined);
      }, 30_000);
    let w = watch(b.page);
    const first = await sampled(() => loadIn(b.page, hub('scale/load'), opts));
    clearInterval(w);
    log(`load 1 (download + cache + sessions): ${(first.result.ms / 1000).toFixed(0)} s`);
    // the same profile, a fresh page and worker: the files come from Cache Storage
    await b.page.reload();
    await b.page.getByTestId('model-label').filter({ hasText: /tiny-sd3.* · webgpu/ }).waitFor({ timeout: 120_000 });
    w = watch(b.page);
    const second = await sampled(() => loadIn(b.page, hub('scale/load'), opts));
    clearInterval(w);
    log(`load 2 (from the cache): ${(second.result.ms / 1000).toFixed(0)} s`);
    const largestTensor = 1 * 192 * 192 * 1536 * 4; // pos_embed, the transformer's largest weight
    const loadFigures = (s: typeof first) => ({
      ms: Math.round(s.result.ms),
      rendererBeforeGb: gb(s.before.renderer?.rss ?? 0),
      rendererPeakGb: gb(s.peak.rendererRss),
      rendererPeakPrivateGb: gb(s.peak.rendererAnon),
      rendererAfterGb: gb(s.after.renderer?.rss ?? 0),
      rendererAfterPrivateGb: gb(s.after.renderer?.anon ?? 0),
      gpuProcessPeakGb: gb(s.peak.gpuRss),
      // the load's own growth of the renderer, against the model's bytes
      peakGrowthToModel: Number(((s.peak.rendererRss - (s.before.renderer?.rss ?? 0)) / load.bytes).toFixed(3)),
      privatePeakGrowthToModel: Number(((s.peak.rendererAnon - (s.before.renderer?.anon ?? 0)) / load.bytes).toFixed(3)),
      privatePeakGrowthToLargestTensor: Number(((s.peak.rendererAnon - (s.before.renderer?.anon ?? 0)) / largestTensor).toFixed(2)),
    });
    results.load = {
      model: 'sd3-medium fp32, full-depth transformer (24 blocks), 1-layer CLIPs, no T5',
      modelGb: gb(load.bytes),
      transformerDataFileGb: gb(transformerFile),
      largestTensorMb: Math.round(largestTensor / 1024 ** 2),
      downloadAndCacheMs: Math.round(first.result.ms - second.result.ms),
      sessionCreateMs: Math.round(second.result.ms),
      first: loadFigures(first),
      cached: loadFigures(second),
    };
    await b.close();
  }

  async function stepAndCompare(): Promise<void> {
    // 2. streamed Blobs against buffers, on the 2-block model (buffers cannot hold the 8.3 GB file)
    const compare: Record<string, unknown> = {};
    for (const stream of o.stepsOnly ? [true] : [true, false]) {
      const b = await openApp(baseUrl, 'webgpu');
      const s = await sampled(() => loadIn(b.page, hub('scale/step'), { ...opts, streamExternalData: stream }));
      compare[stream ? 'streamed' : 'buffers'] = {
        ms: Math.round(s.result.ms),
        rendererPeakGrowthGb: gb(s.peak.rendererRss - (s.before.renderer?.rss ?? 0)),
        rendererPrivatePeakGrowthGb: gb(s.peak.rendererAnon - (s.before.renderer?.anon ?? 0)),
        rendererPrivateAfterGrowthGb: gb((s.after.renderer?.anon ?? 0) - (s.before.renderer?.anon ?? 0)),
        toModel: Number(((s.peak.rendererRss - (s.before.renderer?.rss ?? 0)) / step.bytes).toFixed(3)),
      };
      if (stream) {
        // 3. steps at 256² and 1024² on the same page
        const steps: Record<string, unknown> = {};
        for (const side of sides) {
          const request = { prompt: 'a lighthouse on a cliff at dusk', seed: 1, steps: side === 256 ? 2 : 1, guidance: 1, width: side, height: side };
          log(`step at ${side}² …`);
          const r = await stepIn(b.page, request);
          const f = fitRequest(stepPlan.budget, stepPlan.dims, side, side, 1);
          const measured = r.peak - r.liveBefore;
          steps[side] = {
            stepMs: r.stepElapsedMs.map((e, i) => Math.round(e - (i ? r.stepElapsedMs[i - 1] : r.timings.queuedMs + r.timings.encodeMs))),
            firstStepIncludesShaderCompile: true,
            decodeMs: Math.round(r.timings.decodeMs),
            largestGpuBufferMb: Math.round(r.largest / 1024 ** 2),
            activationPeakMb: Math.round(measured / 1024 ** 2),
            estimateMb: Math.round((f.row.activationBytes + f.decode.activationBytes) / 1024 ** 2),
            estimateToMeasured: Number(((f.row.activationBytes + f.decode.activationBytes) / measured).toFixed(2)),
            attentionChunks: stepPlan.dims.transformerChunks,
          };
          log(`step at ${side}²: ${JSON.stringify(steps[side])}`);
        }
        results.steps = { model: 'sd3-medium fp32, full width, 2 blocks, narrow VAE (32 channels)', modelGb: gb(step.bytes), ...steps };
      }
      await b.close();
    }
    if (!o.stepsOnly) results.streamedVsBuffers = compare;
  }
}
