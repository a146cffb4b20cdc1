// One memory budget for everything: the device's memory (the GPU memory
// setting on WebGPU, which does not report it; wasm32's 4 GB heap on wasm)
// holds the weights once and whatever the requests need. The same numbers
// refuse a model before its download (weights plus the smallest request must
// fit), refuse a request that could never fit (naming the largest size that
// does), and decide at run time how many requests run and how many rows share
// one transformer run.
import { largestBuffer, peakBytes, requestFootprint, type ModelDims, type RequestFootprint, type RequestInput } from './footprint.ts';

export interface MemoryBudget {
  /** Memory the weights and all requests may use. */
  memoryBytes: number;
  /** Weights resident on the device. */
  weightBytes: number;
  /** The adapter's largest buffer (maxBufferSize and maxStorageBufferBindingSize). */
  maxBufferBytes: number;
}

/** onnxruntime's own buffers (uniforms, staging, shape tensors) that no estimate names. */
export const RESERVE_BYTES = 64 * 1024 ** 2;

/** Bytes left for requests once the weights are in. */
export const availableBytes = (b: MemoryBudget) => b.memoryBytes - b.weightBytes - RESERVE_BYTES;

export interface SizeLimits {
  minSize: number;
  maxSize: number;
  sizeMultiple: number;
}

/** Why a request can never run on this device, or null when it can. */
export function refusal(b: MemoryBudget, f: RequestFootprint): { kind: 'memory' | 'buffer'; neededBytes: number; limitBytes: number } | null {
  const largest = largestBuffer(f);
  if (largest > b.maxBufferBytes) return { kind: 'buffer', neededBytes: largest, limitBytes: b.maxBufferBytes };
  const peak = peakBytes(f);
  if (peak > availableBytes(b)) return { kind: 'memory', neededBytes: peak, limitBytes: availableBytes(b) };
  return null;
}

/** Smallest VAE tile (latents): below this, tiles are mostly overlap. */
export const MIN_DECODE_TILE = 16;

/**
 * A request's footprint with the VAE decode that fits: the whole image when
 * it can, else the largest tiles that fit (the decode then runs tile by tile
 * and blends the seams, as diffusers' tiled decode does). When nothing fits,
 * the whole-image footprint, so the refusal names the real need.
 */
export function fitRequest(b: MemoryBudget, dims: ModelDims, width: number, height: number, guidance: number, input: RequestInput = 'text'): RequestFootprint {
  const whole = requestFootprint(dims, width, height, guidance, null, input);
  if (!refusal(b, whole)) return whole;
  const f = dims.vae.scaleFactor;
  for (let t = Math.floor((Math.max(width, height) / f - 1) / 8) * 8; t >= MIN_DECODE_TILE; t -= 8) {
    const tiled = requestFootprint(dims, width, height, guidance, t, input);
    if (!refusal(b, tiled)) return tiled;
  }
  return whole;
}

/** The largest image of the requested aspect ratio (within the model's limits) that can run, or null. */
export function largestFittingSize(b: MemoryBudget, dims: ModelDims, limits: SizeLimits, width: number, height: number, guidance: number, input: RequestInput = 'text'): { width: number; height: number } | null {
  const aspect = width / height;
  const snap = (v: number) => Math.max(limits.minSize, Math.min(limits.maxSize, Math.floor(v / limits.sizeMultiple) * limits.sizeMultiple));
  for (let long = limits.maxSize; long >= limits.minSize; long -= limits.sizeMultiple) {
    const w = aspect >= 1 ? long : snap(long * aspect);
    const h = aspect >= 1 ? snap(long / aspect) : long;
    if (!refusal(b, fitRequest(b, dims, w, h, guidance, input))) return { width: w, height: h };
  }
  return null;
}

export interface RequestPlan {
  width: number;
  height: number;
  guidance: number;
  /** Held for the request's life (latents, embeddings). */
  stateBytes: number;
  /** Transformer rows per step (2 with guidance). */
  rows: number;
  /** One transformer run with all of this request's rows; the batcher splits them when memory is short. */
  stepBytes: number;
  decodeBytes: number;
  /** State plus the larger transient: what one request alone needs beside the weights. */
  requestBytes: number;
  largestBufferBytes: number;
  /** Transformer rows per run that memory allows beside one request (1 splits a guided request's two rows). */
  rowsPerRun: number;
  /** Pixel side of the VAE tiles, or null for one whole decode. */
  decodeTile: number | null;
  /** Requests of this size that can be admitted at once (transients are shared: one run at a time). */
  concurrent: number;
}

export function planRequest(b: MemoryBudget, dims: ModelDims, width: number, height: number, guidance: number, maxActive: number): RequestPlan {
  const f = fitRequest(b, dims, width, height, guidance);
  const fits = !refusal(b, f);
  const transient = f.row.activationBytes + f.decode.activationBytes;
  const concurrent = fits ? Math.min(maxActive, Math.floor((availableBytes(b) - transient) / f.stateBytes)) : 0;
  const rowsPerRun = fits ? Math.min(f.rows, Math.floor((availableBytes(b) - f.stateBytes - f.decode.activationBytes) / f.row.activationBytes)) : 0;
  return {
    width,
    height,
    guidance,
    stateBytes: f.stateBytes,
    rows: f.rows,
    stepBytes: f.rows * f.row.activationBytes,
    decodeBytes: f.decode.activationBytes,
    requestBytes: peakBytes(f),
    largestBufferBytes: largestBuffer(f),
    rowsPerRun,
    decodeTile: f.decodeTile ? f.decodeTile * dims.vae.scaleFactor : null,
    concurrent,
  };
}

/** A model whose sessions hold device memory: the one loading, the one serving, or one draining before its release. */
export interface ResidentModel {
  id: string;
  weightBytes: number;
  state: 'loading' | 'loaded' | 'draining';
}

/**
 * Every model resident on the device at once, so a switch can tell whether
 * the next model fits beside the ones still there. Keys are the engine's own
 * objects (a load's token, a LoadedModel): one entry each.
 */
export class MemoryLedger {
  private readonly models = new Map<object, ResidentModel>();

  set(key: object, model: ResidentModel): void {
    this.models.set(key, model);
  }

  mark(key: object, state: ResidentModel['state']): void {
    const m = this.models.get(key);
    if (m) m.state = state;
  }

  remove(key: object): void {
    this.models.delete(key);
  }

  get residents(): ResidentModel[] {
    return [...this.models.values()].map((m) => ({ ...m }));
  }

  /** Weights of every resident model. */
  get weightBytes(): number {
    let n = 0;
    for (const m of this.models.values()) n += m.weightBytes;
    return n;
  }
}

/** What one more model needs on the device: its weights, the runtime's reserve and its smallest request (as checkModelFits counts them). */
export const modelNeedBytes = (b: MemoryBudget, smallestRequestBytes: number) => b.weightBytes + RESERVE_BYTES + smallestRequestBytes;
