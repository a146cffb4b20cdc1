// The engine on native onnxruntime (onnxruntime-node's CPU provider), as the
// CLI, the server and the benchmarks run it: sessions made from the files on
// disk (a folder by path; the Node download cache by the graph's bytes and the
// cache's folder, with the external data renamed to the cache's files), the
// same images as the wasm engine (the page without WebGPU) on the tiny model,
// the real tools' exports and a full-width SD3 block, identical bytes on
// every run and thread count, and the graph rewrites only where the CPU
// provider lacks an operator.
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { main } from '../../cli/generate.ts';
import { buildModel, specFromArgs } from '../../tools/model-builder/build.ts';
import { FolderOutput } from '../../tools/model-builder/weight-store.ts';
import type { GenerateRequest, ModelSourceSpec } from '../../workers/engine/api/types.ts';
import type { Engine } from '../../workers/engine/engine.ts';
import type { PlanReport } from '../../workers/engine/memory/plan-report.ts';
import { graphInitializers } from '../../workers/engine/model/graph-info.ts';
import { nodeFileCache } from '../../workers/engine/model/node-file-cache.ts';
import { relocateExternalData } from '../../workers/engine/model/external-data.ts';
import { createNodeEngine, wasmNodeRuntime } from '../../workers/engine/node.ts';
import { cpuRuntime } from '../../workers/engine/runtime/node-runtime.ts';
import { buildTemp, tinySpec } from '../helpers/built-models.ts';
import { startModelServer } from '../helpers/model-server.ts';
import { REAL_EXPORTS_DIR, diffToRgb, reference, referenceRgb } from '../helpers/real-exports.ts';
import { maxPixelDiff, TINY_MODEL_DIR, TINY_MODEL_EXTERNAL_DIR } from '../helpers/tiny-engine.ts';

const native = cpuRuntime().ort;

/** What every native session was made from: a path, or bytes with the options' external-data folder. */
interface Made {
  from: 'path' | 'bytes';
  path?: string;
  bytes?: Uint8Array;
  folder?: string;
  externalData?: unknown;
  threads?: number;
}

function watchNativeCreates(): { made: Made[]; restore(): void } {
  const S = native.InferenceSession as unknown as { create: (source: unknown, options?: Record<string, unknown>, ...rest: unknown[]) => Promise<unknown> };
  const create = S.create;
  const made: Made[] = [];
  S.create = (source: unknown, options: Record<string, unknown> = {}, ...rest: unknown[]) => {
    const extra = options.extra as { session?: { model_external_initializers_file_folder_path?: string } } | undefined;
    made.push({
      from: typeof source === 'string' ? 'path' : 'bytes',
      ...(typeof source === 'string' ? { path: source } : { bytes: source as Uint8Array }),
      folder: extra?.session?.model_external_initializers_file_folder_path,
      externalData: options.externalData,
      threads: options.intraOpNumThreads as number | undefined,
    });
    return create.call(S, source, options, ...rest);
  };
  return { made, restore: () => void (S.create = create) };
}

const loadOn = async (runtime: ReturnType<typeof cpuRuntime>, source: ModelSourceSpec, options = {}): Promise<Engine> => {
  const engine = createNodeEngine({ runtime, ...options });
  await engine.load(source);
  return engine;
};

/** `npm run generate -- --plan` as JSON. */
const plan = async (model: string, backend: string, extra: string[] = []) => {
  const out: string[] = [];
  const log = vi.spyOn(console, 'log').mockImplementation((m: string) => void out.push(m));
  const err = vi.spyOn(console, 'error').mockImplementation(() => {});
  try {
    await main(['--plan', '--model', model, '--backend', backend, ...extra]);
  } finally {
    log.mockRestore();
    err.mockRestore();
  }
  return JSON.parse(out.join('\n')) as PlanReport;
};
const lowered = (r: PlanReport) => Object.fromEntries(Object.entries(r.weights.components).map(([name, c]) => [name, c.lowered]));

const REQUESTS: GenerateRequest[] = [
  { prompt: 'native and wasm', seed: 11, steps: 3 },
  { prompt: 'unguided, wider', seed: 12, steps: 2, guidance: 0, width: 128, height: 64 },
];

