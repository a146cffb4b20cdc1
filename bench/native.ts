// npm run bench -- --native: native onnxruntime (onnxruntime-node, CPU on
// every core) against onnxruntime-web's wasm on 1 and N threads, the runtime
// the Node entries used before, on the project's "wide" model: the builder's
// sd3-medium preset at full width with 2 blocks, 1-layer text encoders, the
// full SD3 VAE, no T5 (fp32, 1.5 GB). In one run it records, under `native`:
//   - per stage, median of 3, at 64² and 256²: the text encoders (prompt and
//     negative), one transformer run of batch 2 (one guided step), one VAE
//     decode, and the load (its time and the process's peak RSS over the
//     model's bytes); each runtime in its own process, since onnxruntime-web
//     fixes its thread count at its first session;
//   - the engine against the same native sessions called by hand (best of 3);
//   - `npm run generate` at 256², 6 guided steps, native against wasm: wall
//     time and peak RSS of the whole command, and how far apart the images are;
//   - throughput (8 requests, sequential against interleaved and batched) and a
//     short request behind 8 long ones, on native;
//   - 32 requests at once through the seed's HTTP API (`npm run serve`'s
//     server) at 256² on native: distinct images, p50 latency, images/s.
// `--native-quick`: 64² only, fewer rows (a check that it runs).
// `--native-stages-only`: only the per-stage rows (and PyTorch's, if asked),
// merged into the figures already recorded.
// `--native-pytorch PYTHON`: also diffusers' own PyTorch modules at the same
// shapes (tools/fixtures/bench_pytorch.py, run with that interpreter and the
// caller's PYTHONPATH holding diffusers' src), as a stage row beside the others.
// `--native-large DIR`: also `npm run generate` on two models over 4 GB, built
// under DIR (fast weights): the full-depth sd3-medium preset in fp16 (5.5 GiB)
// and its full-depth transformer in fp32 with 1-layer encoders (7.8 GiB); 64²,
// 2 steps: wall time, peak RSS against the model's bytes.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { availableParallelism, cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode } from 'fast-png';
import { SeedServer } from '../server/seed-server.ts';
import type { Engine } from '../workers/engine/engine.ts';
import { decodeLatents, rgbaToPng } from '../workers/engine/sd3/decode.ts';
import { combineGuidance, predictRows } from '../workers/engine/sd3/denoise-step.ts';
import { encodePrompts } from '../workers/engine/sd3/encode-prompt.ts';
import { RequestRng } from '../workers/engine/rng.ts';
import { createNodeEngine, wasmNodeRuntime } from '../workers/engine/node.ts';
import { cpuRuntime } from '../workers/engine/runtime/node-runtime.ts';
import { ensureBuilt } from './built-model.ts';
import { LONG_STEPS, pct, req, runBatch, shortBehindLong } from './modes.ts';
import { readResults, writeResults } from './results-file.ts';

const ROOT = fileURLToPath(new URL('../', import.meta.url));
const WIDE_DIR = join(ROOT, 'models', 'bench-native', 'wide');
export const WIDE_ARGS = ['--preset', 'sd3-medium', '--weights', 'fp32', '--layers', '2', '--encoder-layers', '1', '--no-t5', '--no-vae-encoder'] as const;
const TINY = join(ROOT, 'public', 'models', 'tiny-sd3');
const GB = 1024 ** 3;
const round = (x: number, d = 3) => Number(x.toFixed(d));
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

type RuntimeName = 'native' | 'wasm-1' | 'wasm-n' | 'pytorch';

interface StageRow {
  runtime: RuntimeName;
  threads: number;
  size: number;
  textEncodersMs: number;
  transformerRunMs: number;
  vaeDecodeMs: number;
}

interface ChildReport {
  runtime: RuntimeName;
  threads: number;
  loadSeconds: number;
  /** The process's peak RSS once the model is loaded, over the model's bytes. */
  loadPeakRssGb: number;
  stages: StageRow[];
}

const runtimeFor = (name: RuntimeName) => (name === 'native' ? cpuRuntime() : wasmNodeRuntime(name === 'wasm-1' ? 1 : availableParallelism()));

