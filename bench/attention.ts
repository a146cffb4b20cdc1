// npm run bench -- --attention: the three forms attention can run in
// (device-fit.ts AttentionForm: 'fused', 'fused-chunked', 'decomposed-chunked'),
// measured in headless Chromium on the webgpu provider (SwiftShader here), each
// in a fresh page so no form inherits another's cached GPU buffers:
//   s/step (the first step compiles shaders; the later ones are the figure),
//   the largest GPU buffer and the peak of the device's own buffer meter
//   (workers/gpu-memory.ts, reset after the load, so weights are not in it),
//   and the largest pixel difference between the forms' images (same seed).
// Models: the tiny model at 256², and sd3-medium at full width with 2 blocks
// (narrow VAE, fp32; built under models/attention/, git-ignored) at 256²; with
// `--attention-1024` also at 1024² (SwiftShader takes ~30 min a step there, so
// one step per form, shader compilation included, and the unchunked fused form
// is not run where its scores cannot fit one buffer: the row says why).
// `--attention-quick`: the tiny model only; `--attention-wide`: the full-width
// model only. Writes bench/results.json `attention`, keeping the rows of models
// and sizes this run did not measure.
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode } from 'fast-png';
import { build, preview } from 'vite';
import { openApp } from '../tests/e2e/chromium.ts';
import { startModelServer } from '../tests/helpers/model-server.ts';
import { buildModel, specFromArgs } from '../tools/model-builder/build.ts';
import { FolderOutput } from '../tools/model-builder/weight-store.ts';
import type { GenerateRequest, ModelInfo, ModelSourceSpec, ProgressEvent } from '../workers/engine/api/types.ts';
import type { LoadModelOptions } from '../workers/engine/engine.ts';
import { ATTENTION_FORMS, NO_SUBGROUPS_FORM, type AttentionForm } from '../workers/engine/model/device-fit.ts';
import type { WorkerStatus } from '../workers/worker-api.ts';
import { readResults, writeResults } from './results-file.ts';

const ROOT = fileURLToPath(new URL('../models/attention/', import.meta.url));
const STEP_MODEL = ['--preset', 'sd3-medium', '--weights', 'fp32', '--layers', '2', '--encoder-layers', '1', '--vae-layers', '1', '--vae-channels', '32,32,32,32', '--no-t5', '--no-vae-encoder'];
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;

function ensureStepModel(): string {
  const dir = join(ROOT, 'step');
  const args = [...STEP_MODEL, '--out', dir];
  const stamp = join(dir, 'build-args.json');
  if (!existsSync(stamp) || readFileSync(stamp, 'utf8') !== JSON.stringify(args)) {
    const { spec, out } = specFromArgs(args);
    buildModel(spec, new FolderOutput(out));
    writeFileSync(stamp, JSON.stringify(args));
  }
  return dir;
}

const folderBytes = (dir: string) => readdirSync(dir, { withFileTypes: true, recursive: true }).reduce((a, e) => a + (e.isFile() && /model\.onnx/.test(e.name) ? statSync(join(e.parentPath, e.name)).size : 0), 0);

interface Api {
  loadModel(source: ModelSourceSpec, onProgress?: unknown, opts?: LoadModelOptions): Promise<ModelInfo>;
  generate(request: GenerateRequest, onProgress?: unknown): Promise<{ id: string; metadata: { timings: Record<string, number> } }>;
  status(): Promise<WorkerStatus>;
  resetGpuMemoryPeak(): Promise<void>;
  image?(id: string): Promise<unknown>;
}

interface Cell {
  form: AttentionForm;
  chunks: number;
  reason: string;
  loadMs: number;
  stepMs: number[];
  secondsPerStep: number;
  decodeMs: number;
  largestGpuBufferMb: number;
  gpuPeakMb: number;
  rgba: number[];
}

export interface AttentionRow {
  model: string;
  size: number;
  form: AttentionForm;
  chunks: number;
  secondsPerStep: number;
  firstStepSeconds: number;
  largestGpuBufferMb: number;
  gpuPeakMb: number;
  /** Largest 0..255 channel difference from the first form's image (same seed). */
  maxPixelDiff: number;
  /** Largest 0..255 channel difference from the same request on the wasm backend in Node (the tiny model only). */
  maxPixelDiffVsWasm?: number;
  /** Whether the engine's device had subgroups: 'granted (N wide)', 'withheld' (too narrow) or 'absent'. */
  subgroups?: string;
  /** Why a form was not run, or how its figure was taken. */
  note?: string;
}

/** Heads × T × T fp32 scores of one sd3-medium row at size² (77 CLIP + 256 T5 text tokens, 2×2 patches of the 8× latent). */
const sd3MediumScoreBytes = (size: number) => 24 * ((size / 16) ** 2 + 333) ** 2 * 4;

const REQUEST = { prompt: 'a lighthouse on a cliff at dusk', seed: 1234, guidance: 1 };

