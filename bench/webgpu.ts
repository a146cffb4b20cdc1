// npm run bench -- --webgpu: the interleaver benchmark in headless Chromium on
// the webgpu provider (SwiftShader here; a real GPU where the machine has
// one), in the worker the app uses, for both denoising paths:
//   host:   every step uploads each row (latents, embeddings) and reads its velocity back;
//   device: embeddings uploaded once, latents and the guidance/Euler update stay on the GPU.
// Same modes and table as the wasm bench (bench/modes.ts) for N = 1 and 4, and
// (a) and (c) for N = 8; long requests are 12 steps, not 50 (a tiny-model
// step takes SwiftShader about a second). --quick: N = 1 only.
// Writes bench/results.json under `webgpu`: the rows, the bytes a guided
// request moves per step on each path at 64² and 256², the step-time ratio
// between the paths, (c)/(a) throughput for each N, and `stages`: each row's
// per-stage times (text encoders, transformer run, guidance/Euler, VAE decode,
// read-backs: wall ms, and GPU ms from timestamp queries on our own pass where
// the device has timestamp-query) with the transformer's FLOPs and FLOP/s.
import { build, preview } from 'vite';
import { openApp } from '../tests/e2e/chromium.ts';
import { MODE_NAMES, MODES, pct, type Mode, type ModeRow } from './modes.ts';
import { writeResults } from './results-file.ts';
import type { StageName, StageTimings } from '../workers/engine/api/types.ts';

type Path = 'host' | 'device';
const PATHS: Path[] = ['host', 'device'];

interface Cell {
  wallMs: number;
  latencies: number[];
  shortMs: number;
  weightBytes: number;
  residency: Path;
  stepBytes: number[];
  stepMs: number[];
  /** Per-stage times of the measured requests (not the warm-up). */
  stages: StageTimings | null;
}

interface Row extends ModeRow {
  path: Path;
  bytesPerGuidedStep: number;
  stepMs: number;
  stages: StageTimings | null;
}

const STAGES: StageName[] = ['textEncoders', 'vaeEncode', 'transformer', 'guidance', 'vaeDecode', 'readback'];

/** One row's stages as flat figures: mean wall ms (and GPU ms where measured) per stage, transformer FLOPs and FLOP/s. */
function stageFigures(t: StageTimings | null): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of STAGES) {
    const s = t?.stages[k];
    if (!s) continue;
    out[`${k}WallMs`] = Number(s.wallMeanMs.toFixed(2));
    if (s.gpu) out[`${k}GpuMs`] = Number(s.gpu.meanMs.toFixed(3));
  }
  if (t?.transformer) {
    out.transformerFlopsPerRowStep = t.transformer.flopsPerRowStep;
    out.transformerFlopsPerSecond = Math.round(t.transformer.achievedFlopsPerSecond);
    if (t.transformer.peak) out.fractionOfPeak = t.transformer.peak.fraction;
  }
  return out;
}

const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;

