// npm run bench: the interleaver against sequential and naive serving, on Node
// with native onnxruntime's CPU provider (`--wasm`: onnxruntime-web's wasm on
// one thread, as before) and the tiny model. Every figure is also given as a
// ratio to mode (a) from the same run, since this machine is noisy.
//   (a) sequential: one request at a time through one engine
//   (b) interleaved, batch size 1
//   (c) interleaved and batched
//   (d) naive: a separate set of sessions per request (the "deep copy")
// Writes bench/results.json and prints a table. --server: the seed's HTTP API
// against the engine alone (bench/server.ts).
import { writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { GenerateRequest } from '../workers/engine/api/types.ts';
import type { Engine } from '../workers/engine/engine.ts';
import { createNodeEngine, wasmNodeRuntime } from '../workers/engine/node.ts';
import { cpuRuntime } from '../workers/engine/runtime/node-runtime.ts';
import { decodeLatents, rgbaToPng } from '../workers/engine/sd3/decode.ts';
import { combineGuidance, predictRows } from '../workers/engine/sd3/denoise-step.ts';
import { encodePrompts } from '../workers/engine/sd3/encode-prompt.ts';
import { RequestRng } from '../workers/engine/rng.ts';
import { runSoak, soakRequests } from './soak.ts';
import { readResults, writeResults } from './results-file.ts';
import { LONG_STEPS, MAX_BATCH, MODE_NAMES, modeOptions, pct, req as modeRequest, runBatch, shortBehindLong as shortBehind, STEPS, type Mode, type ModeRow } from './modes.ts';

const MODEL = fileURLToPath(new URL('../public/models/tiny-sd3/', import.meta.url));
const OUT = fileURLToPath(new URL('./results.json', import.meta.url));
const quick = process.argv.includes('--quick');
const soakOnly = process.argv.includes('--soak');
const SIZES = quick ? [64] : [64, 256];
const NS = quick ? [1, 4] : [1, 4, 8, 16];
/** The runtime every engine of the run is made on. */
const runtime = () => (process.argv.includes('--wasm') ? wasmNodeRuntime() : cpuRuntime());

interface Row extends ModeRow {
  peakRssMb: number;
  rssGrowthMb: number;
  peakRequestMb: number;
}

const mb = (b: number) => b / 1024 / 1024;

function rssSampler() {
  let peak = process.memoryUsage().rss;
  const t = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 5);
  return { stop: () => (clearInterval(t), Math.max(peak, process.memoryUsage().rss)) };
}

const req = (i: number, size: number, steps = STEPS): GenerateRequest => modeRequest(i, size, steps);
const shortBehindLong = (mode: Mode, engines: Engine[], n: number, size: number) => shortBehind(mode, engines, n, size, LONG_STEPS);

async function engineFor(mode: Mode): Promise<Engine> {
  const e = createNodeEngine({ ...modeOptions(mode), runtime: runtime() });
  await e.load({ kind: 'path', path: MODEL });
  return e;
}

/** The same sessions called back to back by hand, no interleaver: the overhead baseline. */
async function byHand(engine: Engine, r: GenerateRequest, size: number): Promise<number> {
  const m = engine.model!;
  const ort = engine.options.ort;
  const t0 = performance.now();
  const [cond, uncond] = await encodePrompts(m, ort, [r.prompt, '']);
  const lat = size / m.vaeConfig.scaleFactor;
  const shape = [m.vaeConfig.latentChannels, lat, lat] as const;
  const latents = new RequestRng(r.seed!).normal(shape[0] * lat * lat);
  const sched = m.scheduler.cloneForRequest({ steps: r.steps! });
  while (!sched.done) {
    const [vu, vc] = await predictRows(m, ort, [{ latents, timestep: sched.timestep, embedding: uncond }, { latents, timestep: sched.timestep, embedding: cond }], shape);
    sched.step(latents, combineGuidance(vu, vc, m.info.defaults.guidance, vu));
  }
  const [rgba] = await decodeLatents(m, ort, [latents], lat, lat);
  rgbaToPng(rgba, size, size); // the engine's product is a PNG too
  return performance.now() - t0;
}

/**
 * The soak: 100 mixed requests (bench/soak.ts) through one engine. A first
 * round of the same mix warms it up: the wasm heap grows to the mix's high-
 * water mark and WebAssembly memory never shrinks, so the baseline is taken
 * after it (RSS after a GC). Two measured rounds follow; if memory returns to
 * its baseline, RSS after them stays within a few percent of it.
 */
