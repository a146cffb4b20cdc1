// npm run bench -- --gpu: the engine on a real GPU, from Node, on native
// onnxruntime (onnxruntime-node): its CUDA provider where installed, else its
// WebGPU provider (onnxruntime's own Dawn, on Vulkan on Linux). No browser.
// One command, within 8 minutes on a Linux machine with an NVIDIA GPU:
//   1. finds a GPU provider that runs, or stops (exit 3) saying why: it never
//      falls back to the CPU or wasm;
//   2. builds (once; cached under models/bench-gpu/<key of its config>) an
//      SD3.5-medium-shaped model with random fp16 weights written at disk
//      speed (tools/model-builder/fast-weights.ts): the transformer at full
//      size (24 joint blocks, hidden 1536 = 24 heads x 64, dual attention in
//      blocks 0-12, RMSNorm on q and k; ~2.5 G parameters, ~4.9 GB, external
//      data in 1 GiB shards), CLIP-L and CLIP-G and the VAE decoder at full
//      size, no T5 (SD3 allows it: zeros of T5's shape, so the transformer
//      still sees 77 + 256 text tokens); fp32 inputs and outputs over fp16
//      weights (as AMD's _io32 exports), so latents stay on the GPU;
//   3. loads it, then measures at 1024² batches of 1, 2 and 4 requests
//      (classifier-free guidance: 2, 4 and 8 transformer rows per step; each
//      batch's shapes warmed by a one-step run first):
//      s/step from the time between step events (the first step, where the
//      shaders compile, is left out), and s/image measured (a few steps) and
//      projected to the family's default steps (40 for SD3.5-medium):
//      (wall + (default - measured steps) x s/step) / batch, so it counts
//      prompt encoding, the VAE decode and the PNG as a real image does;
//   4. runs 8 requests at 512² sequentially (bench/modes.ts (a)) and
//      interleaved and batched ((c)) on the same engine: images/s, p50, p95;
//   5. writes bench/results.json under `gpu` (bench/results-file.ts).
// `--gpu-dry-run`: the same code on onnxruntime's wasm backend with a
// structurally identical model at toy widths (2 blocks, dual attention and qk
// RMSNorm in block 0, sharded external data, fast weights) at 64² and 32²:
// everything but WebGPU, in seconds (tests/unit/bench-gpu.test.ts). It prints
// the report and writes nothing to bench/results.json.
// Options: --gpu-memory-gb N (the engine's memory budget; WebGPU cannot tell
// it, default 48), --gpu-steps N (measured steps per request, default 4),
// --gpu-budget-s N (cells not started by then are skipped, default 420),
// --gpu-attention decomposed|fused (the form the graph is built in, as
// Optimum's or Olive's exports; the engine may still rewrite it at load),
// --gpu-models DIR (the build cache).
// Also reported: the transformer's matmul FLOPs per step (workers/engine/
// flops.ts), the TFLOP/s achieved and, for adapters flops.ts knows, the
// fraction of the fp16 peak.
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildModel, type BuildSpec, type ComponentSummary } from '../tools/model-builder/build.ts';
import { PRESETS, withDepth, type ModelPreset } from '../tools/model-builder/presets.ts';
import { FolderOutput } from '../tools/model-builder/weight-store.ts';
import type { GenerateRequest, GenerateResult, ModelInfo } from '../workers/engine/api/types.ts';
import type { Engine } from '../workers/engine/engine.ts';
import { adapterPeakFlops, imageTokens, transformerFlopsPerRow } from '../workers/engine/flops.ts';
import type { BackendName } from '../workers/engine/api/types.ts';
import { createNodeEngine, wasmNodeRuntime } from '../workers/engine/node.ts';
import { nodeRuntime, unavailableReasons } from '../workers/engine/runtime/node-runtime.ts';

/** An engine on a backend, or why the GPU one is not there. */
export interface NodeBackend {
  engine: Engine;
  backend: BackendName;
  fallbackReason: string | null;
}

/** GPU backends: what the benchmark measures. */
const GPU_BACKENDS = new Set<BackendName>(['cuda', 'webgpu', 'dml', 'coreml']);
import { pct, runBatch } from './modes.ts';
import { writeResults } from './results-file.ts';

