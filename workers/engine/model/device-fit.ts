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
  /** WebGPU adapter features (`shader-f16` for fp16 weights, `subgroups` for flash attention); ignored on wasm. */
  features?: readonly string[];
  /** Forces the form attention runs in (bench and tests); absent or 'auto': chosen by chooseAttentionForm. */
  attention?: AttentionForm | 'auto';
}

/** wasm32: the whole heap, weights included, lives in 4 GiB of address space. */
export const WASM_MEMORY_BYTES = 4 * 1024 ** 3;
/** WebGPU does not tell how much memory a GPU has: assume a common 8 GB card unless told. */
export const DEFAULT_GPU_MEMORY_BYTES = 8 * 1024 ** 3;
/** Chrome cannot hold one ArrayBuffer over ~2 GB (Node's readFile has the same limit). */
export const MAX_BUFFER_BYTES = 2 * 1024 ** 3;

/** Backends of native onnxruntime (onnxruntime-node) whose sessions are made from files on disk, with no buffer limit of their own. */
export const NATIVE_UNLIMITED: ReadonlySet<BackendName> = new Set(['cpu', 'cuda', 'dml', 'coreml']);

export function defaultDeviceFit(backend: BackendName, over: Partial<DeviceFit> = {}): DeviceFit {
  const unlimited = NATIVE_UNLIMITED.has(backend);
  return {
    // a GPU setting never lifts wasm32's hard 4 GB
    memoryBytes: backend === 'wasm' ? Math.min(over.memoryBytes ?? WASM_MEMORY_BYTES, WASM_MEMORY_BYTES) : (over.memoryBytes ?? DEFAULT_GPU_MEMORY_BYTES),
    // native sessions read their files from disk: no JS buffer holds a file whole
    maxFileBytes: over.maxFileBytes ?? (unlimited ? Infinity : MAX_BUFFER_BYTES),
    maxBufferBytes: over.maxBufferBytes ?? (unlimited ? Infinity : MAX_BUFFER_BYTES),
    features: over.features ?? [],
    ...(over.attention ? { attention: over.attention } : {}),
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

/**
 * The forms attention runs in, rewritten at load:
 * - 'fused': every attention one com.microsoft.MultiHeadAttention (decomposed sites fused, attention-fuse.ts), no chunks;
 * - 'fused-chunked': fused, then cut into query chunks (attention-chunks.ts) when the scores need it;
 * - 'decomposed-chunked': the export's own attention, cut into query chunks when the scores need it (fused sites stay fused).
 */
export type AttentionForm = 'fused' | 'fused-chunked' | 'decomposed-chunked';
export const ATTENTION_FORMS: readonly AttentionForm[] = ['fused', 'fused-chunked', 'decomposed-chunked'];

export interface AttentionChoice {
  form: AttentionForm;
  /** Query chunks the chosen form cuts each attention into (1: none). */
  chunks: number;
  /** Why, in words (the plan's JSON and status carry it). */
  reason: string;
}

export interface AttentionInputs {
  backend: BackendName;
  features?: readonly string[];
  /**
   * Features of the GPUDevice the sessions run on, where the engine made it: onnxruntime's FlashAttention
   * needs `subgroups` on the device, not only on the adapter. Absent: onnxruntime makes its own device
   * from the adapter, and the adapter's features count.
   */
  deviceFeatures?: readonly string[];
  /** The device's smallest subgroup size (GPUAdapterInfo.subgroupMinSize), where known: FlashAttention's kernel is written for 16 and up. */
  subgroupMinSize?: number;
  maxBufferBytes: number;
  /** Query chunks one row's scores need at the model's default size (footprint.ts attentionChunks): 1 when they fit. */
  chunks: number;
  /** The transformer's head size, where known (FlashAttention's kernel is vectorised by 4). */
  headDim?: number;
  force?: AttentionForm | 'auto';
}

/**
 * The form for devices without (wide enough) `subgroups`, by measurement (bench/attention.ts on
 * SwiftShader, bench/results.json `attention`): there onnxruntime's MultiHeadAttention runs its
 * unfused kernel, which holds the same B·N·S·T scores as the decomposed graph, so it is chunked as
 * the decomposed graph would be; it still stepped 3.2x faster than the decomposed graph on the tiny
 * model at 256², with half the largest buffer, within 1 level of wasm. (With SwiftShader's 4-wide
 * subgroups granted, its images left wasm by 83 levels: the engine no longer asks for them there.)
 */
/** onnxruntime's FlashAttention sizes its blocks by the subgroup size; 16 is the smallest it is tested with. */
export const MIN_FLASH_SUBGROUP = 16;

export const NO_SUBGROUPS_FORM: AttentionForm = 'fused-chunked';

/**
 * Chooses how attention runs from the adapter's features and buffer limit:
 * - forced: as asked (chunks only where the form chunks);
 * - wasm: the export's own attention, chunked as the scores need (no WebGPU kernels to choose between);
 * - WebGPU with `subgroups` (and a head size that is a multiple of 4): onnxruntime's MultiHeadAttention takes
 *   its FlashAttention path, which never holds the T² scores: fused, no chunks, where one row's scores would
 *   fit one buffer anyway; where they would not, fused in query chunks, because the flash path wants batch 1
 *   and a run of several rows falls back to the unfused kernel, which holds them;
 * - WebGPU without `subgroups`: the measured NO_SUBGROUPS_FORM, chunked as the scores need.
 */
export function chooseAttentionForm(i: AttentionInputs): AttentionChoice {
  const limit = formatBytes(i.maxBufferBytes);
  const cut = (k: number) => (k > 1 ? `cut into ${k} query chunks so one row's scores stay under the ${limit} buffer limit` : `one row's scores fit the ${limit} buffer limit whole`);
  const chunksOf = (form: AttentionForm) => (form === 'fused' ? 1 : i.chunks);
  if (i.force && i.force !== 'auto') {
    const over = i.force === 'fused' && i.chunks > 1 ? `; unchunked, one row's scores exceed the ${limit} buffer limit unless the flash path runs` : '';
    return { form: i.force, chunks: chunksOf(i.force), reason: `forced by the load option (attention: '${i.force}')${over}` };
  }
  if (i.backend === 'wasm') return { form: 'decomposed-chunked', chunks: i.chunks, reason: `wasm: no WebGPU attention kernels to choose between; the export's own attention, ${cut(i.chunks)}` };
  if (NATIVE_UNLIMITED.has(i.backend)) {
    // a buffer limit set by hand (--max-buffer-mb) is kept as on wasm; by default none, and nothing is rewritten
    if (Number.isFinite(i.maxBufferBytes)) return { form: 'decomposed-chunked', chunks: i.chunks, reason: `native ${i.backend} with a buffer limit set: the export's own attention, ${cut(i.chunks)}` };
    return { form: 'decomposed-chunked', chunks: 1, reason: `native ${i.backend}: no buffer limit, so the export's own attention runs as exported (no rewrite)` };
  }
  const adapterSubgroups = i.features?.includes('subgroups') ?? false;
  const subgroups = i.deviceFeatures ? i.deviceFeatures.includes('subgroups') : adapterSubgroups;
  const vec4 = i.headDim === undefined || i.headDim % 4 === 0;
  const wide = i.subgroupMinSize === undefined || i.subgroupMinSize >= MIN_FLASH_SUBGROUP;
  if (subgroups && vec4 && wide) {
    if (i.chunks <= 1) return { form: 'fused', chunks: 1, reason: `the adapter has subgroups: onnxruntime's WebGPU MultiHeadAttention runs FlashAttention, which holds no score tensor; one fused node per attention, no chunks (${cut(1)})` };
    return { form: 'fused-chunked', chunks: i.chunks, reason: `the adapter has subgroups (FlashAttention for batch-1 runs), but a run of several rows takes the unfused kernel, which holds the scores: fused, ${cut(i.chunks)}` };
  }
  const why = subgroups && !wide
    ? `the device's subgroups are ${i.subgroupMinSize} wide, below the ${MIN_FLASH_SUBGROUP} onnxruntime's FlashAttention is written for `
    : subgroups
    ? `head size ${i.headDim} is not a multiple of 4 (FlashAttention is vectorised by 4)`
    : `${adapterSubgroups ? 'the adapter offers subgroups but the device the sessions run on was made without them' : 'the adapter has no subgroups'}, so MultiHeadAttention would run its unfused kernel, which holds the scores like the decomposed graph`;
  const form = NO_SUBGROUPS_FORM;
  return { form, chunks: chunksOf(form), reason: `${why}; ${form} chosen by measurement (bench/attention.ts on SwiftShader without subgroups: fused MultiHeadAttention stepped 3.2x faster than the decomposed graph on the tiny model, within 1 level of wasm), ${cut(chunksOf(form))}` };
}
