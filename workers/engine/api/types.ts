// The engine's public contract: what callers send and what they get back.
// Everything here is structured-clone friendly, so it crosses the worker boundary as is.

/**
 * Where sessions run: 'webgpu' and 'wasm' are onnxruntime-web's in the page (and 'wasm' in Node too);
 * in Node, 'cpu', 'cuda', 'dml', 'coreml' and 'webgpu' are onnxruntime-node's execution providers.
 */
export type BackendName = 'webgpu' | 'wasm' | 'cpu' | 'cuda' | 'dml' | 'coreml';

/** The onnxruntime build the engine runs on, and how it was chosen (workers/engine/runtime/). */
export interface RuntimeStatus {
  /** 'onnxruntime-node' (native) or 'onnxruntime-web' (wasm, or WebGPU in the page). */
  runtime: 'onnxruntime-node' | 'onnxruntime-web';
  backend: BackendName;
  /** What was asked for: 'auto' or a backend. */
  choice: string;
  /** Threads a CPU or wasm session computes on (intra-op threads natively, wasm threads on the web). */
  threads: number;
  /** The device in words ("CPU: 2 x AMD EPYC …", an adapter). */
  device: string;
  /** Each faster backend not chosen, and why it was not available. */
  unavailable: { backend: string; reason: string }[];
}

/** Where a model's files come from. */
export type ModelSourceSpec =
  /** Base URL of a folder in Optimum's ONNX layout. */
  | { kind: 'url'; url: string }
  /** A Hugging Face repo (or any host with the Hub's `/<repo>/resolve/<revision>/<path>` scheme). */
  | { kind: 'hub'; repo: string; revision?: string; subfolder?: string; host?: string }
  /** A folder the user picked in the browser. */
  | { kind: 'directory'; handle: FileSystemDirectoryHandle; name?: string }
  /** A folder on disk (Node: CLI and benchmarks). */
  | { kind: 'path'; path: string };

export interface GenerateRequest {
  /** Caller-chosen id (for cancel and storage); one is made up when absent. */
  id?: string;
  prompt: string;
  negativePrompt?: string;
  /** Integer in 0..2^32-1; random when absent (the result's metadata says which). */
  seed?: number;
  steps?: number;
  guidance?: number;
  width?: number;
  height?: number;
  /**
   * Image to image: the init image as a PNG file. It is resized to the request's size as diffusers'
   * VaeImageProcessor does (Lanczos); without width and height the request takes the image's size
   * (rounded down to the model's size multiple, scaled down to its largest size).
   */
  image?: Uint8Array;
  /** Inpainting: a PNG the image's size; its white parts are repainted, its black parts kept (binarized at half grey). */
  mask?: Uint8Array;
  /** How much of the schedule an image request runs, in (0, 1]: 1 starts from noise (default 0.6, as diffusers). */
  strength?: number;
  /** Inpainting: work on the mask's bounding box grown by this many pixels (diffusers' padding_mask_crop), and paste the result back into the whole image. */
  paddingMaskCrop?: number;
}

/** An input image's identity in a result's metadata: its file's SHA-256 (hex) and size, not its bytes. */
export interface InputImageInfo {
  sha256: string;
  width: number;
  height: number;
}

/** A request's state: the one word for it in the engine, the worker, the durable queue and the UI.
 * 'encoding' is its prompt going through the text encoders; 'saving' its PNG being made and stored. */
export type JobState = 'queued' | 'encoding' | 'denoising' | 'decoding' | 'saving' | 'done' | 'cancelled' | 'failed';

/**
 * An accepted request's life in the worker's request registry, the one place it is tracked:
 * accepted (stored in the durable queue) → waiting-for-model (a load is under way) → queued (in the
 * engine) → running → saving → done, or failed / cancelled from any state before done.
 */
export type RequestState = 'accepted' | 'waiting-for-model' | 'queued' | 'running' | 'saving' | 'done' | 'failed' | 'cancelled';

/** A request as the registry holds it (status() lists the live ones). */
export interface RequestRecord {
  id: string;
  state: RequestState;
  /** The model it was accepted for. */
  modelId: string;
  /** Runs started so far, this one included (a replay after a crash or a lost device is another). */
  attempts: number;
  /** Its image is made but not yet stored (storage full): kept in memory, offered for download, stored when room returns. */
  unsaved?: boolean;
}

/** A request in one of these states has ended. */
export const isFinal = (s: JobState): boolean => s === 'done' || s === 'cancelled' || s === 'failed';