const GiB = 1024 ** 3;
const DEFAULT_MODELS = fileURLToPath(new URL('../models/bench-gpu/', import.meta.url));
/** Bumped when the fast weights or the layout of a cached build change. */
const BUILD_VERSION = 1;

export interface GpuBenchOptions {
  dryRun: boolean;
  /** Where built models are cached (one folder per config). */
  modelRoot?: string;
  /** The engine's memory budget (WebGPU does not report a GPU's memory). */
  memoryGb?: number;
  /** Steps each measured request runs. */
  steps?: number;
  /** Cells not started within this many seconds of the start are skipped. */
  budgetS?: number;
  attention?: 'decomposed' | 'fused';
  /** Tests: the GPU backend (default: nodeRuntime('auto'), which tries CUDA, then native WebGPU). */
  openBackend?: (options: Parameters<typeof createNodeEngine>[0]) => Promise<NodeBackend>;
  log?: (line: string) => void;
}

/** No WebGPU adapter: the benchmark stops instead of measuring wasm. */
export class NoAdapterError extends Error {
  constructor(readonly reason: string) {
    super(noAdapterMessage(reason));
    this.name = 'NoAdapterError';
  }
}

/** What the machine lacks for Dawn on Linux: the Vulkan loader and a driver manifest (ICD). */
export function vulkanDiagnostics(env: NodeJS.ProcessEnv = process.env): string[] {
  if (process.platform !== 'linux') return [];
  const out: string[] = [];
  const libDirs = [...(env.LD_LIBRARY_PATH ?? '').split(':').filter(Boolean), '/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib', '/lib/x86_64-linux-gnu'];
  if (!libDirs.some((d) => existsSync(join(d, 'libvulkan.so.1')))) out.push('the Vulkan loader libvulkan.so.1 was not found (Debian/Ubuntu: apt-get install libvulkan1)');
  const manifests = (env.VK_DRIVER_FILES ?? env.VK_ICD_FILENAMES ?? '').split(':').filter(Boolean);
  if (manifests.length) {
    for (const m of manifests) if (!existsSync(m)) out.push(`VK_DRIVER_FILES / VK_ICD_FILENAMES names ${m}, which does not exist`);
  } else {
    const icdDirs = ['/usr/share/vulkan/icd.d', '/etc/vulkan/icd.d', '/usr/local/share/vulkan/icd.d', '/usr/local/nvidia/share/vulkan/icd.d'];
    const icds = icdDirs.flatMap((d) => (existsSync(d) ? readdirSync(d).map((f) => join(d, f)) : []));
    if (!icds.length) out.push(`no Vulkan driver manifest (ICD .json) in ${icdDirs.join(', ')}; set VK_DRIVER_FILES (or VK_ICD_FILENAMES) to the NVIDIA driver's nvidia_icd.json`);
    else if (!icds.some((f) => /nvidia/i.test(f))) out.push(`Vulkan driver manifests found (${icds.join(', ')}), none of them NVIDIA's`);
  }
  return out;
}

export function noAdapterMessage(reason: string, diagnostics = vulkanDiagnostics()): string {
  return [
    `GPU benchmark: no GPU provider runs here (${reason}).`,
    'It measures a real GPU only and does not fall back to the CPU or wasm (npm run bench -- --gpu-dry-run runs the same code on wasm at toy size).',
    "onnxruntime-node's CUDA provider needs its CUDA 12 libraries installed (ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install) and CUDA 12 / cuDNN 9 on the library path.",
    "Its WebGPU provider (onnxruntime's own Dawn) drives the GPU through Vulkan on Linux: it needs the Vulkan loader (libvulkan.so.1) and the GPU driver's Vulkan manifest (nvidia_icd.json, found in /usr/share/vulkan/icd.d or named by VK_DRIVER_FILES / VK_ICD_FILENAMES).",
    ...diagnostics.map((d) => `  - ${d}`),
  ].join('\n');
}

/** The model a run builds, and what of it is the real size. */
export interface GpuModelConfig {
  spec: BuildSpec;
  /** Component -> real size, or how it differs from the real model. */
  realSize: Record<string, string>;
}