async function soak() {
  const engine = createNodeEngine({ maxActive: 32, maxBatch: MAX_BATCH, runtime: runtime() });
  await engine.load({ kind: 'path', path: MODEL });
  const settle = async () => {
    for (let i = 0; i < 3; i++) {
      global.gc?.();
      await new Promise((r) => setTimeout(r, 50));
    }
    return process.memoryUsage().rss;
  };
  const rssStart = await settle();
  await runSoak(engine, soakRequests(100, 'warm'));
  const baseline = await settle();
  const sampler = rssSampler();
  const report = await runSoak(engine, soakRequests(100, 'round1'));
  const afterRound1 = await settle();
  const report2 = await runSoak(engine, soakRequests(100, 'round2'));
  const peak = sampler.stop();
  await engine.idle();
  const after = await settle();
  const s = engine.status();
  const figures = {
    requests: report.requests + report2.requests,
    completed: report.completed + report2.completed,
    cancelled: report.cancelled + report2.cancelled,
    failed: report.failed + report2.failed,
    wrongOutcomes: report.wrongOutcome.length + report2.wrongOutcome.length,
    mismatchedImages: report.mismatched.length + report2.mismatched.length,
    wallMsRound1: Math.round(report.wallMs),
    imagesPerSec: report.completed / (report.wallMs / 1000),
    gcAvailable: typeof global.gc === 'function',
    rssBeforeWarmupMb: mb(rssStart),
    rssBaselineMb: mb(baseline),
    rssAfterRound1Mb: mb(afterRound1),
    rssAfterRound2Mb: mb(after),
    rssPeakMb: mb(peak),
    rssAfterOverBaseline: after / baseline,
    requestBytesAfter: s.requestBytes,
    admittedBytesAfter: s.admittedBytes,
    peakAdmittedMb: mb(s.peakAdmittedBytes),
    budgetMb: mb(s.requestBudgetBytes),
  };
  await engine.unload();
  return figures;
}