export async function webgpuBench(out: string, quick: boolean): Promise<Record<string, unknown>> {
  const NS = quick ? [1] : [1, 4, 8];
  const SIZE = 64;
  const LONG_STEPS = 12;
  const started = Date.now();
  const log = (m: string) => console.log(`[webgpu ${((Date.now() - started) / 1000).toFixed(0)} s] ${m}`);
  await build({ mode: 'test', logLevel: 'warn' });
  const server = await preview({ mode: 'test', preview: { port: 4175, strictPort: false, host: '127.0.0.1' }, logLevel: 'warn' });
  const baseUrl = `${server.resolvedUrls!.local[0]}test.html`;
  const modelUrl = new URL('models/tiny-sd3/', baseUrl).href;
  const b = await openApp(baseUrl, 'webgpu');
  const rows: Row[] = [];
  let adapter = '';
  try {
    adapter = await b.page.evaluate(async () => ((await (window as unknown as { __engine: { status(): Promise<{ gpu?: { adapter: string } }> } }).__engine.status()).gpu?.adapter ?? ''));
    const cell = (mode: Mode, n: number, size: number, path: Path) =>
      b.page.evaluate(
        (o) => (window as unknown as { __engine: { benchMode(o: object): Promise<Cell> } }).__engine.benchMode(o),
        { modelUrl, mode, n, size, onDevice: path === 'device', longSteps: LONG_STEPS },
      );
    const row = (c: Cell, path: Path, size: number, n: number, mode: Mode): Row => ({
      path,
      size,
      n,
      mode,
      imagesPerSec: n / (c.wallMs / 1000),
      p50Ms: pct(c.latencies, 50),
      p95Ms: pct(c.latencies, 95),
      shortBehindLongMs: c.shortMs,
      weightMb: c.weightBytes / 1024 ** 2,
      bytesPerGuidedStep: mean(c.stepBytes),
      stepMs: mean(c.stepMs),
      stages: c.stages,
    });
    for (const path of PATHS) {
      for (const n of NS) {
        // at N = 8 only (a) and (c): the throughput ratio; (b) and (d) would double the run on SwiftShader
        for (const mode of n >= 8 ? (['a', 'c'] as Mode[]) : MODES) {
          const c = await cell(mode, n, SIZE, path);
          if (c.residency !== path) throw new Error(`asked for the ${path} path, the engine ran on ${c.residency}`);
          rows.push(row(c, path, SIZE, n, mode));
          log(`${path} N=${n} (${mode}) ${rows.at(-1)!.imagesPerSec.toFixed(2)} img/s, ${rows.at(-1)!.bytesPerGuidedStep} B per guided step`);
        }
      }
      // one request at 256²: the bytes per step grow with the image on the host path only
      const c = await cell('c', 1, 256, path);
      rows.push(row(c, path, 256, 1, 'c'));
      log(`${path} 256² ${rows.at(-1)!.bytesPerGuidedStep} B per guided step, ${rows.at(-1)!.stepMs.toFixed(0)} ms per step`);
    }
  } finally {
    await b.close();
    await server.close();
  }

  const get = (path: Path, size: number, n: number, mode: Mode) => rows.find((r) => r.path === path && r.size === size && r.n === n && r.mode === mode)!;
  const table = rows.map((r) => {
    const a = get(r.path, r.size, r.n, 'a');
    return {
      path: r.path,
      size: r.size,
      N: r.n,
      mode: `${r.mode} ${MODE_NAMES[r.mode]}`,
      'img/s': r.imagesPerSec.toFixed(2),
      'x (a)': a ? (r.imagesPerSec / a.imagesPerSec).toFixed(2) : '—',
      'p50 ms': r.p50Ms.toFixed(0),
      'p95 ms': r.p95Ms.toFixed(0),
      'short ms': r.shortBehindLongMs.toFixed(0),
      'short: (a)/this': a ? (a.shortBehindLongMs / r.shortBehindLongMs).toFixed(2) : '—',
      'weights MB': r.weightMb.toFixed(1),
      'B/guided step': r.bytesPerGuidedStep.toFixed(0),
    };
  });
  console.table(table);
  const transfer = Object.fromEntries(
    [64, 256].map((size) => {
      const [h, d] = PATHS.map((p) => get(p, size, 1, 'c'));
      const latentBytes = 16 * (size / 8) ** 2 * 4;
      return [size, { latentBytes, hostBytesPerGuidedStep: h.bytesPerGuidedStep, deviceBytesPerGuidedStep: d.bytesPerGuidedStep, hostOverDevice: h.bytesPerGuidedStep / d.bytesPerGuidedStep, deviceWithinTwiceLatent: d.bytesPerGuidedStep <= 2 * latentBytes }];
    }),
  );
  const stepTime = Object.fromEntries([64, 256].map((size) => [size, { hostMs: get('host', size, 1, 'c').stepMs, deviceMs: get('device', size, 1, 'c').stepMs, hostOverDevice: get('host', size, 1, 'c').stepMs / get('device', size, 1, 'c').stepMs }]));
  const throughputCOverA = Object.fromEntries(PATHS.map((p) => [p, Object.fromEntries(NS.map((n) => [n, get(p, SIZE, n, 'c').imagesPerSec / get(p, SIZE, n, 'a').imagesPerSec]))]));
  // per-stage times: every row's, and the two paths side by side for one batched request at each size
  const stageTable = rows.map((r) => ({ path: r.path, size: r.size, N: r.n, mode: r.mode, ...stageFigures(r.stages) }));
  console.table(stageTable);
  const stages = {
    clocks: 'wall: performance.now around each awaited stage (device path: until the GPU finished it); gpu: timestamp queries on the guidance/Euler pass (device path, timestamp-query granted)',
    gpuTimestamps: rows.some((r) => r.stages?.gpuTimestamps),
    rows: stageTable,
    bySize: Object.fromEntries([64, 256].map((size) => [size, Object.fromEntries(PATHS.map((p) => [p, stageFigures(get(p, size, 1, 'c').stages)]))])),
  };
  const results = { date: new Date().toISOString(), adapter, model: 'tiny-sd3', size: SIZE, longSteps: LONG_STEPS, rows, transfer, stepTime, throughputCOverA, stages, minutes: Number(((Date.now() - started) / 60000).toFixed(1)) };
  console.log(JSON.stringify({ transfer, stepTime, throughputCOverA, stages: stages.bySize }, null, 2));
  writeResults(out, 'webgpu', results);
  return results;
}