/** One runtime's stages, in this (child) process: the model's own sessions, fed as the engine feeds them. */
async function stagesChild(name: RuntimeName, dir: string, sizes: number[]): Promise<ChildReport> {
  const runtime = runtimeFor(name);
  const engine = createNodeEngine({ runtime });
  let t = performance.now();
  await engine.load({ kind: 'path', path: dir });
  const loadSeconds = (performance.now() - t) / 1000;
  const loadPeakRssGb = process.resourceUsage().maxRSS / 1024 ** 2;
  const m = engine.model!;
  const ort = engine.options.ort;
  const stages: StageRow[] = [];
  for (const size of sizes) {
    const lat = size / m.vaeConfig.scaleFactor;
    const shape = [m.vaeConfig.latentChannels, lat, lat] as const;
    const latents = new RequestRng(1).normal(shape[0] * lat * lat);
    const times = { text: [] as number[], transformer: [] as number[], vae: [] as number[] };
    // a first round warms the shapes; three measured
    for (let i = 0; i < 4; i++) {
      t = performance.now();
      const [cond, uncond] = await encodePrompts(m, ort, ['a lighthouse at dusk', '']);
      const text = performance.now() - t;
      t = performance.now();
      await predictRows(m, ort, [{ latents, timestep: 500, embedding: uncond }, { latents, timestep: 500, embedding: cond }], shape);
      const transformer = performance.now() - t;
      t = performance.now();
      await decodeLatents(m, ort, [latents], lat, lat);
      const vae = performance.now() - t;
      if (i === 0) continue;
      times.text.push(text);
      times.transformer.push(transformer);
      times.vae.push(vae);
    }
    stages.push({ runtime: name, threads: runtime.status.threads, size, textEncodersMs: round(median(times.text), 1), transformerRunMs: round(median(times.transformer), 1), vaeDecodeMs: round(median(times.vae), 1) });
  }
  await engine.unload();
  return { runtime: name, threads: runtime.status.threads, loadSeconds: round(loadSeconds, 2), loadPeakRssGb: round(loadPeakRssGb), stages };
}

/** Runs a command (Node unless told); its wall time, exit code and output. */
function run(args: string[], command = process.execPath): Promise<{ code: number; wallSeconds: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const t = performance.now();
    const child = spawn(command, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c));
    child.stderr.on('data', (c: Buffer) => (stderr += c));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, wallSeconds: (performance.now() - t) / 1000, stdout, stderr }));
  });
}

/** `npm run generate` on a backend: wall time of the whole command, its peak RSS (its own last line), the image. */
async function generate(model: string, backend: string, size: number, steps: number, out: string) {
  const r = await run(['--import', 'tsx', 'cli/generate.ts', '--model', model, '--backend', backend, '--prompt', 'a lighthouse at dusk', '--seed', '3', '--steps', String(steps), '--size', String(size), '--out', out]);
  if (r.code !== 0) throw new Error(`generate --backend ${backend} failed (${r.code}): ${r.stderr}`);
  const peak = /peak RSS ([\d.]+) GB/.exec(r.stderr);
  const imageMs = /seed \d+\s+(\d+) ms/.exec(r.stdout);
  return { backend, wallSeconds: round(r.wallSeconds, 2), imageSeconds: imageMs ? round(Number(imageMs[1]) / 1000, 2) : null, peakRssGb: peak ? Number(peak[1]) : null, firstLine: r.stderr.split('\n').find((l) => l.startsWith('backend ')) ?? '' };
}

const pixels = async (file: string) => decode(new Uint8Array(await readFile(file))).data as Uint8Array;
const maxDiff = (a: Uint8Array, b: Uint8Array) => a.reduce((d, v, i) => Math.max(d, Math.abs(v - b[i])), 0);

