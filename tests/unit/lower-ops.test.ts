// Lowering of the com.microsoft operators onnxruntime-web lacks, on graphs made
// by the real tools: onnxruntime's transformer optimizer (the fused VAE decoder
// of tests/fixtures/real-exports) and single-operator graphs written with the
// python onnx helper. Each runs through onnxruntime-web's wasm backend: refused
// before lowering, equal to the reference after.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ModelLoadError } from '../../workers/engine/errors.ts';
import { graphNodes } from '../../workers/engine/model/graph-info.ts';
import { foldTransposes, lowerForWeb } from '../../workers/engine/model/lower-ops.ts';
import { checkOps, unsupportedOps } from '../../workers/engine/model/op-support.ts';
import { ort } from '../../workers/engine/node.ts';

const ROOT = fileURLToPath(new URL('../fixtures/real-exports/', import.meta.url));
const read = (path: string) => new Uint8Array(readFileSync(ROOT + path));
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
};
const opCount = (model: Uint8Array, op: string) => graphNodes(model).filter((n) => n.opType === op).length;

describe('operator inventory', () => {
  it('names what each backend lacks in the optimizer-fused graphs', () => {
    const vae = read('sd3-fused/vae_decoder/model.onnx');
    const byOp = (backend: 'wasm' | 'webgpu') => Object.fromEntries(unsupportedOps(vae, backend).map((o) => [o.op, o.count]));
    expect(byOp('wasm')).toEqual({ NhwcConv: 25, GroupNorm: 14, SkipGroupNorm: 7 });
    expect(byOp('webgpu')).toEqual({ NhwcConv: 25, GroupNorm: 14, SkipGroupNorm: 7 });
    // the text encoders' and transformer's fused operators run on both
    for (const c of ['text_encoder', 'text_encoder_2', 'text_encoder_3', 'transformer']) {
      expect(unsupportedOps(read(`sd3-fused/${c}/model.onnx`), 'wasm'), c).toEqual([]);
      expect(unsupportedOps(read(`sd3-fused/${c}/model.onnx`), 'webgpu'), c).toEqual([]);
    }
  });

  it('the wasm build really has no kernel for them, and has one for the rest', async () => {
    await expect(ort.InferenceSession.create(read('sd3-fused/vae_decoder/model.onnx'), { executionProviders: ['wasm'] })).rejects.toThrow(/NhwcConv/);
    await expect(ort.InferenceSession.create(read('ops/BiasAdd.onnx'), { executionProviders: ['wasm'] })).rejects.toThrow(/BiasAdd/);
    await expect(ort.InferenceSession.create(read('ops/BiasSplitGelu.onnx'), { executionProviders: ['wasm'] })).rejects.toThrow(/BiasSplitGelu/);
    const s = await ort.InferenceSession.create(read('sd3-fused/text_encoder_3/model.onnx'), { executionProviders: ['wasm'] });
    await s.release();
  });

  it('refuses an operator nobody can run, naming it and the file; lowerable ones pass', () => {
    expect(() => checkOps('x/model.onnx', read('ops/Frobnicate.onnx'), 'wasm')).toThrow(ModelLoadError);
    expect(() => checkOps('x/model.onnx', read('ops/Frobnicate.onnx'), 'wasm')).toThrow(/x\/model\.onnx.*com\.example\.Frobnicate \(1 node\)/);
    expect(() => checkOps('vae_decoder/model.onnx', read('sd3-fused/vae_decoder/model.onnx'), 'wasm')).not.toThrow();
  });
});