/** One event shape for downloads and denoising alike (as transformers.js does). */
export interface ProgressEvent {
  status: 'initiate' | 'download' | 'done' | 'ready' | 'queued' | 'encoding' | 'step' | 'decoding' | 'complete';
  /** File being downloaded, for load events. */
  file?: string;
  requestId?: string;
  /** Request events: the request's state after this event. */
  state?: JobState;
  /** Bytes for downloads, steps for generation. */
  loaded: number;
  total: number;
  /** 0..100 */
  progress: number;
  elapsedMs?: number;
  /** Model loads: bytes over every weight file, planned before the first download. */
  overall?: { loaded: number; total: number };
  /** Model loads: this file came from the download cache, not the network. */
  cached?: boolean;
  /** Cheap latent-to-RGB preview: RGBA at latent resolution. */
  preview?: { width: number; height: number; rgba: Uint8ClampedArray };
}

export type ProgressCallback = (event: ProgressEvent) => void;

/** A request with every field filled in and checked (validate.ts normalizeRequest): what the engine runs. */
export interface NormalizedRequest {
  id: string;
  prompt: string;
  negativePrompt: string;
  seed: number;
  steps: number;
  guidance: number;
  width: number;
  height: number;
  /** Image to image and inpainting (absent: text to image): the PNG files as sent, and the strength. */
  image?: Uint8Array;
  mask?: Uint8Array;
  strength?: number;
  paddingMaskCrop?: number;
  /** The fields the model filled in (absent: none): a switch to another model fills them in again from it. */
  defaulted?: ('steps' | 'guidance' | 'width' | 'height')[];
}

/** What an image's metadata records of its request: every setting, the input images by their hashes. */
export type RequestSettings = Omit<NormalizedRequest, 'defaulted' | 'image' | 'mask'> & { image?: InputImageInfo; mask?: InputImageInfo };

/** An image's settings (the request it ran) and how it was made. */
export interface ImageMetadata extends RequestSettings {
  modelId: string;
  backend: BackendName;
  /** Wall-clock ms of its phases; `stages`: the transformer runs that carried its rows, its guidance/Euler updates and read-backs (see StageTimings). */
  timings: { queuedMs: number; encodeMs: number; denoiseMs: number; decodeMs: number; totalMs: number; stages?: RequestStageTimings };
  createdAt: string;
  /** Normalisations applied, e.g. a prompt truncated to the tokenizer's limit. */
  warnings: string[];
  /**
   * Bytes this request moved between host and device: once at its start
   * (noise, prompt embeddings), over its denoising steps, and for previews.
   * 'device': its tensors stayed on the GPU between steps.
   */
  transfers?: { residency: 'host' | 'device'; steps: number; beginUploadBytes: number; stepUploadBytes: number; stepDownloadBytes: number; previewBytes: number };
}

export interface GenerateResult {
  id: string;
  width: number;
  height: number;
  rgba: Uint8ClampedArray;
  /** The image as a PNG file (image/png). */
  png: Blob;
  metadata: ImageMetadata;
}

export interface GenerationDefaults {
  steps: number;
  guidance: number;
  width: number;
  height: number;
}

export interface ModelInfo {
  id: string;
  family: string;
  backend: BackendName;
  defaults: GenerationDefaults;
  /** Image sides must be multiples of `sizeMultiple` within [minSize, maxSize]. */
  limits: { minSize: number; maxSize: number; sizeMultiple: number };
  hasT5: boolean;
  /** The model has a VAE encoder: it takes image-to-image and inpainting requests. */
  imageInput: boolean;
  weightBytes: number;
  /** The device memory the weights and requests share (the GPU memory setting on WebGPU). */
  memoryBytes: number;
  /** The largest image side (default aspect and guidance) that fits beside the weights; 0 if none. */
  largestSize: number;
  /** Query chunks each attention was cut into at load so its scores fit the adapter's buffers (1: as exported). */
  attentionChunks: { transformer: number; vae: number };
  /** The form attention runs in ('fused': one MultiHeadAttention per attention, no chunks; 'fused-chunked'; 'decomposed-chunked'), its query chunks (the most of any component) and why it was chosen for this adapter. */
  attention?: { form: 'fused' | 'fused-chunked' | 'decomposed-chunked'; chunks: number; reason: string };
  /** Where the model was found in its source (variant folder, transformer folder) and where each config came from (file, family defaults, the graph). */
  layout?: {
    root: string;
    variant: 'io16' | 'io32' | null;
    transformerFolder: string;
    configSources: Record<string, string>;
    summary: string;
    /** com.microsoft operators rewritten into standard ONNX at load, per component: op -> nodes (empty: none). */
    lowered?: Record<string, Record<string, number>>;
  };
}

