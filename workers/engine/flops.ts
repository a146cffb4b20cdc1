// Floating-point work of one SD3 transformer step, from the model's config:
// the matrix multiplies of every MMDiT block (2·M·N·K FLOPs each), the
// conventional count; norms, activations, softmax and the small embedders'
// elementwise work are left out (a few per cent of a percent at real sizes).
//
// Per block, with hidden size D, image tokens X = (H/16)·(W/16) (latents at
// 1/8, patch 2), text tokens C (77 CLIP + the T5 length: 333 with 256) and
// N = X + C tokens in the joint attention:
//   q, k, v projections of both streams       6·N·D²
//   attention scores and values (joint)        4·N²·D
//   output projections of both streams         2·N·D²
//   feed-forward (D → 4D → D) of both streams  16·N·D²
//   adaLN-Zero modulation (per row, not token) 2·D·6D per stream
// The last block is context_pre_only: its text stream stops after q, k, v (no
// output projection, no feed-forward, a 2D modulation). SD3.5-medium's first
// blocks (MMDiT-X) add a second self-attention over image tokens only:
//   6·X·D² + 4·X²·D + 2·X·D² (and 3D more modulation).
// Around the blocks: the context embedder (joint_attention_dim → D on C
// tokens), the patch embedding (in_channels·p² → D on X tokens), the final
// projection (D → p²·out_channels), and the time/pooled embedders (per row).
// SD3-medium at 1024²: X = 4096, C = 333, D = 1536, 24 blocks ≈ 8.9 TFLOP per
// row per step; a guided step runs two rows.

export interface TransformerShape {
  /** num_attention_heads × attention_head_dim. */
  hiddenSize: number;
  numLayers: number;
  patchSize: number;
  inChannels: number;
  jointAttentionDim: number;
  pooledProjectionDim: number;
  /** Blocks with MMDiT-X's second (image-only) attention: 13 on SD3.5-medium, 0 elsewhere. */
  dualAttentionLayers?: number;
}

/** Image tokens the transformer sees for an image: latents at 1/vaeScale, then patches of `patch`. */
export function imageTokens(width: number, height: number, patchSize = 2, vaeScale = 8): number {
  return Math.floor(height / vaeScale / patchSize) * Math.floor(width / vaeScale / patchSize);
}

/** MMDiT-X blocks by family, where the config in hand does not carry dual_attention_layers (SD3-REFERENCE: SD3.5-medium has them in blocks 0–12). */
export function dualAttentionLayersOf(family: string): number {
  return family.startsWith('sd3.5-medium') ? 13 : 0;
}

/** Matmul FLOPs of one transformer row (one branch of one request) for one step. */
export function transformerFlopsPerRow(t: TransformerShape, imageTokenCount: number, textTokenCount: number): number {
  const D = t.hiddenSize;
  const X = imageTokenCount;
  const C = textTokenCount;
  const N = X + C;
  const linear = (tokens: number, inDim: number, outDim: number) => 2 * tokens * inDim * outDim;
  const modulation = (chunks: number) => linear(1, D, chunks * D);
  let flops = 0;
  for (let layer = 0; layer < t.numLayers; layer++) {
    const last = layer === t.numLayers - 1;
    const dual = layer < (t.dualAttentionLayers ?? 0);
    // image stream: q, k, v, output, feed-forward, modulation (9 chunks with dual attention, else 6)
    flops += linear(X, D, 3 * D) + linear(X, D, D) + linear(X, D, 4 * D) + linear(X, 4 * D, D) + modulation(dual ? 9 : 6);
    // text stream: q, k, v always; output and feed-forward except in the last block
    flops += linear(C, D, 3 * D) + modulation(last ? 2 : 6);
    if (!last) flops += linear(C, D, D) + linear(C, D, 4 * D) + linear(C, 4 * D, D);
    // joint attention: Q·Kᵀ and softmax·V over all N tokens (heads split D, the total is the same)
    flops += 2 * (2 * N * N * D);
    // MMDiT-X: a second attention over the image tokens alone
    if (dual) flops += linear(X, D, 3 * D) + 2 * (2 * X * X * D) + linear(X, D, D);
  }
  const p2 = t.patchSize * t.patchSize;
  flops += linear(X, t.inChannels * p2, D); // patch embedding (a strided conv)
  flops += linear(C, t.jointAttentionDim, D); // context embedder
  flops += linear(1, 256, D) + linear(1, D, D) + linear(1, t.pooledProjectionDim, D) + linear(1, D, D); // time and pooled embedders
  flops += modulation(2) + linear(X, D, p2 * t.inChannels); // final norm's modulation and projection
  return flops;
}

/**
 * Peak dense fp32 / fp16 throughput of adapters we know, FLOP/s, matched on
 * the adapter's "vendor architecture description". Vendor figures (boost
 * clocks); WebGPU reaches a fraction of them. Unknown adapters: none.
 */
const KNOWN_PEAKS: { match: RegExp; name: string; fp32: number; fp16: number }[] = [
  { match: /rtx 4090/i, name: 'NVIDIA RTX 4090', fp32: 82.6e12, fp16: 82.6e12 },
  { match: /rtx 4080/i, name: 'NVIDIA RTX 4080', fp32: 48.7e12, fp16: 48.7e12 },
  { match: /rtx 3090/i, name: 'NVIDIA RTX 3090', fp32: 35.6e12, fp16: 35.6e12 },
  { match: /rtx 3080/i, name: 'NVIDIA RTX 3080', fp32: 29.8e12, fp16: 29.8e12 },
  { match: /rtx 3060/i, name: 'NVIDIA RTX 3060', fp32: 12.7e12, fp16: 12.7e12 },
  { match: /h100/i, name: 'NVIDIA H100', fp32: 67e12, fp16: 134e12 },
  { match: /h200/i, name: 'NVIDIA H200', fp32: 67e12, fp16: 134e12 },
  { match: /a100/i, name: 'NVIDIA A100', fp32: 19.5e12, fp16: 78e12 },
  { match: /apple.*m1 max|m1 max/i, name: 'Apple M1 Max', fp32: 10.4e12, fp16: 10.4e12 },
  { match: /apple.*m2 max|m2 max/i, name: 'Apple M2 Max', fp32: 13.6e12, fp16: 13.6e12 },
  { match: /apple.*m3 max|m3 max/i, name: 'Apple M3 Max', fp32: 14.2e12, fp16: 14.2e12 },
  { match: /rx 7900 xtx/i, name: 'AMD RX 7900 XTX', fp32: 61.4e12, fp16: 122.8e12 },
];

/** The adapter's peak FLOP/s for the precision its model runs in, or null when the adapter is not in the table. */
export function adapterPeakFlops(adapter: string | null | undefined, precision: 'fp32' | 'fp16' = 'fp32'): { name: string; flopsPerSecond: number } | null {
  if (!adapter) return null;
  const known = KNOWN_PEAKS.find((k) => k.match.test(adapter));
  return known ? { name: known.name, flopsPerSecond: known[precision] } : null;
}
