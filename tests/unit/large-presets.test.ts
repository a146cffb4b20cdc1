// The builder's SD3.5 Large and Large Turbo presets at full width and two of
// their 38 blocks (1 layer per text encoder, no T5, fast weights), through the
// engine on native onnxruntime: the family and its defaults survive the cut
// depth (the builder states them in model_index.json), the transformer reads
// back at Large's width, a guided Large image, and on Turbo the model's own 4
// unguided steps at one row a run, then a guided request beside an unguided one
// sharing runs, each as it is alone. Each model is 2.6 GB fp32 on disk (transformer
// 478 M parameters, 1.8 GB; built in ~7 s); the file takes ~50 s and 2.6 GB
// resident on 2 cores.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { buildModel, specFromArgs } from '../../tools/model-builder/build.ts';
import { PRESETS } from '../../tools/model-builder/presets.ts';
import { FolderOutput } from '../../tools/model-builder/weight-store.ts';
import type { GenerateResult } from '../../workers/engine/api/types.ts';
import type { Engine } from '../../workers/engine/engine.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';

const roots: string[] = [];
const engines: Engine[] = [];
afterAll(async () => {
  for (const e of engines) await e.unload();
  for (const r of roots) await rm(r, { recursive: true, force: true });
});

async function buildAndLoad(preset: string) {
  const root = await mkdtemp(join(tmpdir(), 'sd3-large-'));
  roots.push(root);
  const { spec, out } = specFromArgs(['--preset', preset, '--layers', '2', '--encoder-layers', '1', '--no-t5', '--fast-weights', '--out', join(root, 'model')]);
  buildModel(spec, new FolderOutput(out));
  const engine = createNodeEngine();
  engines.push(engine);
  const info = await engine.load({ kind: 'path', path: out });
  return { engine, info, id: spec.id };
}

const maxDiff = (a: GenerateResult, b: GenerateResult) => {
  expect(a.rgba.length).toBe(b.rgba.length);
  let d = 0;
  for (let i = 0; i < a.rgba.length; i++) d = Math.max(d, Math.abs(a.rgba[i] - b.rgba[i]));
  return d;
};
const runsOf = (r: GenerateResult) => r.metadata.timings.stages!.transformerRuns;

describe('SD3.5 Large presets', () => {
  it('have the published shape: 38 blocks of 38 heads x 64, QK RMSNorm, no dual attention, table 192²', () => {
    for (const name of ['sd3.5-large', 'sd3.5-large-turbo']) {
      const t = PRESETS[name].transformer;
      expect({ layers: t.layers, heads: t.heads, headDim: t.headDim, caption: t.captionProjectionDim, joint: t.jointAttentionDim, pooled: t.pooledProjectionDim, pos: t.posEmbedMaxSize, sample: t.sampleSize, patch: t.patchSize, dual: t.dualAttentionLayers, qk: t.qkNorm }).toEqual({
        layers: 38, heads: 38, headDim: 64, caption: 2432, joint: 4096, pooled: 2048, pos: 192, sample: 128, patch: 2, dual: [], qk: 'rms_norm',
      });
      expect(PRESETS[name].scheduler.shift).toBe(3.0);
      // at full depth the app knows the family by shape: nothing stated in model_index.json
      expect(PRESETS[name].defaults).toBeUndefined();
    }
  });

  it('sd3.5-large at 2 blocks: Large family and defaults, width read back, a guided 64x64 image in 2 steps', async () => {
    const { engine, info, id } = await buildAndLoad('sd3.5-large');
    expect(id).toBe('sd3-webgpu/synthetic-sd3.5-large-2l');
    expect(info.family).toContain('sd3.5-large');
    expect(info.family).not.toContain('turbo');
    expect(info.defaults).toMatchObject({ steps: 28, guidance: 3.5, width: 1024, height: 1024 });
    expect(engine.model!.transformerConfig).toMatchObject({ hiddenSize: 2432, numHeads: 38, numLayers: 2, jointAttentionDim: 4096, pooledProjectionDim: 2048, posEmbedMaxSize: 192 });

    const r = await engine.generate({ prompt: 'a lighthouse', seed: 7, steps: 2, guidance: 3.5, width: 64, height: 64 });
    expect([r.width, r.height, r.metadata.steps, r.metadata.guidance]).toEqual([64, 64, 2, 3.5]);
    expect(runsOf(r)).toBe(2);
    expect(engine.status().maxRowsPerRun).toBe(2);
    await engine.unload();
  }, 120_000);

  it('sd3.5-large-turbo at 2 blocks: Turbo defaults (4 steps, guidance 0, one row a run); guided and unguided share runs, each as alone', async () => {
    const { engine, info } = await buildAndLoad('sd3.5-large-turbo');
    expect(info.family).toContain('sd3.5-large-turbo');
    expect(info.defaults).toMatchObject({ steps: 4, guidance: 0 });
    expect(engine.model!.transformerConfig).toMatchObject({ hiddenSize: 2432, numHeads: 38, numLayers: 2 });

    const unguided = { prompt: 'a red fox', seed: 11, width: 64, height: 64 };
    const guided = { prompt: 'a blue bird', seed: 12, guidance: 3, width: 64, height: 64 };
    const alone = await engine.generate(unguided);
    expect([alone.metadata.steps, alone.metadata.guidance]).toEqual([4, 0]);
    expect(runsOf(alone)).toBe(4);
    expect(engine.status().maxRowsPerRun).toBe(1);

    const guidedAlone = await engine.generate(guided);
    expect([guidedAlone.metadata.steps, guidedAlone.metadata.guidance]).toEqual([4, 3]);
    expect(engine.status().maxRowsPerRun).toBe(2);

    const [u, g] = await Promise.all([engine.generate(unguided), engine.generate(guided)]);
    expect(engine.status().maxRowsPerRun).toBe(3);
    expect([runsOf(u), runsOf(g)]).toEqual([4, 4]);
    expect(maxDiff(u, alone)).toBeLessThanOrEqual(1);
    expect(maxDiff(g, guidedAlone)).toBeLessThanOrEqual(1);
    await engine.unload();
  }, 120_000);
});
