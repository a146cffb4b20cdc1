// fp16 exports end to end: graphs that take and return float16 (Optimum
// --dtype fp16, AMD's exports) run through the same engine. The engine casts
// at the session's edges only, so an fp16-I/O model differs from its fp32-I/O
// twin by exactly those casts.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fromHalf, toHalf } from '../../workers/engine/model/float16.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { buildTemp, tinySpec, type BuiltModel } from '../helpers/built-models.ts';
import { loadTinyEngine, maxPixelDiff, TINY_MODEL_DIR } from '../helpers/tiny-engine.ts';

const meanPixelDiff = (a: Uint8ClampedArray, b: Uint8ClampedArray) => a.reduce((s, v, i) => s + Math.abs(v - b[i]), 0) / a.length;

describe('fp16 graphs', () => {
  let io16: BuiltModel;
  let w16: BuiltModel;
  beforeAll(async () => {
    io16 = await buildTemp(tinySpec({ io: 'float16' }));
    w16 = await buildTemp(tinySpec({ weights: 'float16' }));
  });
  afterAll(async () => {
    await io16?.remove();
    await w16?.remove();
  });

  it('the transformer with fp16 I/O equals the fp32 one fed and read through the same casts, bit for bit', async () => {
    const opts = { executionProviders: ['wasm'] };
    const half = await ort.InferenceSession.create(readFileSync(join(io16.dir, 'transformer/model.onnx')), opts);
    const full = await ort.InferenceSession.create(readFileSync(join(TINY_MODEL_DIR, 'transformer/model.onnx')), opts);
    expect(half.inputMetadata.map((m) => (m as { type: string }).type)).toEqual(['float16', 'float16', 'float16', 'float16']);
    expect((half.outputMetadata[0] as { type: string }).type).toBe('float16');
    const rand = (n: number, scale: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed) * scale);
    const dims = { hidden_states: [2, 16, 8, 8], encoder_hidden_states: [2, 333, 96], pooled_projections: [2, 64], timestep: [2] };
    const values = {
      hidden_states: rand(2 * 16 * 64, 1.5, 1),
      encoder_hidden_states: rand(2 * 333 * 96, 1, 2),
      pooled_projections: rand(128, 1, 3),
      timestep: Float32Array.from([964.3, 312.77]),
    };
    const halfFeeds: Record<string, ort.Tensor> = {};
    const roundedFeeds: Record<string, ort.Tensor> = {};
    for (const [name, v] of Object.entries(values)) {
      const bits = toHalf(v);
      halfFeeds[name] = new ort.Tensor('float16', bits, dims[name as keyof typeof dims]);
      roundedFeeds[name] = new ort.Tensor('float32', fromHalf(bits), dims[name as keyof typeof dims]);
    }
    const a = (await half.run(halfFeeds)).out_hidden_states.data as Uint16Array;
    const b = toHalf((await full.run(roundedFeeds)).out_hidden_states.data as Float32Array);
    expect(a.length).toBe(b.length);
    expect(Array.from(a)).toEqual(Array.from(b));
  });

  it('an fp16-I/O model generates through the engine within a few levels of its fp32-I/O twin', async () => {
    const engine = createNodeEngine();
    await engine.load({ kind: 'path', path: io16.dir });
    const requests = [
      { prompt: 'a lighthouse at dusk', seed: 11, steps: 4 },
      { prompt: 'a red fox in snow', negativePrompt: 'blurry', seed: 12, steps: 3, guidance: 6 },
      { prompt: 'wide city', seed: 13, steps: 2, guidance: 1, width: 96, height: 64 },
    ];
    const halves = await Promise.all(requests.map((r) => engine.generate(r)));
    const reference = await loadTinyEngine();
    for (const [i, r] of requests.entries()) {
      const full = await reference.generate(r);
      expect(maxPixelDiff(halves[i].rgba, full.rgba), r.prompt).toBeLessThanOrEqual(8);
      expect(meanPixelDiff(halves[i].rgba, full.rgba), r.prompt).toBeLessThan(1);
      expect(maxPixelDiff(halves[i].rgba, full.rgba), r.prompt).toBeGreaterThan(0); // the casts are really there
    }
    await engine.unload();
  });

  it('fp16 weights run on wasm (onnxruntime upcasts where the CPU has no fp16 kernel) and are refused on WebGPU without shader-f16', async () => {
    const engine = createNodeEngine();
    await engine.load({ kind: 'path', path: w16.dir });
    const r = { prompt: 'half precision weights', seed: 21, steps: 3 };
    const [a, b] = await Promise.all([engine.generate(r), (await loadTinyEngine()).generate(r)]);
    expect(maxPixelDiff(a.rgba, b.rgba)).toBeLessThanOrEqual(12);
    expect(meanPixelDiff(a.rgba, b.rgba)).toBeLessThan(1.5);
    await engine.unload();
    const gpu = createNodeEngine({ backend: 'webgpu', deviceFit: { features: [] } });
    await expect(gpu.load({ kind: 'path', path: w16.dir })).rejects.toMatchObject({ code: 'model_load', file: 'text_encoder/model.onnx' });
  });

  it('fp16 inputs and outputs are refused on WebGPU without shader-f16 too (the casts run on the GPU), naming the file', async () => {
    const gpu = createNodeEngine({ backend: 'webgpu', deviceFit: { features: [] } });
    const err = await gpu.load({ kind: 'path', path: io16.dir }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'model_load', file: 'text_encoder/model.onnx' });
    expect((err as Error).message).toMatch(/it holds float16 inputs and outputs, but this GPU adapter does not offer the shader-f16 feature/);
  });
});