/** The engine against the same sessions called back to back by hand: best of 3 each. */
async function overhead(engine: Engine, size: number, steps: number) {
  const m = engine.model!;
  const ort = engine.options.ort;
  const r = { ...req(0, size, steps), guidance: m.info.defaults.guidance };
  const byHand = async () => {
    const t0 = performance.now();
    const [cond, uncond] = await encodePrompts(m, ort, [r.prompt, '']);
    const lat = size / m.vaeConfig.scaleFactor;
    const shape = [m.vaeConfig.latentChannels, lat, lat] as const;
    const latents = new RequestRng(r.seed!).normal(shape[0] * lat * lat);
    const sched = m.scheduler.cloneForRequest({ steps });
    while (!sched.done) {
      const [vu, vc] = await predictRows(m, ort, [{ latents, timestep: sched.timestep, embedding: uncond }, { latents, timestep: sched.timestep, embedding: cond }], shape);
      sched.step(latents, combineGuidance(vu, vc, r.guidance, vu));
    }
    const [rgba] = await decodeLatents(m, ort, [latents], lat, lat);
    rgbaToPng(rgba, size, size);
    return performance.now() - t0;
  };
  await engine.generate(r);
  const hand: number[] = [];
  const eng: number[] = [];
  for (let i = 0; i < 3; i++) {
    hand.push(await byHand());
    const t = performance.now();
    await engine.generate(r);
    eng.push(performance.now() - t);
  }
  const byHandMs = Math.min(...hand);
  const engineMs = Math.min(...eng);
  return { size, steps, byHandMs: round(byHandMs, 1), engineMs: round(engineMs, 1), ratio: round(byHandMs / engineMs) };
}

/** 32 requests at once through the seed's HTTP API: every image distinct, p50, images/s. */
async function serverRun(engine: Engine, n: number, size: number, steps: number) {
  const dir = await mkdtemp(join(tmpdir(), 'sd3-bench-native-serve-'));
  const server = new SeedServer({ engine, modelName: 'wide', imagesDir: dir });
  const { port } = await server.listen(0, '127.0.0.1');
  try {
    const body = (i: number) => JSON.stringify({ prompt: `native server ${i}`, seed: 5000 + i, num_inference_steps: steps, width: size, height: size });
    const t0 = performance.now();
    const latencies: number[] = [];
    const hashes = await Promise.all(
      Array.from({ length: n }, async (_, i) => {
        const res = await fetch(`http://127.0.0.1:${port}/api/diffusers/inference`, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: body(i) });
        if (res.status !== 200) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
        const { response } = (await res.json()) as { response: string[] };
        latencies.push(performance.now() - t0);
        const png = new Uint8Array(await (await fetch(response[0])).arrayBuffer());
        return createHash('sha256').update(decode(png).data as Uint8Array).digest('hex');
      }),
    );
    const wall = (performance.now() - t0) / 1000;
    const status = (await (await fetch(`http://127.0.0.1:${port}/api/status`)).json()) as Record<string, unknown>;
    return { requests: n, size, steps, distinctImages: new Set(hashes).size, p50Seconds: round(pct(latencies, 50) / 1000, 2), p95Seconds: round(pct(latencies, 95) / 1000, 2), wallSeconds: round(wall, 2), imagesPerSec: round(n / wall, 4), maxRowsPerRun: engine.status().maxRowsPerRun, status: { backend: status.backend, memory: status.memory, runtime: status.runtime } };
  } finally {
    await server.stop(0);
    await rm(dir, { recursive: true, force: true });
  }
}