/** The same request on the wasm backend in Node: the reference the WebGPU forms are held to. */
async function wasmImage(dir: string, size: number, steps: number): Promise<number[]> {
  const { createNodeEngine } = await import('../workers/engine/node.ts');
  const engine = createNodeEngine();
  await engine.load({ kind: 'path', path: dir });
  try {
    return Array.from((await engine.generate({ ...REQUEST, steps, width: size, height: size })).rgba);
  } finally {
    await engine.unload();
  }
}

/** One form on one model in a fresh page: load it forced to the form, then one request, timed step by step. */
async function measure(baseUrl: string, source: ModelSourceSpec, form: AttentionForm, size: number, steps: number): Promise<{ cell: Cell; status: WorkerStatus }> {
  const b = await openApp(baseUrl, 'webgpu');
  try {
    return await b.page.evaluate(
      async ({ source, form, size, steps, request }) => {
        const w = window as unknown as { __engine: Api; __Comlink: { proxy<T>(f: T): T }; __lastImage?: Uint8ClampedArray };
        const t = performance.now();
        const info = await w.__engine.loadModel(source, undefined, { fit: { memoryBytes: 20 * 1024 ** 3, attention: form } });
        const loadMs = performance.now() - t;
        await w.__engine.resetGpuMemoryPeak();
        const stamps: number[] = [];
        let decodeAt = 0;
        const start = performance.now();
        const r = (await w.__engine.generate(
          { ...request, steps, width: size, height: size },
          w.__Comlink.proxy((e: ProgressEvent) => {
            if (e.status === 'step') stamps.push(performance.now());
            if (e.status === 'decoding') decodeAt ||= performance.now();
          }),
        )) as unknown as { png: Blob; metadata: { timings: Record<string, number> } };
        const end = performance.now();
        const status = await w.__engine.status();
        // the PNG's bytes: decoded in Node (fast-png), as the browser tests do, with no colour management between
        const rgba = Array.from(new Uint8Array(await r.png.arrayBuffer()));
        const stepMs = stamps.map((s, i) => s - (i ? stamps[i - 1] : start));
        const later = stepMs.slice(1);
        const secondsPerStep = (later.length ? later.reduce((a, b) => a + b, 0) / later.length : stepMs[0]) / 1000;
        return {
          cell: {
            form,
            chunks: info.attention?.chunks ?? 0,
            reason: info.attention?.reason ?? '',
            loadMs,
            stepMs,
            secondsPerStep,
            decodeMs: end - (decodeAt || end),
            largestGpuBufferMb: (status.gpuMemory?.largestBufferBytes ?? 0) / 1024 ** 2,
            gpuPeakMb: (status.gpuMemory?.peakBytes ?? 0) / 1024 ** 2,
            rgba,
          },
          status,
        };
      },
      { source, form, size, steps, request: REQUEST },
    );
  } finally {
    await b.close();
  }
}

const maxDiff = (a: number[], b: number[]) => (a.length !== b.length ? 255 : a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0));
const r3 = (x: number) => Number(x.toFixed(3));

