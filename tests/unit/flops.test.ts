import { describe, expect, it } from 'vitest';
import { adapterPeakFlops, dualAttentionLayersOf, imageTokens, transformerFlopsPerRow } from '../../workers/engine/flops.ts';

const sd3Medium = { hiddenSize: 1536, numLayers: 24, patchSize: 2, inChannels: 16, jointAttentionDim: 4096, pooledProjectionDim: 2048 };

describe('transformer FLOPs per step', () => {
  it('SD3-medium at 1024², 333 text tokens: the hand count, ~8.9 TFLOP per row', () => {
    const X = imageTokens(1024, 1024);
    expect(X).toBe(4096);
    const C = 333;
    // by hand, D = 1536, N = 4429:
    //   a full block: 24·D²·N (qkv 6, out 2, ff 16, both streams) + 4·N²·D (attention) + 24·D² (modulation)
    //     = 250,783,727,616 + 120,520,955,904 + 56,623,104 = 371,361,306,624
    //   the last block (text stream stops after qkv): 24·D²·X + 6·D²·C + 4·N²·D + 16·D²
    //     = 231,928,233,984 + 4,713,873,408 + 120,520,955,904 + 37,748,736 = 357,200,812,032
    //   around them: patch embed 805,306,368, context embedder 4,190,109,696, time/pooled 16,515,072,
    //     final modulation 9,437,184 and projection 805,306,368 = 5,826,674,688
    //   23 × 371,361,306,624 + 357,200,812,032 + 5,826,674,688 = 8,904,337,539,072
    const flops = transformerFlopsPerRow(sd3Medium, X, C);
    expect(flops).toBe(8_904_337_539_072);
    expect(flops / 1e12).toBeCloseTo(8.9, 1);
  });

  it('scales with tokens: attention grows with the square, the rest linearly', () => {
    const at512 = transformerFlopsPerRow(sd3Medium, imageTokens(512, 512), 333);
    const at1024 = transformerFlopsPerRow(sd3Medium, imageTokens(1024, 1024), 333);
    expect(imageTokens(512, 512)).toBe(1024);
    expect(at1024 / at512).toBeGreaterThan(4);
    expect(at1024 / at512).toBeLessThan(6);
  });

  it("SD3.5-medium's dual-attention blocks add image-only attention; SD3.5-large is wider and deeper", () => {
    expect(dualAttentionLayersOf('sd3.5-medium')).toBe(13);
    expect(dualAttentionLayersOf('sd3-medium')).toBe(0);
    const X = 4096;
    const D = 1536;
    const plain = transformerFlopsPerRow(sd3Medium, X, 333);
    const dual = transformerFlopsPerRow({ ...sd3Medium, dualAttentionLayers: 13 }, X, 333);
    // per dual block: qkv 6·X·D², attention 4·X²·D, output 2·X·D², modulation 3 more chunks 2·D·3D
    expect(dual - plain).toBe(13 * (8 * X * D * D + 4 * X * X * D + 6 * D * D));
    const large = transformerFlopsPerRow({ ...sd3Medium, hiddenSize: 2432, numLayers: 38 }, X, 333);
    expect(large / plain).toBeGreaterThan(3);
  });

  it('knows the peak of some adapters and omits the rest', () => {
    expect(adapterPeakFlops('nvidia ampere NVIDIA GeForce RTX 3090')?.flopsPerSecond).toBe(35.6e12);
    expect(adapterPeakFlops('google swiftshader')).toBeNull();
    expect(adapterPeakFlops(null)).toBeNull();
  });
});