describe('lowering', () => {
  it('a graph with nothing to lower comes back as the same bytes', () => {
    const g = read('sd3-fused/transformer/model.onnx');
    const r = lowerForWeb(g, 'wasm');
    expect(r.model).toBe(g);
    expect(r.lowered).toEqual({});
  });

  it.each([['sd3'], ['sd35-fp16-io32']])('the fused VAE decoder (%s: NhwcConv, GroupNorm + SiLU, SkipGroupNorm) runs on wasm and equals the unfused export', async (name) => {
    const fused = read(`${name}/vae_decoder/model.onnx`.replace('sd3/', 'sd3-fused/'));
    const { model, lowered } = lowerForWeb(fused, 'wasm');
    expect(lowered).toEqual({ NhwcConv: 25, GroupNorm: 14, SkipGroupNorm: 7 });
    expect(unsupportedOps(model, 'wasm')).toEqual([]);
    const plain = await ort.InferenceSession.create(read('sd3/vae_decoder/model.onnx'));
    const low = await ort.InferenceSession.create(model);
    const ref = name === 'sd3' ? plain : await ort.InferenceSession.create(read('sd35/vae_decoder/model.onnx'));
    const x = new ort.Tensor('float32', Float32Array.from({ length: 16 * 8 * 12 }, (_, i) => Math.sin(i * 0.7)), [1, 16, 8, 12]);
    const want = (await ref.run({ latent_sample: x })).sample.data as Float32Array;
    const got = (await low.run({ latent_sample: x })).sample.data as Float32Array;
    expect(got.length).toBe(3 * 64 * 96);
    // fp16 inside computes to about 1e-3
    expect(maxDiff(got, want)).toBeLessThan(name === 'sd3' ? 1e-4 : 2e-2);
    await Promise.all([plain.release(), low.release(), ref === plain ? undefined : ref.release()]);
  });

  it('folds the inverse transposes around NhwcConv', () => {
    const fused = read('sd3-fused/vae_decoder/model.onnx');
    const { model } = lowerForWeb(fused, 'wasm');
    // 25 convolutions get 3 transposes each (one on the weight); the pairs that met an optimizer transpose are gone
    const unfolded = opCount(fused, 'Transpose') + 3 * 25;
    expect(opCount(model, 'Transpose')).toBeLessThan(unfolded);
    expect(foldTransposes(model).folded).toBe(0); // nothing left to fold
  });

  it('BiasAdd and BiasSplitGelu equal their definitions', async () => {
    const x = Float32Array.from({ length: 8 }, (_, i) => i / 3 - 1);
    const b4 = Float32Array.from([0.5, -0.25, 1, 2]);
    const s = Float32Array.from({ length: 8 }, (_, i) => Math.cos(i));
    const add = await ort.InferenceSession.create(lowerForWeb(read('ops/BiasAdd.onnx'), 'wasm').model);
    const y = (await add.run({ x: new ort.Tensor('float32', x, [1, 2, 4]), b: new ort.Tensor('float32', b4, [4]), s: new ort.Tensor('float32', s, [1, 2, 4]) })).y.data as Float32Array;
    expect(maxDiff(y, Array.from(x, (v, i) => v + b4[i % 4] + s[i]))).toBeLessThan(1e-6);

    const x8 = Float32Array.from({ length: 16 }, (_, i) => Math.sin(i) * 2);
    const b8 = Float32Array.from({ length: 8 }, (_, i) => i / 10);
    const split = await ort.InferenceSession.create(lowerForWeb(read('ops/BiasSplitGelu.onnx'), 'wasm').model);
    const z = (await split.run({ x: new ort.Tensor('float32', x8, [1, 2, 8]), b: new ort.Tensor('float32', b8, [8]) })).y.data as Float32Array;
    // erf by Abramowitz-Stegun 7.1.26 (|error| < 1.5e-7)
    const erf = (v: number) => {
      const t = 1 / (1 + 0.3275911 * Math.abs(v));
      const y = 1 - ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * Math.exp(-v * v);
      return Math.sign(v) * y;
    };
    const want: number[] = [];
    for (let r = 0; r < 2; r++)
      for (let i = 0; i < 4; i++) {
        const a = x8[r * 8 + i] + b8[i];
        const g = x8[r * 8 + 4 + i] + b8[4 + i];
        want.push(a * 0.5 * g * (1 + erf(g / Math.SQRT2)));
      }
    expect(z.length).toBe(8);
    expect(maxDiff(z, want)).toBeLessThan(1e-5);
    await Promise.all([add.release(), split.release()]);
  });

  it('packed-QKV and packed-KV MultiHeadAttention (the optimizer\'s unet form) are refused as they are and unpacked to equal onnxruntime\'s own attention', async () => {
    const cases = JSON.parse(readFileSync(ROOT + 'ops/packed-attention.json', 'utf8')) as Record<string, { inputs: Record<string, { dims: number[]; data: number[] }>; y: number[] }>;
    for (const [name, { inputs, y }] of Object.entries(cases)) {
      const packed = read(`ops/${name}.onnx`);
      // onnxruntime loads it, then fails on run: the inventory names it before any download
      expect(() => checkOps(`unet/${name}.onnx`, packed, 'wasm')).not.toThrow();
      expect(unsupportedOps(packed, 'wasm')).toEqual([{ op: 'MultiHeadAttention', domain: 'com.microsoft', count: 1 }]);
      expect(unsupportedOps(packed, 'webgpu')).toEqual([{ op: 'MultiHeadAttention', domain: 'com.microsoft', count: 1 }]);
      const feeds = Object.fromEntries(Object.entries(inputs).map(([k, v]) => [k, new ort.Tensor('float32', Float32Array.from(v.data), v.dims)]));
      const raw = await ort.InferenceSession.create(packed);
      await expect(raw.run(feeds)).rejects.toThrow(/not implemented/);
      const { model, lowered } = lowerForWeb(packed, 'wasm');
      expect(lowered).toEqual({ MultiHeadAttention: 1 });
      expect(unsupportedOps(model, 'wasm')).toEqual([]);
      const session = await ort.InferenceSession.create(model);
      const out = (await session.run(feeds)).y.data as Float32Array;
      expect(out.length, name).toBe(y.length);
      expect(maxDiff(out, y), name).toBeLessThan(1e-5);
      await Promise.all([raw.release(), session.release()]);
    }
  });
});