export function gpuModelConfig(dryRun: boolean, attention: 'decomposed' | 'fused' = 'decomposed'): GpuModelConfig {
  if (!dryRun) {
    const p = PRESETS['sd3.5-medium'];
    return {
      spec: { preset: p, id: 'sd3-webgpu/bench-gpu-sd3.5-medium-fp16-io32', weights: 'float16', io: 'float32', attention, dataFile: () => 'model.onnx_data', shardBytes: GiB, withT5: false, withVaeEncoder: false, fastWeights: true },
      realSize: {
        transformer: 'real size: SD3.5-medium MMDiT-X, 24 joint blocks, hidden 1536 (24 heads x 64), dual attention in blocks 0-12, qk RMSNorm, fp16 weights (random)',
        text_encoder: 'real size: CLIP-L (12 layers, 768), fp16',
        text_encoder_2: 'real size: CLIP-G (32 layers, 1280), fp16',
        text_encoder_3: 'absent: no T5-XXL (zeros of its shape, as SD3 allows); a real T5 adds one ~4.8 TFLOP encode of prompt and negative per request, under one 1024² step',
        vae_decoder: 'real size: SD3 VAE decoder (128/256/512/512, 3 resnets per block), fp16',
        io: 'fp32 inputs and outputs (AMD _io32 style), so latents and the guidance update stay on the GPU',
      },
    };
  }
  const t = PRESETS.tiny;
  // the tiny model's widths with SD3.5-medium's structure: dual attention and qk RMSNorm in block 0
  const preset: ModelPreset = { ...t, name: 'bench-gpu-dry-run', transformer: { ...t.transformer, layers: 2, dualAttentionLayers: [0], qkNorm: 'rms_norm' } };
  return {
    spec: { preset, id: 'sd3-webgpu/bench-gpu-dry-run', weights: 'float32', io: 'float32', attention, dataFile: () => 'model.onnx_data', shardBytes: 64 * 1024, withT5: false, withVaeEncoder: false, fastWeights: true },
    realSize: { all: 'dry run: toy widths (the tiny model\'s), 2 blocks, fp32 on wasm; nothing is real-size' },
  };
}

export interface BuiltModel {
  dir: string;
  key: string;
  cached: boolean;
  /** Seconds this run spent building (0 when cached), and what the cached build took. */
  buildSeconds: number;
  builtSeconds: number;
  bytes: number;
  parameters: number;
  components: Record<string, ComponentSummary>;
}