export async function nativeBench(out: string, argv: string[]): Promise<void> {
  const quick = argv.includes('--native-quick');
  const sizes = quick ? [64] : [64, 256];
  const log = (l: string) => console.error(`[native] ${l}`);
  const wide = await ensureBuilt(WIDE_DIR, WIDE_ARGS);
  log(`wide model ${(wide.bytes / GB).toFixed(2)} GiB${wide.buildSeconds !== null ? `, built in ${wide.buildSeconds.toFixed(0)} s` : ''}`);

  // 1. stages, each runtime in its own process
  const children: ChildReport[] = [];
  for (const name of ['native', 'wasm-1', 'wasm-n'] as RuntimeName[]) {
    const r = await run(['--expose-gc', '--import', 'tsx', fileURLToPath(import.meta.url), '--stages-child', name, wide.dir, sizes.join(',')]);
    if (r.code !== 0) throw new Error(`stages on ${name} failed: ${r.stderr}`);
    children.push(JSON.parse(r.stdout.trim().split('\n').at(-1)!) as ChildReport);
    log(`${name}: ${JSON.stringify(children.at(-1)!.stages)}`);
  }
  const pythonAt = argv.indexOf('--native-pytorch');
  if (pythonAt > 0) {
    const r = await run(['tools/fixtures/bench_pytorch.py', '--threads', String(availableParallelism()), '--sizes', sizes.join(',')], argv[pythonAt + 1]);
    if (r.code !== 0) throw new Error(`bench_pytorch.py failed: ${r.stderr}`);
    const py = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { torch: string; threads: number; stages: Omit<StageRow, 'runtime' | 'threads'>[] };
    children.push({ runtime: 'pytorch', threads: py.threads, loadSeconds: NaN, loadPeakRssGb: NaN, stages: py.stages.map((x) => ({ runtime: 'pytorch', threads: py.threads, ...x })) });
    log(`pytorch ${py.torch}: ${JSON.stringify(py.stages)}`);
  }
  const stages = children.flatMap((c) => c.stages);
  const nat = (size: number) => stages.find((s) => s.runtime === 'native' && s.size === size)!;
  const speedupsOf = () => stages
    .filter((s) => s.runtime !== 'native')
    .map((s) => ({ size: s.size, against: s.runtime, threads: s.threads, textEncoders: round(s.textEncodersMs / nat(s.size).textEncodersMs, 2), transformerRun: round(s.transformerRunMs / nat(s.size).transformerRunMs, 2), vaeDecode: round(s.vaeDecodeMs / nat(s.size).vaeDecodeMs, 2) }));
  const speedups = speedupsOf();
  const load = children.filter((c) => c.runtime !== 'pytorch').map((c) => ({ runtime: c.runtime, threads: c.threads, loadSeconds: c.loadSeconds, peakRssGb: c.loadPeakRssGb, peakRssOverModel: round((c.loadPeakRssGb * GB) / wide.bytes) }));

  if (argv.includes('--native-stages-only')) {
    const previous = (readResults(out).native ?? {}) as Record<string, unknown>;
    console.table(stages);
    console.table(speedups);
    writeResults(out, 'native', { ...previous, stagesDate: new Date().toISOString(), stages, speedups, load });
    return;
  }

  // 2. npm run generate, native against wasm (the Must-show figure)
  const e2eSize = quick ? 64 : 256;
  const tmp = await mkdtemp(join(tmpdir(), 'sd3-bench-native-'));
  const native = await generate(wide.dir, 'cpu', e2eSize, 6, join(tmp, 'cpu.png'));
  const wasm = await generate(wide.dir, 'wasm', e2eSize, 6, join(tmp, 'wasm.png'));
  const generateRow = {
    size: e2eSize,
    steps: 6,
    modelGb: round(wide.bytes / GB),
    native,
    wasm,
    wallSpeedup: round(wasm.wallSeconds / native.wallSeconds, 2),
    imageSpeedup: native.imageSeconds && wasm.imageSeconds ? round(wasm.imageSeconds / native.imageSeconds, 2) : null,
    nativePeakRssOverModel: native.peakRssGb ? round((native.peakRssGb * GB) / wide.bytes) : null,
    wasmPeakRssOverModel: wasm.peakRssGb ? round((wasm.peakRssGb * GB) / wide.bytes) : null,
    maxPixelDiff: maxDiff(await pixels(join(tmp, 'cpu.png')), await pixels(join(tmp, 'wasm.png'))),
  };
  log(`generate ${e2eSize}², 6 steps: native ${native.wallSeconds} s (peak ${native.peakRssGb} GB), wasm ${wasm.wallSeconds} s (peak ${wasm.peakRssGb} GB): x${generateRow.wallSpeedup}`);

  // 3. on native: overhead, throughput, short behind long, the HTTP server
  const engine = createNodeEngine({ runtime: cpuRuntime(), maxActive: 64, maxBatch: 16 });
  await engine.load({ kind: 'path', path: wide.dir });
  const overheads = [];
  for (const size of sizes) overheads.push(await overhead(engine, size, quick ? 2 : 6));
  log(`overhead: ${JSON.stringify(overheads)}`);
  const N = 8;
  const throughput = [];
  for (const size of sizes) {
    await runBatch('c', [engine], Array.from({ length: N }, (_, i) => req(50 + i, size, 1))); // the batched shapes
    const a = await runBatch('a', [engine], Array.from({ length: N }, (_, i) => req(i, size)));
    const c = await runBatch('c', [engine], Array.from({ length: N }, (_, i) => req(i, size)));
    const fig = (r: { wallMs: number; latencies: number[] }) => ({ imagesPerSec: round(N / (r.wallMs / 1000), 4), p50Seconds: round(pct(r.latencies, 50) / 1000, 2), p95Seconds: round(pct(r.latencies, 95) / 1000, 2) });
    throughput.push({ model: 'wide', size, requests: N, steps: 4, sequential: fig(a), interleaved: fig(c), throughputRatio: round(N / c.wallMs / (N / a.wallMs)) });
    log(`throughput ${size}²: ${JSON.stringify(throughput.at(-1))}`);
  }
  // a short request behind 8 long ones: on the tiny model, as the main benchmark measures it
  const tiny = createNodeEngine({ runtime: cpuRuntime(), maxActive: 64, maxBatch: 16 });
  await tiny.load({ kind: 'path', path: TINY });
  await tiny.generate(req(0, 64, 1));
  const shortA = await shortBehindLong('a', [tiny], N, 64, LONG_STEPS);
  const shortC = await shortBehindLong('c', [tiny], N, 64, LONG_STEPS);
  await tiny.unload();
  const shortRow = { model: 'tiny-sd3', size: 64, long: N, longSteps: LONG_STEPS, sequentialMs: round(shortA, 1), interleavedMs: round(shortC, 1), speedup: round(shortA / shortC, 2) };
  log(`short behind long: ${JSON.stringify(shortRow)}`);
  const server = await serverRun(engine, 32, e2eSize, 4);
  log(`server: ${JSON.stringify(server)}`);
  await engine.unload();

  // 4. models over 4 GB: the full-depth sd3-medium transformer in fp16 (real encoders) and in fp32 (1-layer encoders)
  const largeAt = argv.indexOf('--native-large');
  const large = [];
  if (largeAt > 0) {
    const root = argv[largeAt + 1];
    const models = [
      { name: 'fp16', what: 'sd3-medium preset, full depth, fp16 weights, fp32 I/O, no T5', args: ['--preset', 'sd3-medium', '--weights', 'fp16', '--io', 'fp32', '--no-t5', '--no-vae-encoder', '--fast-weights'] },
      { name: 'fp32', what: 'sd3-medium preset, full-depth transformer, 1-layer text encoders and VAE, fp32, no T5', args: ['--preset', 'sd3-medium', '--weights', 'fp32', '--encoder-layers', '1', '--vae-layers', '1', '--no-t5', '--no-vae-encoder', '--fast-weights'] },
    ];
    for (const m of models) {
      const { dir, bytes } = await ensureBuilt(join(root, m.name), m.args);
      const g = await generate(dir, 'cpu', 64, 2, join(tmp, `large-${m.name}.png`));
      large.push({ model: m.what, gib: round(bytes / GB), size: 64, steps: 2, ...g, peakRssOverModel: g.peakRssGb ? round((g.peakRssGb * GB) / bytes) : null });
      log(`large: ${JSON.stringify(large.at(-1))}`);
    }
  }
  await rm(tmp, { recursive: true, force: true });

  const figures = {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, cpu: cpus()[0]?.model, memoryGb: round(totalmem() / GB, 1), node: process.version },
    model: { name: 'wide', args: WIDE_ARGS, gb: round(wide.bytes / GB) },
    stages,
    speedups,
    load,
    generate: generateRow,
    overhead: overheads,
    throughput,
    shortBehindLong: shortRow,
    server,
    large,
  };
  console.table(stages);
  console.table(speedups);
  console.table(load);
  console.table([{ ...generateRow, native: `${native.wallSeconds} s, ${native.peakRssGb} GB`, wasm: `${wasm.wallSeconds} s, ${wasm.peakRssGb} GB` }]);
  console.table(overheads);
  if (!quick) writeResults(out, 'native', figures);
  else console.log(JSON.stringify(figures, null, 2));
}

// the per-runtime child: `--stages-child <runtime> <model dir> <sizes>` prints its report as the last line
if (process.argv.includes('--stages-child')) {
  const i = process.argv.indexOf('--stages-child');
  const [name, dir, sizes] = process.argv.slice(i + 1);
  stagesChild(name as RuntimeName, dir, sizes.split(',').map(Number))
    .then((r) => {
      console.log(JSON.stringify(r));
      process.exit(0);
    })
    .catch((e) => {
      console.error(e);
      process.exit(1);
    });
}