export interface EngineStatus {
  model: ModelInfo | null;
  backend: BackendName | null;
  adapter: string | null;
  /** The runtime and backend chosen, its threads, and why each faster one was not (Node entries; absent in the page). */
  runtime?: RuntimeStatus | null;
  requestsServed: number;
  requestsFailed: number;
  requestsCancelled: number;
  requestsActive: number;
  requestsQueued: number;
  /** Bytes of model weights held once for all requests. */
  weightBytes: number;
  /** Bytes of per-request state (latents, embeddings) held now, on every resident model (a draining one too). */
  requestBytes: number;
  /** Estimated bytes (state + activations) admitted now, on every resident model (= memory.admittedBytes). */
  admittedBytes: number;
  /** Bytes the loaded model's requests may take beside its weights (the whole budget is memory.budgetBytes). */
  requestBudgetBytes: number;
  /** Highest bytes ever admitted on one model: never above its requestBudgetBytes. */
  peakAdmittedBytes: number;
  /** Interleaver cycles run so far. */
  cycles: number;
  /** Most transformer rows one run has carried: above 2, requests ran together. */
  maxRowsPerRun: number;
  /** Why the GPU device was lost, once it has been: this engine then refuses work. */
  deviceLost: string | null;
  /**
   * Where requests' tensors live between steps ('device': on the GPU), the
   * device tensors held for requests now (0 when none runs), and the bytes
   * moved between host and device so far (model runs and the engine's own).
   */
  denoise: { residency: 'host' | 'device'; liveDeviceTensors: number; uploadBytes: number; downloadBytes: number } | null;
  /** Time per stage since the engine started (text encoders, transformer runs, guidance/Euler, VAE decode, read-backs), with the transformer's FLOP rate; null before any ran. */
  stages?: StageTimings | null;
  /**
   * The engine's memory ledger: every model resident on the device (the one
   * loading once its sessions are being made, the one serving, any draining
   * before its release), their weights summed, and the request bytes admitted
   * on all of them, against the memory budget (the GPU memory setting).
   */
  memory?: {
    budgetBytes: number;
    residentWeightBytes: number;
    admittedBytes: number;
    models: ResidentModelStatus[];
    /** How the last load made room: 'beside' the resident models (they fit together), or 'release-first' (they did not): with the bytes that decided it. */
    lastLoad?: { model: string; order: 'beside' | 'release-first'; residentBytes: number; needBytes: number; budgetBytes: number } | null;
  };
  /** Why no model is loaded, when a switch released the old model and then failed (and so did reloading it). */
  noModelReason?: string | null;
}

export interface ResidentModelStatus {
  id: string;
  weightBytes: number;
  state: 'loading' | 'loaded' | 'draining';
}

/** The engine's stages, each timed where it runs. */
export type StageName = 'textEncoders' | 'vaeEncode' | 'transformer' | 'guidance' | 'vaeDecode' | 'readback';

/**
 * One stage's times. `wall*`: CPU clock (performance.now) from the call until
 * its result is usable: for onnxruntime runs the awaited run, and on the
 * device path until the GPU has finished it (queue.onSubmittedWorkDone), so
 * it covers the GPU work, any read-back and JavaScript around it. `gpu*`:
 * GPU time from timestamp queries around the engine's own compute passes
 * (guidance/Euler), only where the device has `timestamp-query`; absent
 * otherwise. onnxruntime's own runs have no GPU figure (its WebGPU profiler
 * is not reachable from JavaScript in this build).
 */
export interface StageTiming {
  runs: number;
  wallTotalMs: number;
  wallMeanMs: number;
  wallLastMs: number;
  gpu?: { runs: number; totalMs: number; meanMs: number; lastMs: number };
}

export interface StageTimings {
  /** The device has timestamp-query: stages with our own passes carry GPU time. */
  gpuTimestamps: boolean;
  stages: Partial<Record<StageName, StageTiming>>;
  /**
   * Transformer throughput: matmul FLOPs of its runs (flops.ts, from the
   * model's config and each run's rows and tokens) over their wall time,
   * and the fraction of the adapter's peak where the adapter is known.
   */
  transformer?: {
    rows: number;
    flops: number;
    /** FLOPs of one row (one branch of one request) for one step, at the last size run. */
    flopsPerRowStep: number;
    lastSize: string;
    achievedFlopsPerSecond: number;
    peak?: { adapter: string; flopsPerSecond: number; fraction: number };
  };
}

/** A request's share: wall time of the transformer runs that carried its rows (shared runs count for each request in them), of its guidance/Euler updates, and of its read-backs. */
export interface RequestStageTimings {
  transformerRuns: number;
  transformerMs: number;
  guidanceMs: number;
  readbackMs: number;
}
