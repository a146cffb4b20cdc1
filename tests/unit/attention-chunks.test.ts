// Attention in query chunks: the graph rewrite that keeps one attention's
// scores within the adapter's largest buffer. Each query row's softmax
// depends on that row alone, so the chunked graph computes the same numbers.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chunkAttention, findAttention } from '../../workers/engine/model/attention-chunks.ts';
import { graphNodes } from '../../workers/engine/model/graph-info.ts';
import { createNodeEngine } from '../../workers/engine/node.ts';
import { buildTemp, tinySpec, type BuiltModel } from '../helpers/built-models.ts';
import { loadTinyEngine, maxPixelDiff, TINY_MODEL_DIR } from '../helpers/tiny-engine.ts';

ort.env.wasm.numThreads = 1;

const rand = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed));
const feeds = {
  transformer: (b: number, l: number) => ({
    hidden_states: new ort.Tensor('float32', rand(b * 16 * l * l, 1), [b, 16, l, l]),
    encoder_hidden_states: new ort.Tensor('float32', rand(b * 333 * 96, 2), [b, 333, 96]),
    pooled_projections: new ort.Tensor('float32', rand(b * 64, 3), [b, 64]),
    timestep: new ort.Tensor('float32', Float32Array.from({ length: b }, (_, i) => 900 - 300 * i), [b]),
  }),
  vae_decoder: (b: number, l: number) => ({ latent_sample: new ort.Tensor('float32', rand(b * 16 * l * l, 4), [b, 16, l, l]) }),
};

describe('attention chunk rewrite', () => {
  let fused: BuiltModel;
  beforeAll(async () => {
    fused = await buildTemp(tinySpec({ attention: 'fused' }));
  });
  afterAll(async () => fused?.remove());

  const graph = (dir: string, c: string) => new Uint8Array(readFileSync(join(dir, c, 'model.onnx')));

  it('finds the transformer and VAE attentions, decomposed and fused, and leaves masked text-encoder attention alone', () => {
    expect(findAttention(graph(TINY_MODEL_DIR, 'transformer')).map((s) => s.kind)).toEqual(['decomposed', 'decomposed']);
    expect(findAttention(graph(TINY_MODEL_DIR, 'vae_decoder')).map((s) => s.kind)).toEqual(['decomposed']);
    expect(findAttention(graph(fused.dir, 'transformer')).map((s) => s.kind)).toEqual(['fused', 'fused']);
    expect(findAttention(graph(fused.dir, 'vae_decoder')).map((s) => s.kind)).toEqual(['fused']);
    // CLIP adds a causal mask of [S, S]: chunking would have to cut it too, so it is not touched
    expect(findAttention(graph(TINY_MODEL_DIR, 'text_encoder'))).toEqual([]);
  });

  for (const variant of ['decomposed', 'fused'] as const) {
    it(`${variant}: k chunks give bit-identical outputs at every size, batch and chunk count (empty chunks included)`, async () => {
      const dir = variant === 'fused' ? fused.dir : TINY_MODEL_DIR;
      for (const c of ['transformer', 'vae_decoder'] as const) {
        const bytes = graph(dir, c);
        const base = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
        for (const k of [2, 3, 8]) {
          const { model, sites } = chunkAttention(bytes, k);
          expect(sites).toBe(c === 'transformer' ? 2 : 1);
          // every other node is kept as it was; each site becomes k copies plus the bounds and a Concat
          expect(graphNodes(model).filter((n) => n.opType === 'Concat' && n.outputs[0].length > 0).length).toBeGreaterThan(graphNodes(bytes).filter((n) => n.opType === 'Concat').length);
          const s = await ort.InferenceSession.create(model, { executionProviders: ['wasm'] });
          for (const [b, l] of [[1, 2], [2, 8], [1, 12]]) {
            // latent 2x2 has 4 VAE queries: with k = 8 half the chunks are empty
            const f = feeds[c](b, l);
            const a = Object.values(await base.run(f))[0].data as Float32Array;
            const r = Object.values(await s.run(f))[0].data as Float32Array;
            expect(Array.from(r), `${c} k=${k} b=${b} l=${l}`).toEqual(Array.from(a));
          }
          await s.release();
        }
        await base.release();
      }
    });
  }

  it('the engine chunks attention when the adapter has small buffers, and the images stay the same', async () => {
    const engine = createNodeEngine({ deviceFit: { maxBufferBytes: 300 * 1024 } });
    await engine.load({ kind: 'path', path: TINY_MODEL_DIR });
    expect(engine.model!.dims.transformerChunks).toBe(4);
    const reference = await loadTinyEngine();
    expect(reference.model!.dims.transformerChunks).toBe(1);
    const requests = [
      { prompt: 'chunked attention', seed: 31, steps: 3 },
      { prompt: 'wider', seed: 32, steps: 2, guidance: 1, width: 128, height: 64 },
    ];
    for (const r of requests) expect(maxPixelDiff((await engine.generate(r)).rgba, (await reference.generate(r)).rgba), r.prompt).toBe(0);
    await engine.unload();
  });
});