export async function attentionBench(out: string, argv: string[]): Promise<Record<string, unknown>> {
  const quick = argv.includes('--attention-quick');
  const wideOnly = argv.includes('--attention-wide');
  const started = Date.now();
  const log = (m: string) => console.log(`[attention ${((Date.now() - started) / 1000).toFixed(0)} s] ${m}`);
  await build({ mode: 'test', logLevel: 'warn' });
  const server = await preview({ mode: 'test', preview: { port: 4176, strictPort: false, host: '127.0.0.1' }, logLevel: 'warn' });
  const baseUrl = `${server.resolvedUrls!.local[0]}test.html`;
  const stepDir = quick ? null : ensureStepModel();
  const files = stepDir ? await startModelServer({ repos: [{ repo: 'attention/step', folder: stepDir }] }) : null;
  const runs: { model: string; source: ModelSourceSpec; size: number; steps: number; wasmDir?: string }[] = wideOnly ? [] : [
    { model: 'tiny-sd3', source: { kind: 'url', url: new URL('models/tiny-sd3/', baseUrl).href }, size: 256, steps: 4, wasmDir: fileURLToPath(new URL('../public/models/tiny-sd3/', import.meta.url)) },
  ];
  if (stepDir && files) {
    const source: ModelSourceSpec = { kind: 'hub', repo: 'attention/step', host: files.url };
    runs.push({ model: `sd3-medium full width, 2 blocks, fp32 (${(folderBytes(stepDir) / GiB).toFixed(2)} GB)`, source, size: 256, steps: 2 });
    if (argv.includes('--attention-1024')) runs.push({ model: runs.at(-1)!.model, source, size: 1024, steps: 1 });
  }
  const rows: AttentionRow[] = [];
  const reasons: Record<string, string> = {};
  let adapter = '';
  let features: string[] = [];
  let auto: ModelInfo['attention'] | undefined;
  let subgroups = '';
  try {
    for (const run of runs) {
      const cells: Cell[] = [];
      const skipped: AttentionRow[] = [];
      for (const form of ATTENTION_FORMS) {
        const scoreBytes = run.wasmDir ? 0 : sd3MediumScoreBytes(run.size);
        if (form === 'fused' && adapter && !features.includes('subgroups') && scoreBytes > GiB) {
          // onnxruntime's unfused MultiHeadAttention kernel (no flash path without subgroups) holds one row's whole scores
          const note = `not run: without subgroups onnxruntime's MultiHeadAttention holds one row's scores whole, 24 heads × ${(run.size / 16) ** 2 + 333}² tokens × 4 B = ${(scoreBytes / GiB).toFixed(2)} GiB, over this adapter's 1 GiB buffer limit`;
          log(`${run.model} ${run.size}²: fused ${note}`);
          skipped.push({ model: run.model, size: run.size, form, chunks: 1, secondsPerStep: NaN, firstStepSeconds: NaN, largestGpuBufferMb: r3(scoreBytes / MiB), gpuPeakMb: NaN, maxPixelDiff: NaN, subgroups, note });
          continue;
        }
        log(`${run.model} ${run.size}²: ${form}`);
        const { cell, status } = await measure(baseUrl, run.source, form, run.size, run.steps);
        cell.rgba = Array.from(decode(Uint8Array.from(cell.rgba)).data);
        adapter ||= status.gpu?.adapter ?? '';
        features = status.gpu?.features ?? features;
        subgroups = features.includes('subgroups') ? `granted (${status.gpu?.subgroupSizes?.min ?? '?'} wide)` : status.gpu?.withheldFeatures ? 'withheld' : 'absent';
        cells.push(cell);
        reasons[`${run.model} ${run.size} ${form}`] = cell.reason;
        log(`  ${cell.chunks} chunk(s), steps ${cell.stepMs.map((s) => (s / 1000).toFixed(1)).join(' / ')} s, largest buffer ${cell.largestGpuBufferMb.toFixed(1)} MB, peak ${cell.gpuPeakMb.toFixed(0)} MB`);
      }
      const wasm = run.wasmDir ? await wasmImage(run.wasmDir, run.size, run.steps) : null;
      rows.push(...skipped);
      for (const c of cells) {
        rows.push({
          model: run.model,
          size: run.size,
          form: c.form,
          chunks: c.chunks,
          secondsPerStep: r3(c.secondsPerStep),
          firstStepSeconds: r3(c.stepMs[0] / 1000),
          largestGpuBufferMb: r3(c.largestGpuBufferMb),
          gpuPeakMb: Math.round(c.gpuPeakMb),
          maxPixelDiff: maxDiff(cells[0].rgba, c.rgba),
          ...(wasm ? { maxPixelDiffVsWasm: maxDiff(wasm, c.rgba) } : {}),
          subgroups,
          ...(run.steps === 1 ? { note: 'one step: its time includes compiling the shaders (seconds, against minutes for the step)' } : {}),
        });
      }
    }
    // what a plain load picks on this adapter
    const b = await openApp(baseUrl, 'webgpu');
    try {
      auto = (await b.page.evaluate(() => (window as unknown as { __engine: Api }).__engine.status())).model?.attention;
    } finally {
      await b.close();
    }
  } finally {
    await files?.close();
    await server.close();
  }
  console.table(rows);
  // rows of models and sizes this run did not measure stay (a wide-only or 1024² run keeps the tiny rows)
  const measured = new Set(runs.map((r) => `${r.model} ${r.size}`));
  const before = (readResults(out).attention ?? {}) as { rows?: AttentionRow[]; reasons?: Record<string, string> };
  const kept = (before.rows ?? []).filter((r) => !measured.has(`${r.model} ${r.size}`));
  const figures = {
    date: new Date().toISOString(),
    device: `SwiftShader (Chromium headless, CPU): ${adapter}`,
    features,
    subgroups: features.includes('subgroups'),
    note: 'each form in a fresh page; s/step is the mean of the steps after the first (which compiles shaders), or the one step where only one ran; largest buffer and peak from the device buffer meter, reset after the load (a form not run: the buffer it would need); image differences against the first form run, same seed; guidance 1 (one row per run); subgroups: what the engine\'s device had (granted with their width, withheld where narrower than 16, absent)',
    rows: [...kept, ...rows].map((r) => ({ ...r, subgroups: r.subgroups ?? 'absent' })),
    chosenHere: auto ?? null,
    noSubgroupsDefault: NO_SUBGROUPS_FORM,
    reasons: { ...Object.fromEntries(Object.entries(before.reasons ?? {}).filter(([k]) => ![...measured].some((m) => k.startsWith(`${m} `)))), ...reasons },
    totalMinutes: Number(((Date.now() - started) / 60000).toFixed(1)),
    bytesNote: `MB = ${MiB} bytes`,
  };
  writeResults(out, 'attention', figures);
  return figures;
}