describe('native sessions from files on disk', () => {
  it('a folder: every session is made from its graph file, with the external data beside it, on every core by default', async () => {
    const w = watchNativeCreates();
    try {
      const engine = await loadOn(cpuRuntime(), { kind: 'path', path: TINY_MODEL_EXTERNAL_DIR });
      expect(w.made.map((m) => m.from)).toEqual(['path', 'path', 'path', 'path', 'path', 'path']);
      expect(w.made.find((m) => m.path!.endsWith(join('transformer', 'model.onnx')))).toBeDefined();
      expect(w.made.every((m) => m.externalData === undefined && m.threads === cpuRuntime().status.threads)).toBe(true);
      expect(engine.status().runtime).toMatchObject({ runtime: 'onnxruntime-node', backend: 'cpu' });
      await engine.unload();
    } finally {
      w.restore();
    }
  });

  it('a Hub repo through the Node cache: the graph goes over as bytes pointing at the cache files, which onnxruntime reads itself; the images are the folder\'s', async () => {
    const cacheDir = await mkdtemp(join(tmpdir(), 'native-cache-'));
    const server = await startModelServer({ repos: [{ repo: 'native/external', folder: TINY_MODEL_EXTERNAL_DIR }] });
    const w = watchNativeCreates();
    try {
      const fromHub = await loadOn(cpuRuntime(), { kind: 'hub', repo: 'native/external', host: server.url }, { fileCache: nodeFileCache(cacheDir) });
      const withData = w.made.filter((m) => m.from === 'bytes');
      expect(withData.length, JSON.stringify(w.made.map((m) => [m.from, m.folder]))).toBeGreaterThan(0);
      expect(withData.every((m) => m.folder === cacheDir && m.externalData === undefined)).toBe(true);
      // the graphs' external data now name the cache's files (hashes of their URLs), in that folder, each large enough for what is read from it
      const relocated = w.made.filter((m) => m.from === 'bytes' && m.folder);
      for (const m of relocated) {
        const refs = graphInitializers(m.bytes!).flatMap((t) => (t.external ? [t.external] : []));
        for (const ref of refs) {
          expect(ref.location).toMatch(/^[0-9a-f]{64}$/);
          expect((await stat(join(cacheDir, ref.location))).size).toBeGreaterThanOrEqual(ref.offset + ref.length);
        }
      }
      const transformerData = (await stat(join(TINY_MODEL_EXTERNAL_DIR, 'transformer', 'model.onnx_data'))).size;
      const sizes = await Promise.all(relocated.flatMap((m) => [...new Set(graphInitializers(m.bytes!).flatMap((t) => (t.external ? [t.external.location] : [])))]).map(async (l) => (await stat(join(cacheDir, l))).size));
      expect(sizes).toContain(transformerData);
      // graphs without external data go over from the cache by path
      expect(w.made.filter((m) => m.from === 'path').every((m) => m.path!.startsWith(cacheDir))).toBe(true);
      const fromFolder = await loadOn(cpuRuntime(), { kind: 'path', path: TINY_MODEL_EXTERNAL_DIR });
      for (const r of REQUESTS) expect(maxPixelDiff((await fromHub.generate(r)).rgba, (await fromFolder.generate(r)).rgba), r.prompt).toBe(0);
      await Promise.all([fromHub.unload(), fromFolder.unload()]);
    } finally {
      w.restore();
      await server.close();
      await rm(cacheDir, { recursive: true, force: true });
    }
  });

  it('relocating external data renames only the locations asked for and leaves every other byte', async () => {
    const graph = new Uint8Array(await readFile(join(TINY_MODEL_EXTERNAL_DIR, 'transformer', 'model.onnx')));
    const moved = relocateExternalData(graph, new Map([['model.onnx_data', 'f'.repeat(64)]]));
    const before = graphInitializers(graph);
    const after = graphInitializers(moved);
    expect(after.map((t) => [t.name, t.dims, t.external?.offset, t.external?.length])).toEqual(before.map((t) => [t.name, t.dims, t.external?.offset, t.external?.length]));
    expect(new Set(after.flatMap((t) => (t.external ? [t.external.location] : [])))).toEqual(new Set(['f'.repeat(64)]));
    expect(relocateExternalData(graph, new Map())).toEqual(graph);
    // and back: the original bytes exactly
    expect(relocateExternalData(moved, new Map([['f'.repeat(64), 'model.onnx_data']]))).toEqual(graph);
  });
});

describe('native CPU images against the wasm engine', () => {
  it.each([
    ['the tiny model', TINY_MODEL_DIR],
    ['the tiny model, external data', TINY_MODEL_EXTERNAL_DIR],
  ])('%s: within 1 level of wasm', async (_name, dir) => {
    const nat = await loadOn(cpuRuntime(), { kind: 'path', path: dir });
    const wasm = await loadOn(wasmNodeRuntime(), { kind: 'path', path: dir });
    for (const r of REQUESTS) expect(maxPixelDiff((await nat.generate(r)).rgba, (await wasm.generate(r)).rgba), r.prompt).toBeLessThanOrEqual(1);
    await Promise.all([nat.unload(), wasm.unload()]);
  });

  // torch.onnx exports, the optimizer's fused graphs (lowered on both), the fp16 converter's (fp32 and fp16 I/O)
  it.each([
    ['sd3', 'sd3', 2],
    ['sd3-fused', 'sd3', 2],
    ['sd35', 'sd35', 2],
    ['sd35-fused', 'sd35', 2],
    ['sd35-fp16-io32', 'sd35', 12],
    ['sd35-fp16-io16', 'sd35', 12],
  ] as const)('real export %s: within 1 level of wasm, and of diffusers as closely as wasm is', async (fixture, ref, diffusersTolerance) => {
    const r = reference(ref);
    const source = { kind: 'path', path: join(REAL_EXPORTS_DIR, fixture) } as const;
    const nat = await loadOn(cpuRuntime(), source);
    const wasm = await loadOn(wasmNodeRuntime(), source);
    for (const run of r.runs) {
      const req = { prompt: r.prompt, negativePrompt: r.negativePrompt, seed: r.seed, steps: r.steps, guidance: run.guidance, width: r.width, height: r.height };
      const [a, b] = [await nat.generate(req), await wasm.generate(req)];
      expect(maxPixelDiff(a.rgba, b.rgba), `guidance ${run.guidance}`).toBeLessThanOrEqual(1);
      expect(diffToRgb(a.rgba, referenceRgb(ref, run)), `diffusers, guidance ${run.guidance}`).toBeLessThanOrEqual(diffusersTolerance);
    }
    await Promise.all([nat.unload(), wasm.unload()]);
  });
});

