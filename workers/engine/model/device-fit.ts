// What the device can hold and run, decided from file sizes and configs before
// any weights are downloaded: a clear refusal instead of a crashed tab.
import type { BackendName, GenerationDefaults } from '../api/types.ts';
import { ModelLoadError, ModelTooLargeError, formatBytes } from '../errors.ts';
import { availableBytes, RESERVE_BYTES, type MemoryBudget } from '../memory/budget.ts';
import { peakBytes, type RequestFootprint } from '../memory/footprint.ts';

export interface DeviceFit {
  /** Memory the weights plus requests may use: GPU memory on webgpu, the wasm heap on wasm. */
  memoryBytes: number;
  /** Largest file the runtime takes as one buffer (streamed Blobs have no such limit). */
  maxFileBytes: number;
  /** Largest single device buffer (WebGPU adapter limits). */
  maxBufferBytes: number;
  /** WebGPU adapter features (`shader-f16` for fp16 weights); ignored on wasm. */
  features?: readonly string[];
}

/** wasm32: the whole heap, weights included, lives in 4 GiB of address space. */
export const WASM_MEMORY_BYTES = 4 * 1024 ** 3;
/** WebGPU does not tell how much memory a GPU has: assume a common 8 GB card unless told. */
export const DEFAULT_GPU_MEMORY_BYTES = 8 * 1024 ** 3;
/** Chrome cannot hold one ArrayBuffer over ~2 GB (Node's readFile has the same limit). */
export const MAX_BUFFER_BYTES = 2 * 1024 ** 3;

export function defaultDeviceFit(backend: BackendName, over: Partial<DeviceFit> = {}): DeviceFit {
  return {
    // a GPU setting never lifts wasm32's hard 4 GB
    memoryBytes: backend === 'wasm' ? Math.min(over.memoryBytes ?? WASM_MEMORY_BYTES, WASM_MEMORY_BYTES) : (over.memoryBytes ?? DEFAULT_GPU_MEMORY_BYTES),
    maxFileBytes: over.maxFileBytes ?? MAX_BUFFER_BYTES,
    maxBufferBytes: over.maxBufferBytes ?? MAX_BUFFER_BYTES,
    features: over.features ?? [],
  };
}

export interface PlannedFile {
  path: string;
  /** Bytes, or 0 when the source could not tell before downloading. */
  size: number;
}

/** Refuses any file that would need one buffer larger than the runtime allows. */
export function checkFileSizes(files: readonly PlannedFile[], fit: DeviceFit): void {
  for (const f of files) {
    if (f.size > fit.maxFileBytes) {
      throw new ModelLoadError(
        f.path,
        `it is ${formatBytes(f.size)}, more than the ${formatBytes(fit.maxFileBytes)} one browser buffer can hold; use a browser with JSPI (Chrome 137+), which streams it, or re-shard the export into smaller external-data files with \`npm run reshard -- <model folder>\` (README: "Sharded external data")`,
      );
    }
  }
}

/** fp16 weights, and fp16 inputs or outputs (their casts run on the GPU), need WebGPU's shader-f16 feature. */
export function checkHalfPrecision(path: string, half: { halfPrecision: boolean; halfIO: boolean }, backend: BackendName, fit: DeviceFit): void {
  if (backend === 'webgpu' && (half.halfPrecision || half.halfIO) && !fit.features?.includes('shader-f16')) {
    const what = half.halfPrecision ? 'float16 weights' : 'float16 inputs and outputs';
    throw new ModelLoadError(path, `it holds ${what}, but this GPU adapter does not offer the shader-f16 feature; use an fp32 export, the wasm backend, or a browser and GPU with shader-f16`);
  }
}

/** Refuses a model whose weights plus its smallest request cannot fit: larger images are refused per request, naming the largest that fits. */
export function checkModelFits(budget: MemoryBudget, smallest: RequestFootprint, smallestSide: number, defaults: GenerationDefaults, backend: BackendName, hasT5: boolean): void {
  const need = peakBytes(smallest);
  if (need <= availableBytes(budget)) return;
  const total = budget.weightBytes + RESERVE_BYTES + need;
  const detail = `${formatBytes(budget.weightBytes)} of weights + ${formatBytes(need + RESERVE_BYTES)} for the smallest image, ${smallestSide}×${smallestSide}; its default is ${defaults.width}×${defaults.height}`;
  const hints = [
    hasT5 ? 'load it without T5 ("no T5" mode) to save memory' : '',
    backend === 'wasm' ? 'the wasm backend holds everything in 4 GB; use a browser with WebGPU' : 'if your GPU has more memory, raise "GPU memory" in the model settings',
  ].filter(Boolean);
  throw new ModelTooLargeError(total, budget.memoryBytes, detail, `Try: ${hints.join('; or ')}.`);
}
