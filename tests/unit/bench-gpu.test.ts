// npm run bench -- --gpu (bench/gpu.ts) on a machine without a GPU: the dry
// run (the same code on wasm, toy widths) gives a report of the right shape
// whose ratios follow from its own cells; with no GPU provider the benchmark
// stops, says why, builds nothing and does not measure wasm instead.
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildKey, ensureGpuModel, gpuBench, gpuModelConfig, noAdapterMessage, NoAdapterError, stepSeconds, vulkanDiagnostics, type BatchCell, type GpuReport, type InterleaveCell } from '../../bench/gpu.ts';
import { fastWeightBytes } from '../../tools/model-builder/fast-weights.ts';
import { fromHalf } from '../../workers/engine/model/float16.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { nodeRuntime, unavailableReasons } from '../../workers/engine/runtime/node-runtime.ts';

const dirs: string[] = [];
const tempDir = async () => {
  const d = await mkdtemp(join(tmpdir(), 'bench-gpu-'));
  dirs.push(d);
  return d;
};
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

describe('GPU benchmark dry run', () => {
  let report: GpuReport;
  let root = '';

  it('runs end to end on wasm and reports every cell', async () => {
    root = await tempDir();
    report = await gpuBench({ dryRun: true, modelRoot: root, steps: 3, log: () => {} });
    expect(report.dryRun).toBe(true);
    expect(report.backend).toBe('wasm');
    expect(report.adapter).toBeNull();
    expect(report.model.cached).toBe(false);
    expect(report.model.parameters).toBeGreaterThan(0);
    expect(Object.keys(report.model.components).sort()).toEqual(['text_encoder', 'text_encoder_2', 'transformer', 'vae_decoder']);
    expect(report.defaultSteps).toBe(4);
    expect(report.batches.map((b) => [b.size, b.batch])).toEqual([[64, 1], [64, 2], [64, 4]]);
    for (const b of report.batches) {
      expect('secondsPerStep' in b, JSON.stringify(b)).toBe(true);
      const c = b as BatchCell;
      expect(c.steps).toBe(3);
      // the requests of a batch ran together: two guided rows each
      expect(c.rowsPerRun).toBeGreaterThanOrEqual(2 * c.batch);
      for (const v of [c.secondsPerStep, c.wallSeconds, c.secondsPerImageMeasured, c.secondsPerImageProjected]) expect(v).toBeGreaterThan(0);
      expect(c.secondsPerImageMeasured).toBeCloseTo(c.wallSeconds / c.batch, 2);
      // FLOPs of the batch's step (two guided rows per request) and the rate they imply
      expect(c.flopsPerStep / c.batch).toBe((report.batches[0] as BatchCell).flopsPerStep);
      expect(c.tflopsPerSecond).toBeCloseTo(c.flopsPerStep / c.secondsPerStep / 1e12, 3);
      expect(c.peakFraction).toBeNull();
      expect(c.secondsPerImageProjected).toBeCloseTo((c.wallSeconds + (report.defaultSteps - c.steps) * c.secondsPerStep) / c.batch, 2);
    }
    const i = report.interleave as InterleaveCell;
    expect(i.requests).toBe(8);
    expect(i.size).toBe(32);
    expect(i.interleaved.rowsPerRun).toBeGreaterThan(2);
    expect(i.throughputRatio).toBeCloseTo(i.interleaved.imagesPerSec / i.sequential.imagesPerSec, 2);
    expect(i.p50Ratio).toBeCloseTo(i.sequential.p50Seconds / i.interleaved.p50Seconds, 2);
    expect(i.sequential.imagesPerSec / (8 / i.sequential.wallSeconds)).toBeCloseTo(1, 2);
  }, 60_000);

  it('computes its ratios from its own cells', () => {
    const cells = report.batches as BatchCell[];
    const b1 = cells[0];
    expect(report.ratios.map((r) => r.batch)).toEqual([1, 2, 4]);
    for (const r of report.ratios) {
      const c = cells.find((x) => x.batch === r.batch)!;
      expect(r.stepOverBatch1).toBeCloseTo(c.secondsPerStep / b1.secondsPerStep, 2);
      expect(r.stepPerRequestOverBatch1).toBeCloseTo(c.secondsPerStep / c.batch / b1.secondsPerStep, 2);
      expect(r.imageOverBatch1).toBeCloseTo(c.secondsPerImageProjected / b1.secondsPerImageProjected, 2);
    }
    expect(report.ratios[0]).toEqual({ batch: 1, stepOverBatch1: 1, stepPerRequestOverBatch1: 1, imageOverBatch1: 1 });
  });

  it('builds the model with SD3.5-medium structure, sharded, and reuses it by its config', async () => {
    const config = gpuModelConfig(true);
    const shards = (await readdir(join(report.model.dir, 'transformer'))).filter((f) => f.startsWith('model.onnx_data.'));
    expect(shards.length).toBeGreaterThan(1);
    const again = ensureGpuModel(config, root);
    expect(again.cached).toBe(true);
    expect(again.key).toBe(report.model.key);
    expect(again.bytes).toBe(report.model.bytes);
    // another config is another folder
    expect(buildKey({ ...config.spec, attention: 'fused' })).not.toBe(report.model.key);
  });
});

