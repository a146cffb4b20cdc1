// Exports made by the real tools (tools/fixtures/make_real_exports.py: torch.onnx
// in Optimum's layout, onnxruntime's transformer optimizer, its fp16 converter,
// the Amuse / AMD / TensorStack layouts and names) generate in Node through the
// engine and match diffusers' own pipeline run on the same weights and noise.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import type { GenerateResult } from '../../workers/engine/api/types.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';

const ROOT = fileURLToPath(new URL('../fixtures/real-exports/', import.meta.url));
interface Reference {
  prompt: string;
  negativePrompt: string;
  seed: number;
  width: number;
  height: number;
  steps: number;
  runs: { guidance: number; rgb: string }[];
}
const reference = (name: string): Reference => JSON.parse(readFileSync(join(ROOT, 'reference', name, 'reference.json'), 'utf8'));

/** Largest difference, in levels of 255, between engine RGBA and diffusers' RGB. */
function diffToRgb(rgba: Uint8ClampedArray, rgb: Uint8Array): number {
  let d = 0;
  for (let i = 0; i < rgb.length / 3; i++) for (let c = 0; c < 3; c++) d = Math.max(d, Math.abs(rgba[i * 4 + c] - rgb[i * 3 + c]));
  return d;
}

/** Generates every reference run on a fixture folder. */
async function generateAll(dir: string, ref: Reference): Promise<GenerateResult[]> {
  const engine = createNodeEngine();
  await engine.load({ kind: 'path', path: dir });
  try {
    const out: GenerateResult[] = [];
    for (const run of ref.runs) out.push(await engine.generate({ prompt: ref.prompt, negativePrompt: ref.negativePrompt, seed: ref.seed, steps: ref.steps, guidance: run.guidance, width: ref.width, height: ref.height }));
    return out;
  } finally {
    await engine.unload();
  }
}

const results = new Map<string, GenerateResult[]>();
const generated = async (fixture: string, ref: string) => {
  if (!results.has(fixture)) results.set(fixture, await generateAll(join(ROOT, fixture), reference(ref)));
  return results.get(fixture)!;
};

describe.each([
  ['sd3', 'sd3'],
  ['sd3-fused', 'sd3'],
  ['sd35', 'sd35'],
  ['sd35-fused', 'sd35'],
])('fp32 export %s', (fixture, ref) => {
  it('generates within 2 levels of diffusers at every guidance', async () => {
    const images = await generated(fixture, ref);
    const r = reference(ref);
    r.runs.forEach((run, i) => {
      expect(diffToRgb(images[i].rgba, readFileSync(join(ROOT, 'reference', ref, run.rgb))), `guidance ${run.guidance}`).toBeLessThanOrEqual(2);
    });
    // guidance changes the picture: the comparison is not of two flat images
    expect(diffToRgb(images[0].rgba, readFileSync(join(ROOT, 'reference', ref, r.runs[1].rgb)))).toBeGreaterThan(10);
  });
});

describe('optimizer-fused exports (NhwcConv, GroupNorm, SkipGroupNorm, SkipLayerNorm, BiasGelu, FastGelu, MultiHeadAttention, T5 layer norms)', () => {
  it.each([['sd3'], ['sd35']])('%s fused matches the unfused export within 1 level', async (name) => {
    const plain = await generated(name, name);
    const fused = await generated(`${name}-fused`, name);
    for (let i = 0; i < plain.length; i++) {
      let d = 0;
      for (let p = 0; p < plain[i].rgba.length; p++) d = Math.max(d, Math.abs(plain[i].rgba[p] - fused[i].rgba[p]));
      expect(d).toBeLessThanOrEqual(1);
    }
  });

  it('the fused graphs carry the com.microsoft operators the optimizer emits', () => {
    const ops = JSON.parse(readFileSync(join(ROOT, 'ops.json'), 'utf8'));
    expect(Object.keys(ops['sd3-fused'].vae_decoder).sort()).toEqual(['GroupNorm', 'NhwcConv', 'SkipGroupNorm']);
    expect(Object.keys(ops['sd3-fused'].transformer).sort()).toEqual(['FastGelu', 'MultiHeadAttention']);
    expect(Object.keys(ops['sd3-fused'].text_encoder_2).sort()).toEqual(['BiasGelu', 'SkipLayerNormalization']);
    expect(Object.keys(ops['sd3-fused'].text_encoder_3).sort()).toEqual(['FastGelu', 'SkipSimplifiedLayerNormalization']);
  });
});

describe('fp16 converter outputs', () => {
  // fp16 inside: not bit-comparable with diffusers' fp32 run, but the same picture
  it.each([['sd35-fp16-io32'], ['sd35-fp16-io16']])('%s loads on wasm and generates close to diffusers', async (fixture) => {
    const images = await generated(fixture, 'sd35');
    const r = reference('sd35');
    r.runs.forEach((run, i) => expect(diffToRgb(images[i].rgba, readFileSync(join(ROOT, 'reference', 'sd35', run.rgb)))).toBeLessThanOrEqual(12));
  });
});

describe('published layouts and names', () => {
  const layouts: Record<string, Record<string, string>> = JSON.parse(readFileSync(join(ROOT, 'layouts.json'), 'utf8'));
  const made: string[] = [];
  afterAll(() => made.forEach((d) => rmSync(d, { recursive: true, force: true })));
  /** Lays a layout out in a temporary folder from its file map ("" = an empty file). */
  const assemble = (name: string) => {
    const dir = mkdtempSync(join(tmpdir(), `real-${name}-`));
    made.push(dir);
    for (const [to, from] of Object.entries(layouts[name])) {
      mkdirSync(dirname(join(dir, to)), { recursive: true });
      if (from) copyFileSync(join(ROOT, from), join(dir, to));
      else writeFileSync(join(dir, to), '');
    }
    return dir;
  };

  it('Amuse (no model_index.json, no scheduler/, no tokenizer_config.json, model.onnx.data) matches the fused export it was made from', async () => {
    const ref = reference('sd35');
    const images = await generateAll(assemble('amuse'), ref);
    ref.runs.forEach((run, i) => expect(diffToRgb(images[i].rgba, readFileSync(join(ROOT, 'reference', 'sd35', run.rgb)))).toBeLessThanOrEqual(2));
  });

  it('TensorStack names (out_sample, inputs reordered, T5 ids int32) match diffusers', async () => {
    const ref = reference('sd3');
    const images = await generateAll(assemble('tensorstack-names'), ref);
    ref.runs.forEach((run, i) => expect(diffToRgb(images[i].rgba, readFileSync(join(ROOT, 'reference', 'sd3', run.rgb)))).toBeLessThanOrEqual(2));
  });

  it('AMD (io16/io32 variant folders, a 0-byte config.json, no model_index.json or scheduler/) loads and generates', async () => {
    const ref = reference('sd35');
    const images = await generateAll(assemble('amd'), ref);
    ref.runs.forEach((run, i) => expect(diffToRgb(images[i].rgba, readFileSync(join(ROOT, 'reference', 'sd35', run.rgb)))).toBeLessThanOrEqual(12));
  });
});
