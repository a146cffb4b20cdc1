// Decomposed attention fused into one com.microsoft.MultiHeadAttention per site
// (attention-fuse.ts): the same numbers as the export's own MatMul/Softmax/MatMul,
// on the project's tiny model and on torch.onnx exports, alone and then chunked.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-web';
import { describe, expect, it } from 'vitest';
import { chunkAttention, findAttention } from '../../workers/engine/model/attention-chunks.ts';
import { fuseAttention } from '../../workers/engine/model/attention-fuse.ts';
import { graphNodes } from '../../workers/engine/model/graph-info.ts';
import { REAL_EXPORTS_DIR } from '../helpers/real-exports.ts';
import { TINY_MODEL_DIR } from '../helpers/tiny-engine.ts';

ort.env.wasm.numThreads = 1;

const rand = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898 + seed));
const feeds = {
  transformer: (b: number, l: number) => ({
    hidden_states: new ort.Tensor('float32', rand(b * 16 * l * l, 1), [b, 16, l, l]),
    encoder_hidden_states: new ort.Tensor('float32', rand(b * 20 * 96, 2), [b, 20, 96]),
    pooled_projections: new ort.Tensor('float32', rand(b * 64, 3), [b, 64]),
    timestep: new ort.Tensor('float32', Float32Array.from({ length: b }, (_, i) => 900 - 300 * i), [b]),
  }),
  vae_decoder: (b: number, l: number) => ({ latent_sample: new ort.Tensor('float32', rand(b * 16 * l * l, 4), [b, 16, l, l]) }),
};

const graph = (dir: string, c: string) => new Uint8Array(readFileSync(join(dir, c, 'model.onnx')));
const count = (m: Uint8Array, op: string) => graphNodes(m).filter((n) => n.opType === op).length;

/** Largest |a - b| relative to the largest |a|. */
function relDiff(a: Float32Array, b: Float32Array): number {
  let d = 0;
  let m = 1e-6;
  for (let i = 0; i < a.length; i++) {
    d = Math.max(d, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(a[i]));
  }
  return d / m;
}

const cases: [string, string, 'transformer' | 'vae_decoder', number][] = [
  ['tiny model', TINY_MODEL_DIR, 'transformer', 2],
  ['tiny model', TINY_MODEL_DIR, 'vae_decoder', 1],
  ['torch.onnx SD3 export', join(REAL_EXPORTS_DIR, 'sd3'), 'transformer', 2],
  ['torch.onnx SD3 export', join(REAL_EXPORTS_DIR, 'sd3'), 'vae_decoder', 1],
  ['torch.onnx SD3.5 export (qk norm)', join(REAL_EXPORTS_DIR, 'sd35'), 'transformer', 3],
];

describe('attention fuse rewrite', () => {
  for (const [label, dir, c, sites] of cases) {
    it(`${label} ${c}: every decomposed site becomes one MultiHeadAttention with the same outputs, and chunks after`, async () => {
      const bytes = graph(dir, c);
      expect(findAttention(bytes).map((s) => s.kind)).toEqual(Array(sites).fill('decomposed'));
      const { model, fused, skipped } = fuseAttention(bytes);
      expect([fused, skipped]).toEqual([sites, 0]);
      // node counts: each site's MatMul, Softmax, MatMul go; one MultiHeadAttention comes
      expect(count(model, 'MultiHeadAttention')).toBe(sites);
      expect(count(model, 'Softmax')).toBe(count(bytes, 'Softmax') - sites);
      expect(count(model, 'MatMul')).toBe(count(bytes, 'MatMul') - 2 * sites);
      expect(findAttention(model).map((s) => s.kind)).toEqual(Array(sites).fill('fused'));
      // fused and chunked: the existing rewrite cuts the new MultiHeadAttention nodes into query chunks
      const chunked = chunkAttention(model, 3);
      expect(chunked.sites).toBe(sites);
      expect(count(chunked.model, 'MultiHeadAttention')).toBe(3 * sites);

      const base = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
      const s = await ort.InferenceSession.create(model, { executionProviders: ['wasm'] });
      const sc = await ort.InferenceSession.create(chunked.model, { executionProviders: ['wasm'] });
      try {
        for (const [b, l] of [[1, 4], [2, 8]]) {
          const f = feeds[c](b, l);
          const a = Object.values(await base.run(f))[0].data as Float32Array;
          const r = Object.values(await s.run(f))[0].data as Float32Array;
          const rc = Object.values(await sc.run(f))[0].data as Float32Array;
          expect(r.length).toBe(a.length);
          expect(relDiff(a, r), `${c} b=${b} l=${l}`).toBeLessThan(1e-5);
          // chunking a fused graph cuts only the queries: bit for bit the unchunked fused graph
          expect(Array.from(rc)).toEqual(Array.from(r));
        }
      } finally {
        await Promise.all([base.release(), s.release(), sc.release()]);
      }
    });
  }

  it('leaves a graph without decomposed attention as it was', () => {
    const fusedOnce = fuseAttention(graph(TINY_MODEL_DIR, 'transformer')).model;
    const again = fuseAttention(fusedOnce);
    expect(again.fused).toBe(0);
    expect(again.model).toBe(fusedOnce);
    // CLIP's masked attention is not a site: the text encoder is untouched
    const clip = graph(TINY_MODEL_DIR, 'text_encoder');
    expect(fuseAttention(clip).model).toBe(clip);
  });
});