describe('GPU benchmark without a GPU provider', () => {
  it('stops with the reasons native onnxruntime gives, builds nothing and does not run on the CPU or wasm', async () => {
    const root = await tempDir();
    let asked = 0;
    let backend = '';
    const run = gpuBench({
      dryRun: false,
      modelRoot: root,
      log: () => {},
      // the real choice this machine makes ('auto': CUDA, then WebGPU, then the CPU)
      openBackend: async (o) => {
        asked++;
        const runtime = await nodeRuntime('auto');
        backend = runtime.backend;
        return { engine: createNodeEngine({ ...o, runtime }), backend: runtime.backend, fallbackReason: unavailableReasons(runtime.status) };
      },
    });
    await expect(run).rejects.toBeInstanceOf(NoAdapterError);
    expect(backend).toBe('cpu');
    const e = (await run.catch((x: unknown) => x)) as Error;
    expect(e.message).toMatch(/no GPU provider runs here \(cuda: the CUDA provider is not installed .*; webgpu: the webgpu provider did not start \(Failed to get a WebGPU adapter/);
    expect(e.message).toContain('does not fall back to the CPU or wasm');
    expect(e.message).toContain('libvulkan.so.1');
    expect(asked).toBe(1);
    expect(await readdir(root)).toEqual([]);
  });

  it('names what the machine lacks for Vulkan', () => {
    const d = vulkanDiagnostics({ VK_DRIVER_FILES: '/nonexistent/nvidia_icd.json', LD_LIBRARY_PATH: '' });
    if (process.platform === 'linux') expect(d).toContain('VK_DRIVER_FILES / VK_ICD_FILENAMES names /nonexistent/nvidia_icd.json, which does not exist');
    expect(noAdapterMessage('x', ['no loader'])).toMatch(/no GPU provider runs here \(x\)[\s\S]*  - no loader$/);
  });
});

describe('fast weights', () => {
  it('are finite, deterministic and about the scale asked for', () => {
    for (const half of [true, false]) {
      const a = fastWeightBytes(1234, 10_001, 0.02, half);
      expect(a.byteLength).toBe(10_001 * (half ? 2 : 4));
      expect(fastWeightBytes(1234, 10_001, 0.02, half)).toEqual(a);
      expect(fastWeightBytes(1235, 10_001, 0.02, half)).not.toEqual(a);
      const v = half ? fromHalf(new Uint16Array(a.buffer)) : new Float32Array(a.buffer);
      let sq = 0;
      let neg = 0;
      let nonFinite = 0;
      for (const x of v) {
        if (!Number.isFinite(x)) nonFinite++;
        sq += x * x;
        if (x < 0) neg++;
      }
      expect(nonFinite).toBe(0);
      const rms = Math.sqrt(sq / v.length);
      expect(rms).toBeGreaterThan(0.02 / 1.5);
      expect(rms).toBeLessThan(0.02 * 1.5);
      expect(neg / v.length).toBeGreaterThan(0.45);
      expect(neg / v.length).toBeLessThan(0.55);
    }
    expect(fastWeightBytes(1, 8, 0, true)).toEqual(new Uint8Array(16));
  });

  it('step time leaves out the first step', () => {
    // step events come at the end of each step: the first step's time (shader compiles) is before the first event;
    // per request the median interval (one slow step does not count), then the median over requests
    expect(stepSeconds([[0, 100, 110, 120], [0, 100, 112, 124], [0, 50, 58, 66]])).toBeCloseTo(0.01, 6);
  });
});