/** The key of a build: everything that changes its bytes. */
export function buildKey(spec: BuildSpec): string {
  const { dataFile, ...rest } = spec;
  const text = JSON.stringify({ v: BUILD_VERSION, ...rest, dataFile: dataFile('transformer') });
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** Builds the model unless a complete build of the same config is there (its stamp is written last). */
export function ensureGpuModel(config: GpuModelConfig, root: string, log: (l: string) => void = () => {}): BuiltModel {
  const key = buildKey(config.spec);
  const dir = join(root, key);
  const stamp = join(dir, 'bench-gpu-build.json');
  if (existsSync(stamp)) {
    const s = JSON.parse(readFileSync(stamp, 'utf8')) as Omit<BuiltModel, 'cached' | 'buildSeconds' | 'dir'>;
    if (s.key === key) return { ...s, dir, cached: true, buildSeconds: 0 };
  }
  log(`building ${config.spec.id} into ${dir}`);
  rmSync(dir, { recursive: true, force: true });
  const t0 = performance.now();
  const components = buildModel(config.spec, new FolderOutput(dir));
  const builtSeconds = (performance.now() - t0) / 1000;
  let bytes = 0;
  let parameters = 0;
  for (const c of Object.values(components)) {
    bytes += c.bytes;
    parameters += c.parameters;
  }
  const record = { key, builtSeconds, bytes, parameters, components };
  writeFileSync(stamp, JSON.stringify(record, null, 2));
  log(`built ${(bytes / GiB).toFixed(2)} GiB, ${(parameters / 1e9).toFixed(2)} G parameters in ${builtSeconds.toFixed(1)} s`);
  return { ...record, dir, cached: false, buildSeconds: builtSeconds };
}

/** One batch of requests at one size: the s/step and s/image figures. */
export interface BatchCell {
  size: number;
  batch: number;
  steps: number;
  /** Transformer rows one run carried (2 per guided request when they ran together). */
  rowsPerRun: number;
  secondsPerStep: number;
  wallSeconds: number;
  /** The one-step run at this batch's shapes before the measured one (0 for batch 1: the warm-up covers it). */
  warmupSeconds: number;
  /** wall / batch, for `steps` steps. */
  secondsPerImageMeasured: number;
  /** (wall + (defaultSteps - steps) x s/step) / batch. */
  secondsPerImageProjected: number;
  encodeSeconds: number;
  decodeSeconds: number;
  /** Transformer matmul FLOPs of one step of the batch (workers/engine/flops.ts), and the rate achieved. */
  flopsPerStep: number;
  tflopsPerSecond: number;
  /** Of the adapter's fp16 (fp32 in the dry run) peak, where flops.ts knows the adapter. */
  peakFraction: number | null;
}

export interface InterleaveCell {
  size: number;
  requests: number;
  steps: number;
  sequential: { wallSeconds: number; imagesPerSec: number; p50Seconds: number; p95Seconds: number };
  interleaved: { wallSeconds: number; imagesPerSec: number; p50Seconds: number; p95Seconds: number; rowsPerRun: number };
  /** interleaved images/s over sequential images/s. */
  throughputRatio: number;
  /** sequential p50 latency over interleaved p50 latency. */
  p50Ratio: number;
}

export interface GpuReport {
  date: string;
  dryRun: boolean;
  backend: BackendName;
  adapter: string | null;
  machine: { cpus: number; memoryGb: number; node: string; platform: string };
  model: { id: string; family: string; dir: string; key: string; cached: boolean; buildSeconds: number; builtSeconds: number; bytes: number; gb: number; parameters: number; components: Record<string, ComponentSummary>; realSize: Record<string, string>; weightBytesOnDevice: number; attentionChunks: ModelInfo['attentionChunks'] };
  loadSeconds: number;
  warmupSeconds: number;
  defaultSteps: number;
  memoryBudgetGb: number;
  batches: (BatchCell | { size: number; batch: number; skipped?: string; error?: string })[];
  interleave: InterleaveCell | { skipped?: string; error?: string };
  /** From one run: batch B's s/step and s/image against batch 1's. */
  ratios: { batch: number; stepOverBatch1: number; stepPerRequestOverBatch1: number; imageOverBatch1: number }[];
  totalSeconds: number;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};
const round = (x: number, d = 3) => Number(x.toFixed(d));
const req = (i: number, size: number, steps: number): GenerateRequest => ({ prompt: `gpu benchmark prompt ${i % 5}`, seed: 7000 + i, steps, width: size, height: size });

/** Runs `batch` requests at once; per request, the times of its step events. */
async function timedBatch(engine: Engine, batch: number, size: number, steps: number, first: number) {
  const stepTimes: number[][] = Array.from({ length: batch }, () => []);
  const t0 = performance.now();
  const results: GenerateResult[] = await Promise.all(
    Array.from({ length: batch }, (_, i) =>
      engine.generate(req(first + i, size, steps), {
        onProgress: (e) => {
          if (e.status === 'step') stepTimes[i].push(performance.now());
        },
      }),
    ),
  );
  return { wallMs: performance.now() - t0, stepTimes, results };
}

/** The time between step events, first step left out (the one that compiles shaders); per request, then the median. */
export function stepSeconds(stepTimes: number[][]): number {
  const per = stepTimes.map((ts) => median(ts.slice(1).map((t, i) => t - ts[i])));
  return median(per.filter((x) => Number.isFinite(x))) / 1000;
}

export async function gpuBench(opts: GpuBenchOptions): Promise<GpuReport> {
  const started = performance.now();
  const elapsed = () => (performance.now() - started) / 1000;
  const log = opts.log ?? ((l: string) => console.log(`[gpu ${elapsed().toFixed(0)} s] ${l}`));
  const dry = opts.dryRun;
  const steps = opts.steps ?? (dry ? 3 : 4);
  const budgetS = opts.budgetS ?? 420;
  const memoryGb = opts.memoryGb ?? (dry ? 4 : 48);
  const BIG = dry ? 64 : 1024;
  const SMALL = dry ? 32 : 512;
  const BATCHES = [1, 2, 4];
  const N = 8;
  const engineOptions = { maxBatch: N, maxActive: 64 };

  // 1. the adapter first: no GPU, no 5 GB build
  let engine: Engine;
  let adapter: string | null = null;
  let backend: BackendName;
  if (dry) {
    engine = createNodeEngine({ ...engineOptions, runtime: wasmNodeRuntime() });
    backend = 'wasm';
  } else {
    const open =
      opts.openBackend ??
      (async (o) => {
        const runtime = await nodeRuntime('auto');
        const reason = unavailableReasons(runtime.status) || null;
        return { engine: createNodeEngine({ ...o, runtime }), backend: runtime.backend, fallbackReason: reason };
      });
    const b = await open({ ...engineOptions, deviceFit: { memoryBytes: memoryGb * GiB } });
    if (!GPU_BACKENDS.has(b.backend)) {
      await b.engine.unload().catch(() => undefined);
      throw new NoAdapterError(b.fallbackReason ?? `the engine came up on ${b.backend}`);
    }
    engine = b.engine;
    backend = b.backend;
    adapter = engine.status().adapter;
    log(`adapter: ${adapter}`);
  }

  // 2. the model, built once per config
  const config = gpuModelConfig(dry, opts.attention);
  const built = ensureGpuModel(config, opts.modelRoot ?? DEFAULT_MODELS, log);
  if (built.cached) log(`model cached in ${built.dir} (${(built.bytes / GiB).toFixed(2)} GiB; its build took ${built.builtSeconds.toFixed(1)} s)`);

  // 3. load and warm up (shaders for one guided request at the large size, with its decode)
  let t = performance.now();
  const info = await engine.load({ kind: 'path', path: built.dir });
  const loadSeconds = (performance.now() - t) / 1000;
  log(`loaded ${info.id} (${info.family}) in ${loadSeconds.toFixed(1)} s; attention chunks ${JSON.stringify(info.attentionChunks)}`);
  t = performance.now();
  await engine.generate(req(0, BIG, 2));
  const warmupSeconds = (performance.now() - t) / 1000;
  log(`warm-up (${BIG}², 2 steps) ${warmupSeconds.toFixed(1)} s`);
  const defaultSteps = info.defaults.steps;
  const tr = config.spec.preset.transformer;
  const shape = { hiddenSize: tr.heads * tr.headDim, numLayers: tr.layers, patchSize: tr.patchSize, inChannels: tr.inChannels, jointAttentionDim: tr.jointAttentionDim, pooledProjectionDim: tr.pooledProjectionDim, dualAttentionLayers: tr.dualAttentionLayers.length };
  const textTokens = 77 + (engine.model?.t5MaxLength ?? 256);
  const peak = adapterPeakFlops(adapter, config.spec.weights === 'float16' ? 'fp16' : 'fp32');

  const over = () => (elapsed() > budgetS ? `not started: past the ${budgetS} s budget` : null);
  const batches: GpuReport['batches'] = [];
  for (const batch of BATCHES) {
    const skipped = over();
    if (skipped) {
      batches.push({ size: BIG, batch, skipped });
      continue;
    }
    try {
      // the batch's shapes first (one step, its decode): compiles stay out of the measured wall time
      const w = performance.now();
      if (batch > 1) await timedBatch(engine, batch, BIG, 1, 100 + 10 * batch);
      const warmup = (performance.now() - w) / 1000;
      const rowsBefore = engine.status().maxRowsPerRun;
      const r = await timedBatch(engine, batch, BIG, steps, 10 * batch);
      const sps = stepSeconds(r.stepTimes);
      const wall = r.wallMs / 1000;
      const rowsPerRun = Math.max(rowsBefore, engine.status().maxRowsPerRun);
      const guided = (info.defaults.guidance > 1 ? 2 : 1) * batch;
      const flopsPerStep = guided * transformerFlopsPerRow(shape, imageTokens(BIG, BIG, tr.patchSize), textTokens);
      batches.push({
        size: BIG,
        batch,
        steps,
        rowsPerRun,
        secondsPerStep: round(sps, 4),
        wallSeconds: round(wall),
        warmupSeconds: round(warmup),
        secondsPerImageMeasured: round(wall / batch),
        secondsPerImageProjected: round((wall + (defaultSteps - steps) * sps) / batch),
        encodeSeconds: round(median(r.results.map((x) => x.metadata.timings.encodeMs)) / 1000),
        decodeSeconds: round(median(r.results.map((x) => x.metadata.timings.decodeMs)) / 1000),
        flopsPerStep,
        tflopsPerSecond: round(flopsPerStep / sps / 1e12, 4),
        peakFraction: peak ? round(flopsPerStep / sps / peak.flopsPerSecond, 4) : null,
      });
      const c = batches.at(-1) as BatchCell;
      log(`${BIG}² batch ${batch}: ${c.secondsPerStep} s/step (${c.tflopsPerSecond} TFLOP/s), ${c.secondsPerImageProjected} s/image at ${defaultSteps} steps (measured ${c.secondsPerImageMeasured} s/image at ${steps}), rows per run ${rowsPerRun}`);
    } catch (e) {
      batches.push({ size: BIG, batch, error: (e as Error).message });
      log(`${BIG}² batch ${batch} failed: ${(e as Error).message}`);
    }
  }

  // 4. 8 requests at the small size, sequential against interleaved, on the same engine
  let interleave: GpuReport['interleave'];
  const skipped = over();
  if (skipped) interleave = { skipped };
  else {
    try {
      await runBatch('c', [engine], Array.from({ length: N }, (_, i) => req(200 + i, SMALL, 1))); // shapes of the batched runs
      const seq = await runBatch('a', [engine], Array.from({ length: N }, (_, i) => req(300 + i, SMALL, steps)));
      const rowsBefore = engine.status().maxRowsPerRun;
      const inter = await runBatch('c', [engine], Array.from({ length: N }, (_, i) => req(300 + i, SMALL, steps)));
      const figures = (r: { wallMs: number; latencies: number[] }) => ({ wallSeconds: round(r.wallMs / 1000), imagesPerSec: round(N / (r.wallMs / 1000), 4), p50Seconds: round(pct(r.latencies, 50) / 1000), p95Seconds: round(pct(r.latencies, 95) / 1000) });
      const s = figures(seq);
      const i = { ...figures(inter), rowsPerRun: Math.max(rowsBefore, engine.status().maxRowsPerRun) };
      interleave = { size: SMALL, requests: N, steps, sequential: s, interleaved: i, throughputRatio: round(i.imagesPerSec / s.imagesPerSec), p50Ratio: round(s.p50Seconds / i.p50Seconds) };
      log(`${SMALL}² x ${N}: sequential ${s.imagesPerSec} img/s, interleaved ${i.imagesPerSec} img/s (x${interleave.throughputRatio})`);
    } catch (e) {
      interleave = { error: (e as Error).message };
      log(`${SMALL}² x ${N} failed: ${(e as Error).message}`);
    }
  }

  const weightBytesOnDevice = engine.status().weightBytes;
  await engine.unload();
  const b1 = batches.find((b): b is BatchCell => b.batch === 1 && 'secondsPerStep' in b);
  const ratios = batches
    .filter((b): b is BatchCell => 'secondsPerStep' in b)
    .map((b) => ({
      batch: b.batch,
      stepOverBatch1: b1 ? round(b.secondsPerStep / b1.secondsPerStep) : NaN,
      stepPerRequestOverBatch1: b1 ? round(b.secondsPerStep / b.batch / b1.secondsPerStep) : NaN,
      imageOverBatch1: b1 ? round(b.secondsPerImageProjected / b1.secondsPerImageProjected) : NaN,
    }));
  return {
    date: new Date().toISOString(),
    dryRun: dry,
    backend,
    adapter,
    machine: { cpus: cpus().length, memoryGb: round(totalmem() / GiB, 1), node: process.version, platform: `${process.platform}-${process.arch}` },
    model: {
      id: config.spec.id,
      family: info.family,
      dir: built.dir,
      key: built.key,
      cached: built.cached,
      buildSeconds: round(built.buildSeconds, 1),
      builtSeconds: round(built.builtSeconds, 1),
      bytes: built.bytes,
      gb: round(built.bytes / 1e9, 2),
      parameters: built.parameters,
      components: built.components,
      realSize: config.realSize,
      weightBytesOnDevice,
      attentionChunks: info.attentionChunks,
    },
    loadSeconds: round(loadSeconds, 2),
    warmupSeconds: round(warmupSeconds, 2),
    defaultSteps,
    memoryBudgetGb: memoryGb,
    batches,
    interleave,
    ratios,
    totalSeconds: round(elapsed(), 1),
  };
}

/** Prints the figures as tables. */
export function printReport(r: GpuReport): void {
  console.log(`${r.dryRun ? 'DRY RUN (wasm, toy widths)' : 'GPU'}: ${r.adapter ?? r.backend}; model ${r.model.id}, ${r.model.gb} GB, ${(r.model.parameters / 1e9).toFixed(2)} G params, ${r.model.cached ? 'cached' : `built in ${r.model.buildSeconds} s`}; load ${r.loadSeconds} s, warm-up ${r.warmupSeconds} s`);
  console.table(
    r.batches.map((b) =>
      'secondsPerStep' in b
        ? { size: b.size, batch: b.batch, rows: b.rowsPerRun, 's/step': b.secondsPerStep, 'TFLOP/s': b.tflopsPerSecond, 'of peak': b.peakFraction ?? '—', [`s/image (${r.defaultSteps} steps)`]: b.secondsPerImageProjected, [`s/image (${b.steps} steps, measured)`]: b.secondsPerImageMeasured, 'encode s': b.encodeSeconds, 'decode s': b.decodeSeconds }
        : { size: b.size, batch: b.batch, error: b.error ?? b.skipped },
    ),
  );
  console.table(r.ratios);
  const i = r.interleave;
  if ('sequential' in i) console.table([{ mode: 'sequential', ...i.sequential }, { mode: 'interleaved', ...i.interleaved }]);
  else console.log(`interleave: ${i.error ?? i.skipped}`);
  console.log(`total ${r.totalSeconds} s`);
}

function flag(argv: string[], name: string): string | undefined {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
}

/** bench.ts --gpu / --gpu-dry-run: runs, prints, records (GPU runs only), and exits (Dawn keeps Node alive otherwise). */
export async function gpuBenchMain(out: string, argv: string[]): Promise<never> {
  const dryRun = argv.includes('--gpu-dry-run');
  const num = (name: string) => {
    const v = flag(argv, name);
    if (v !== undefined && !(Number(v) > 0)) throw new Error(`${name}: expected a positive number, got ${v}`);
    return v === undefined ? undefined : Number(v);
  };
  const attention = flag(argv, '--gpu-attention');
  if (attention !== undefined && attention !== 'decomposed' && attention !== 'fused') throw new Error(`--gpu-attention: expected decomposed or fused, got ${attention}`);
  try {
    const report = await gpuBench({ dryRun, memoryGb: num('--gpu-memory-gb'), steps: num('--gpu-steps'), budgetS: num('--gpu-budget-s'), attention, modelRoot: flag(argv, '--gpu-models') });
    printReport(report);
    if (dryRun) console.log(JSON.stringify(report, null, 2));
    else writeResults(out, 'gpu', report);
    const failed = report.batches.some((b) => 'error' in b) || 'error' in report.interleave;
    process.exit(failed ? 1 : 0);
  } catch (e) {
    if (e instanceof NoAdapterError) {
      console.error(e.message);
      process.exit(3);
    }
    console.error(e);
    process.exit(1);
  }
}

/** Bytes of every file under a folder (tests). */
export function folderBytes(dir: string): number {
  let n = 0;
  for (const e of readdirSync(dir, { withFileTypes: true, recursive: true })) if (e.isFile()) n += statSync(join(e.parentPath, e.name)).size;
  return n;
}
