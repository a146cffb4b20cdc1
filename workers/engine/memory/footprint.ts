// How many bytes one request needs, from the model's own dimensions and the
// image size. Three kinds of memory, because they live differently:
//   - state: latents and prompt embeddings, held for the request's whole life;
//   - a transformer run: activations for the rows in that run, freed when the
//     run ends (one run at a time on the device, so runs never add up);
//   - a VAE decode: activations for the images in that decode, likewise;
//   - an image request's VAE encode, likewise, and its input's pixels and (to
//     inpaint) its clean latents, noise and mask, held with its state.
// The activation terms are calibrated against what onnxruntime-web really
// allocates on WebGPU (GPU buffers counted at createBuffer/destroy on
// SwiftShader, full-width SD3 blocks and VAE; `npm run bench -- --scale`
// re-measures them and reports the estimate against the measurement).
import type { TransformerConfig, VaeConfig } from '../model/model-config.ts';

const F32 = 4;

export interface ModelDims {
  transformer: TransformerConfig;
  vae: VaeConfig;
  /** Text tokens: 77 CLIP + T5 length. */
  textTokens: number;
  /** Bytes per activation element in each component: 2 for fp16 graphs, 4 for fp32. */
  transformerBytes: number;
  vaeBytes: number;
  /** Query chunks of the rewritten attention (1: as exported). */
  transformerChunks: number;
  vaeChunks: number;
}

export interface RunFootprint {
  /** Activations of one row (transformer) or one image (VAE) in a run. */
  activationBytes: number;
  /** The largest single buffer that row or image needs: must fit the adapter's buffer limit. */
  largestBufferBytes: number;
}

export interface RequestFootprint {
  /** Held for the request's life. */
  stateBytes: number;
  /** Transformer rows per step: 2 with classifier-free guidance, else 1. */
  rows: number;
  /** One transformer row (the batcher packs several into a run). */
  row: RunFootprint;
  /** One image through the VAE decoder (one tile of it when decoded in tiles). */
  decode: RunFootprint;
  /** Latent side of the VAE tiles, or null for one whole decode. */
  decodeTile: number | null;
  /** One image through the VAE encoder (image to image and inpainting); null for text to image. */
  encode: RunFootprint | null;
}

/** What a request starts from: noise (text to image), an image, or an image and a mask. */
export type RequestInput = 'text' | 'image' | 'inpaint';

/**
 * Score-sized buffers alive at the peak of an attention: the scores, the
 * scaled scores and the softmax of one chunk, and with chunks several chunks
 * in one submitted batch of dispatches (onnxruntime reuses buffers only after
 * it submits; bucketed sizes round up). Measured 3.3 (unchunked) and 4.5
 * (4 chunks) chunk-sized buffers on SwiftShader.
 */
export const SCORE_BUFFERS_ALIVE = { whole: 3.5, chunked: 7 } as const;
/** Token-by-hidden tensors alive besides the scores (q, k, v, residuals, the MLP's 4x-wide GELU parts). Measured ~9.3. */
export const HIDDEN_TENSORS_ALIVE = 10;
/** Tensors the size of the VAE's widest one alive at its peak (upsampled input, GroupNorm and SiLU parts, conv outputs, bucket rounding). Measured 5.5 to 6.5. */
export const DECODE_TENSORS_ALIVE = 7;

/** Tokens one image row carries through the transformer. */
export function transformerTokens(d: ModelDims, width: number, height: number): { image: number; total: number } {
  const t = d.transformer;
  const image = (height / d.vae.scaleFactor / t.patchSize) * (width / d.vae.scaleFactor / t.patchSize);
  return { image, total: image + d.textTokens };
}

/** The joint attention's scores for one row, whole: heads x T x T. */
export function rowScoreBytes(d: ModelDims, width: number, height: number): number {
  const T = transformerTokens(d, width, height).total;
  return d.transformer.numHeads * T * T * d.transformerBytes;
}

