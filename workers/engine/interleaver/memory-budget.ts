// Admission control by memory: how many bytes a request holds while it runs,
// estimated from the model's own dimensions and the image size, against a
// budget taken from the adapter's limits and a configurable cap.
import type { TransformerConfig, VaeConfig } from '../model/model-config.ts';

const F32 = 4;

export interface Footprint {
  /** Latents, velocity scratch, prompt embeddings: held for the request's life. */
  stateBytes: number;
  /** Transformer activations for this request's rows in one batched run. */
  activationBytes: number;
  /** The largest single buffer one row needs (attention scores), for per-buffer limits. */
  largestBufferBytes: number;
  /** state + activations: what admission counts against the budget. */
  totalBytes: number;
}

export interface ModelDims {
  transformer: TransformerConfig;
  vae: VaeConfig;
  /** Text tokens: 77 CLIP + T5 length. */
  textTokens: number;
}

/** Bytes one request of this size and guidance needs. */
export function requestFootprint(dims: ModelDims, width: number, height: number, guidance: number): Footprint {
  const { transformer: t, vae } = dims;
  const rows = guidance > 1 ? 2 : 1;
  const lh = height / vae.scaleFactor;
  const lw = width / vae.scaleFactor;
  const latent = t.inChannels * lh * lw * F32;
  const embeds = rows * (dims.textTokens * t.jointAttentionDim + t.pooledProjectionDim) * F32;
  // latents + noise-free velocity scratch + one batched input/output copy per row
  const stateBytes = latent * 2 + embeds + rows * latent * 2;
  const tokens = (lh / t.patchSize) * (lw / t.patchSize) + dims.textTokens;
  // per row: attention scores [heads, T, T] plus ~12 hidden-size activations
  // alive at once (q, k, v, MLP 4x, residuals), the widely used rule of thumb
  const scores = t.numHeads * tokens * tokens * F32;
  const hidden = 12 * tokens * t.hiddenSize * F32;
  const activationBytes = rows * (scores + hidden);
  return { stateBytes, activationBytes, largestBufferBytes: scores, totalBytes: stateBytes + activationBytes };
}

export interface BudgetOptions {
  /** Upper bound on per-request bytes, whatever the adapter offers. */
  capBytes?: number;
  /** Adapter limits (WebGPU): no single buffer may exceed these. */
  maxBufferSize?: number;
  maxStorageBufferBindingSize?: number;
}

export interface MemoryBudget {
  /** Per-request bytes that may be held at once. */
  totalBytes: number;
  /** Largest single buffer allowed. */
  maxBufferBytes: number;
}

/** 2 GiB: safe for wasm (4 GiB address space holding the weights too) and typical GPUs. */
export const DEFAULT_CAP_BYTES = 2 * 1024 ** 3;

export function memoryBudget(opts: BudgetOptions = {}): MemoryBudget {
  const maxBufferBytes = Math.min(opts.maxBufferSize ?? Infinity, opts.maxStorageBufferBindingSize ?? Infinity, 2 ** 31);
  return { totalBytes: opts.capBytes ?? DEFAULT_CAP_BYTES, maxBufferBytes };
}