async function main() {
  if (process.argv.includes('--attention') || process.argv.includes('--attention-quick')) return void (await import('./attention.ts')).attentionBench(OUT, process.argv);
  if (process.argv.includes('--native') || process.argv.includes('--native-quick')) return void (await import('./native.ts')).nativeBench(OUT, process.argv);
  if (process.argv.includes('--img2img')) return void (await import('./img2img.ts')).img2imgBench(OUT, process.argv);
  if (process.argv.includes('--gpu') || process.argv.includes('--gpu-dry-run')) return (await import('./gpu.ts')).gpuBenchMain(OUT, process.argv);
  if (process.argv.includes('--client')) {
    const { clientBench } = await import('./client.ts');
    const figures = await clientBench();
    console.log(JSON.stringify(figures, null, 2));
    writeResults(OUT, 'client', figures);
    return;
  }
  if (process.argv.includes('--server')) {
    const { serverBench } = await import('./server.ts');
    await serverBench(OUT);
    return;
  }
  if (process.argv.includes('--gallery')) {
    const { galleryBench } = await import('./gallery.ts');
    await galleryBench(OUT);
    return;
  }
  if (process.argv.includes('--webgpu')) {
    const { webgpuBench } = await import('./webgpu.ts');
    await webgpuBench(OUT, process.argv.includes('--quick'));
    return;
  }
  if (process.argv.includes('--scale')) {
    const { scaleBench } = await import('./scale.ts');
    const sides = process.argv.indexOf('--sides');
    await scaleBench(OUT, {
      quick: process.argv.includes('--quick'),
      stepsOnly: process.argv.includes('--steps-only'),
      sides: sides > 0 ? process.argv[sides + 1].split(',').map(Number) : undefined,
    });
    return;
  }
  if (soakOnly) {
    const figures = await soak();
    console.table([figures]);
    writeResults(OUT, 'soak', { date: new Date().toISOString(), ...figures });
    return;
  }
  const rows: Row[] = [];
  const overhead: { size: number; byHandMs: number; engineMs: number; ratio: number }[] = [];
  for (const size of SIZES) {
    // overhead: (c) at N=1 against the same sessions by hand, best of 5 each
    const e = await engineFor('c');
    for (let i = 0; i < 2; i++) await e.generate(req(i, size)); // warm up
    const hand: number[] = [];
    const eng: number[] = [];
    for (let i = 0; i < 5; i++) {
      hand.push(await byHand(e, req(i, size), size));
      const s = performance.now();
      await e.generate(req(i, size));
      eng.push(performance.now() - s);
    }
    const byHandMs = Math.min(...hand);
    const engineMs = Math.min(...eng);
    overhead.push({ size, byHandMs, engineMs, ratio: byHandMs / engineMs });
    await e.unload();

    for (const n of NS) {
      for (const mode of ['a', 'b', 'c', 'd'] as Mode[]) {
        global.gc?.();
        const rssBefore = process.memoryUsage().rss;
        const sampler = rssSampler();
        const engines = mode === 'd' ? await Promise.all(Array.from({ length: n + 1 }, () => engineFor(mode))) : [await engineFor(mode)];
        await engines[0].generate(req(0, size, 1)); // warm the shapes
        let peakRequest = 0;
        const probe = setInterval(() => (peakRequest = Math.max(peakRequest, ...engines.map((x) => x.status().requestBytes))), 2);
        const { latencies, wallMs } = await runBatch(mode, engines, Array.from({ length: n }, (_, i) => req(i, size)));
        const short = await shortBehindLong(mode, engines, n, size);
        clearInterval(probe);
        const peakRss = sampler.stop();
        const weightBytes = engines.reduce((s, x) => s + (x.status().weightBytes ?? 0), 0);
        rows.push({
          size,
          n,
          mode,
          imagesPerSec: n / (wallMs / 1000),
          p50Ms: pct(latencies, 50),
          p95Ms: pct(latencies, 95),
          shortBehindLongMs: short,
          peakRssMb: mb(peakRss),
          rssGrowthMb: mb(peakRss - rssBefore),
          weightMb: mb(weightBytes),
          peakRequestMb: mb(peakRequest),
        });
        await Promise.all(engines.map((x) => x.unload()));
        process.stderr.write(`size ${size} N=${n} (${mode}) ${rows.at(-1)!.imagesPerSec.toFixed(2)} img/s\n`);
      }
    }
  }

  const ratio = (r: Row) => rows.find((x) => x.size === r.size && x.n === r.n && x.mode === 'a')!;
  const table = rows.map((r) => ({
    size: r.size,
    N: r.n,
    mode: `${r.mode} ${MODE_NAMES[r.mode]}`,
    'img/s': r.imagesPerSec.toFixed(2),
    'x (a)': (r.imagesPerSec / ratio(r).imagesPerSec).toFixed(2),
    'p50 ms': r.p50Ms.toFixed(0),
    'p95 ms': r.p95Ms.toFixed(0),
    'short ms': r.shortBehindLongMs.toFixed(0),
    'short: (a)/this': (ratio(r).shortBehindLongMs / r.shortBehindLongMs).toFixed(2),
    'weights MB': r.weightMb.toFixed(1),
    'req state MB': r.peakRequestMb.toFixed(2),
    'RSS +MB': r.rssGrowthMb.toFixed(0),
  }));
  console.table(table);
  console.table(overhead.map((o) => ({ size: o.size, 'by hand ms': o.byHandMs.toFixed(1), 'engine ms': o.engineMs.toFixed(1), 'engine / by hand throughput': o.ratio.toFixed(3) })));
  const targets = SIZES.map((size) => {
    const get = (n: number, mode: Mode) => rows.find((r) => r.size === size && r.n === n && r.mode === mode);
    const a8 = get(8, 'a');
    const c8 = get(8, 'c');
    const c1 = get(1, 'c');
    const c16 = get(16, 'c');
    const d1 = get(1, 'd');
    const d16 = get(16, 'd');
    return {
      size,
      overheadRatio: overhead.find((o) => o.size === size)!.ratio,
      throughputC8OverA8: c8 && a8 ? c8.imagesPerSec / a8.imagesPerSec : null,
      shortRequestSpeedupC8OverA8: c8 && a8 ? a8.shortBehindLongMs / c8.shortBehindLongMs : null,
      weightsMbC1toC16: c1 && c16 ? [c1.weightMb, c16.weightMb] : null,
      requestStateMbC16: c16?.peakRequestMb ?? null,
      weightsMbD1toD16: d1 && d16 ? [d1.weightMb, d16.weightMb] : null,
    };
  });
  console.table(targets);
  const soakFigures = await soak();
  console.table([soakFigures]);
  // figures of the other runs (--scale, --client, --webgpu) stay
  const { scale, client, webgpu, gallery, server, native, attention, gpu } = readResults(OUT);
  const kept = { ...(scale ? { scale } : {}), ...(client ? { client } : {}), ...(webgpu ? { webgpu } : {}), ...(gallery ? { gallery } : {}), ...(server ? { server } : {}), ...(native ? { native } : {}), ...(attention ? { attention } : {}), ...(gpu ? { gpu } : {}) };
  writeFileSync(OUT, `${JSON.stringify({ date: new Date().toISOString(), machine: { cpus: (await import('node:os')).cpus().length, node: process.version }, backend: runtime().backend, threads: runtime().status.threads, model: 'tiny-sd3', steps: STEPS, longSteps: LONG_STEPS, maxBatch: MAX_BATCH, overhead, rows, targets, soak: soakFigures, ...kept }, null, 2)}\n`);
  console.log(`wrote ${OUT}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