export function transformerRow(d: ModelDims, width: number, height: number): RunFootprint {
  const t = d.transformer;
  const T = transformerTokens(d, width, height).total;
  const k = d.transformerChunks;
  const chunk = t.numHeads * Math.ceil(T / k) * T * d.transformerBytes;
  const hidden = T * t.hiddenSize * d.transformerBytes;
  const inputs = (t.inChannels * (height / d.vae.scaleFactor) * (width / d.vae.scaleFactor) + d.textTokens * t.jointAttentionDim + t.pooledProjectionDim) * d.transformerBytes;
  const scores = (k > 1 ? SCORE_BUFFERS_ALIVE.chunked : SCORE_BUFFERS_ALIVE.whole) * chunk;
  return { activationBytes: scores + HIDDEN_TENSORS_ALIVE * hidden + 2 * inputs, largestBufferBytes: Math.max(chunk, 4 * hidden) };
}

/** The VAE decoder's widest stage: channels x pixels of its largest tensor, and its mid-block attention's scores. */
export function decodeImage(d: ModelDims, width: number, height: number): RunFootprint {
  const v = d.vae;
  const chans = [...v.blockOutChannels].reverse();
  const latentPixels = (width / v.scaleFactor) * (height / v.scaleFactor);
  // up block i works at latent x 2^i; its upsampler doubles the size before block i+1 reads it with chans[i] channels
  let largest = chans[0] * latentPixels;
  chans.forEach((c, i) => {
    largest = Math.max(largest, c * latentPixels * 4 ** i);
    if (i < chans.length - 1) largest = Math.max(largest, c * latentPixels * 4 ** (i + 1));
  });
  const tensor = largest * d.vaeBytes;
  const attention = Math.ceil(latentPixels / d.vaeChunks) * latentPixels * d.vaeBytes; // one head over every latent pixel
  const alive = (d.vaeChunks > 1 ? SCORE_BUFFERS_ALIVE.chunked : SCORE_BUFFERS_ALIVE.whole) * attention;
  return { activationBytes: Math.max(DECODE_TENSORS_ALIVE * tensor, alive) + 3 * width * height * F32, largestBufferBytes: Math.max(tensor, attention) };
}

/** The VAE encoder mirrors the decoder: its widest tensor (the first block at full size) and its mid-block attention are the decoder's. */
export const encodeImage = decodeImage;

/** Everything one request needs, by kind; `decodeTile` (latent side) decodes in tiles of at most that size. */
export function requestFootprint(d: ModelDims, width: number, height: number, guidance: number, decodeTile: number | null = null, input: RequestInput = 'text'): RequestFootprint {
  const t = d.transformer;
  const rows = guidance > 1 ? 2 : 1;
  const f = d.vae.scaleFactor;
  const latent = t.inChannels * (height / f) * (width / f) * F32;
  const embeds = rows * (d.textTokens * t.jointAttentionDim + t.pooledProjectionDim) * F32;
  const decode = decodeTile ? decodeImage(d, Math.min(width, decodeTile * f), Math.min(height, decodeTile * f)) : decodeImage(d, width, height);
  // an image's pixels wait for the encoder; to inpaint, its clean latents, the noise and the latent mask stay to the end
  const image = input === 'text' ? 0 : 3 * width * height * F32 + (input === 'inpaint' ? 2 * latent + (height / f) * (width / f) * F32 : 0);
  // latents + velocity scratch, and each row's prompt embedding
  return { stateBytes: 2 * latent + embeds + image, rows, row: transformerRow(d, width, height), decode, decodeTile, encode: input === 'text' ? null : encodeImage(d, width, height) };
}

/**
 * The most one request ever needs at once: its state, one row's run, its
 * decode and (an image request) its encode. Every transient counts:
 * onnxruntime keeps each session's buffers cached for its next run, so they
 * add up.
 */
export const peakBytes = (f: RequestFootprint) => f.stateBytes + f.row.activationBytes + f.decode.activationBytes + (f.encode?.activationBytes ?? 0);
export const largestBuffer = (f: RequestFootprint) => Math.max(f.row.largestBufferBytes, f.decode.largestBufferBytes, f.encode?.largestBufferBytes ?? 0);

/** Query chunks so that one row's scores at the given size stay within `targetBytes` (a power of two, at most 64). */
export function attentionChunks(scoreBytes: number, targetBytes: number): number {
  let k = 1;
  while (scoreBytes / k > targetBytes && k < 64) k *= 2;
  return k;
}

/** The smallest request a model can run (its smallest square side, no guidance): what a model's fit check adds to its weights. */
export const smallestRequestBytes = (d: ModelDims, minSize: number) => peakBytes(requestFootprint(d, minSize, minSize, 0));