describe('a full-width SD3 block (the builder\'s sd3-medium preset at 1 block)', () => {
  let root = '';
  let dir = '';
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'native-wide-'));
    const { spec, out } = specFromArgs(['--preset', 'sd3-medium', '--weights', 'fp32', '--layers', '1', '--encoder-layers', '1', '--vae-layers', '1', '--vae-channels', '32,32,32,32', '--no-t5', '--no-vae-encoder', '--out', join(root, 'model')]);
    buildModel(spec, new FolderOutput(out));
    dir = out;
  }, 120_000);
  afterAll(async () => rm(root, { recursive: true, force: true }));

  it('within 1 level of wasm at 64², and the same bytes on 1, 2 and 4 threads and on a repeated run', async () => {
    const req = { prompt: 'a full-width block', seed: 5, steps: 2, width: 64, height: 64 };
    const source = { kind: 'path', path: dir } as const;
    const images = [];
    for (const threads of [1, 2, 4]) {
      const engine = await loadOn(cpuRuntime(threads), source);
      expect(engine.status().runtime!.threads).toBe(threads);
      images.push((await engine.generate(req)).rgba, (await engine.generate(req)).rgba);
      await engine.unload();
    }
    for (const img of images.slice(1)) expect(maxPixelDiff(img, images[0])).toBe(0);
    const wasm = await loadOn(wasmNodeRuntime(), source);
    expect(maxPixelDiff((await wasm.generate(req)).rgba, images[0])).toBeLessThanOrEqual(1);
    await wasm.unload();
  }, 180_000);

  it("native CPU runs attention as exported: no chunks even where WebGPU's buffers would need them, unless a buffer limit is set", async () => {
    // at its default 1024², one row's scores are 1.9 GB: WebGPU's 1 GiB buffers need chunks, the CPU none
    const webgpu = await plan(dir, 'webgpu');
    expect(webgpu.attention.chunks).toBeGreaterThan(1);
    const cpu = await plan(dir, 'cpu');
    expect(cpu.attention).toMatchObject({ form: 'decomposed-chunked', chunks: 1 });
    expect(cpu.attention.reason).toMatch(/^native cpu: no buffer limit/);
    expect(Object.values(cpu.weights.components).every((c) => c.attentionChunks === 1 && !c.attentionFused && !Object.keys(c.lowered).length)).toBe(true);
    const limited = await plan(dir, 'cpu', ['--max-buffer-mb', '1024']);
    expect(limited.attention.chunks).toBe(webgpu.attention.chunks);
  });
});

describe('fp16 weights on native CPU', () => {
  it('are computed in fp32 (the CPU provider has no fp16 matrix kernels): the memory budget counts them twice, the images stay within 1 level of wasm', async () => {
    const built = await buildTemp(tinySpec({ weights: 'float16', io: 'float32', dataFile: () => 'model.onnx_data' }));
    try {
      const source = { kind: 'path', path: built.dir } as const;
      const nat = await loadOn(cpuRuntime(), source);
      const wasm = await loadOn(wasmNodeRuntime(), source);
      expect(nat.status().weightBytes).toBe(2 * wasm.status().weightBytes);
      expect(nat.status().memory!.residentWeightBytes).toBe(nat.status().weightBytes);
      for (const r of REQUESTS) expect(maxPixelDiff((await nat.generate(r)).rgba, (await wasm.generate(r)).rgba), r.prompt).toBeLessThanOrEqual(1);
      await Promise.all([nat.unload(), wasm.unload()]);
    } finally {
      await built.remove();
    }
  });
});

describe('rewrites only where the native backend needs them', () => {
  it('the optimizer\'s GPU operators are lowered for the CPU provider as for wasm, and not at all for CUDA or DirectML, which run them', async () => {
    const fused = join(REAL_EXPORTS_DIR, 'sd3-fused');
    const onCpu = lowered(await plan(fused, 'cpu', ['--size', '64']));
    expect(onCpu).toEqual(lowered(await plan(fused, 'wasm', ['--size', '64'])));
    expect(Object.keys(onCpu.vae_decoder).sort()).toEqual(['GroupNorm', 'NhwcConv', 'SkipGroupNorm']);
    for (const gpu of ['cuda', 'dml']) expect(Object.values(lowered(await plan(fused, gpu, ['--size', '64']))).every((ops) => !Object.keys(ops).length), gpu).toBe(true);
  });
});
