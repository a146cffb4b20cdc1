// Browser entry for the engine: onnxruntime-web on WebGPU, with our own
// GPUDevice created at the adapter's real limits, or the wasm provider when
// WebGPU is absent. Only this file knows about bundler URLs and navigator.gpu.
//
// Where the browser has JSPI (Chrome 137+), the JSPI build runs: it takes a
// model's external data as Blobs and reads them tensor by tensor straight into
// GPU buffers, so a multi-GB file loads without a copy in memory and without
// re-sharding. Elsewhere the asyncify build takes the data as buffers (one
// file at most ~2 GB).
import type * as OrtModule from 'onnxruntime-web';
// serve the runtimes ourselves so nothing is fetched from a CDN
import jspiWasmUrl from 'onnxruntime-web/ort-wasm-simd-threaded.jspi.wasm?url';
import asyncifyWasmUrl from 'onnxruntime-web/ort-wasm-simd-threaded.asyncify.wasm?url';
import type { BackendName } from './engine/api/types.ts';
import { deviceLoss } from './engine/device-loss.ts';
import { Engine, type EngineOptions } from './engine/engine.ts';
import { openModelFiles, UrlModelFiles, type ModelFiles } from './engine/model/model-files.ts';
import { meterGpuMemory, type GpuMemory } from './gpu-memory.ts';
import { browserModelCache } from './store/model-cache.ts';
import { wasmThreads } from './wasm-threads.ts';

export type Ort = typeof OrtModule;

export interface OnnxRuntime {
  ort: Ort;
  /** External data streams from Blobs (the JSPI build). */
  streaming: boolean;
  build: 'jspi' | 'asyncify';
  /** Threads of the wasm backend (wasm-threads.ts): min(cores, 8) where the page is cross-origin isolated and has 4 cores or more, else 1. */
  threads: number;
}

let runtime: Promise<OnnxRuntime> | null = null;

/** The onnxruntime-web build this browser runs best, configured once. */
export function onnxRuntime(): Promise<OnnxRuntime> {
  runtime ??= (async () => {
    const jspi = typeof (WebAssembly as { Suspending?: unknown }).Suspending === 'function';
    const ort = (jspi ? await import('onnxruntime-web/jspi') : await import('onnxruntime-web/webgpu')) as unknown as Ort;
    ort.env.wasm.wasmPaths = { wasm: new URL(jspi ? jspiWasmUrl : asyncifyWasmUrl, self.location.href).href };
    // threads need cross-origin isolation (SharedArrayBuffer); capped at 8, none under 4 cores (wasm-threads.ts).
    // The pthreads load this same bundle (import.meta.url) as workers: the glue is embedded, so no `mjs` path is given
    const threads = wasmThreads(self.crossOriginIsolated, navigator.hardwareConcurrency || 1);
    ort.env.wasm.numThreads = threads;
    ort.env.logLevel = 'error';
    return { ort, streaming: jspi, build: jspi ? 'jspi' : 'asyncify', threads };
  })();
  return runtime;
}

export interface GpuInfo {
  backend: BackendName;
  /** "vendor architecture (description)" or why WebGPU is unavailable. */
  adapter: string;
  /** Features the device was granted (device.features), sorted: what onnxruntime and the engine can use. */
  features: string[];
  /** Features asked for: those of ORT_FEATURES the adapter offers. */
  requestedFeatures?: string[];
  /** The device's limits that matter to the engine and onnxruntime (the device was asked for every adapter limit). */
  limits: {
    maxBufferSize?: number;
    maxStorageBufferBindingSize?: number;
    maxComputeWorkgroupStorageSize?: number;
    maxComputeInvocationsPerWorkgroup?: number;
    maxStorageBuffersPerShaderStage?: number;
    maxComputeWorkgroupsPerDimension?: number;
  };
  /** The adapter's subgroup sizes, where it reports them. */
  subgroupSizes?: { min: number; max: number };
  /** The device was made with fewer limits or features than asked (the adapter refused the full request). */
  reducedRequest?: string;
  /** Why features the adapter offers were not asked for (subgroups too narrow for onnxruntime's kernels). */
  withheldFeatures?: string;
  fallbackReason?: string;
  /** The onnxruntime-web build in use: 'jspi' streams weights from Blobs. */
  runtime: OnnxRuntime['build'];
  /** Threads the wasm backend runs on (also its CPU ops under WebGPU). */
  threads?: number;
}

/**
 * Every adapter feature onnxruntime-web's WebGPU provider asks for when it
 * makes its own device (onnxruntime/core/providers/webgpu/webgpu_context.cc,
 * GetAvailableRequiredFeatures, wasm build; the older JS provider in
 * lib/wasm/jsep/backend-webgpu.ts asks for a subset). Given our device
 * instead, it reads device.features (wgpuDeviceGetFeatures reads the JS
 * device's `features` in the wasm glue) and picks its kernels from them, so
 * a feature is only used if the device was granted it here.
 */
export const ORT_FEATURES = ['shader-f16', 'subgroups', 'subgroup-size-control', 'timestamp-query', 'chromium-experimental-subgroup-matrix'] as const;

/** The subgroup features, withheld together. */
const SUBGROUP_FEATURES = new Set<string>(['subgroups', 'subgroup-size-control', 'chromium-experimental-subgroup-matrix']);

/** Narrowest subgroups onnxruntime's subgroup kernels (FlashAttention among them) are written for. */
export const MIN_SUBGROUP_SIZE = 16;

/**
 * Why the subgroup features are not asked for, or null when they are. On SwiftShader (4-wide
 * subgroups), onnxruntime's kernels picked with them gave images 3 to 83 levels from the wasm
 * reference (the fused-attention exports, the attention bench); without them, within 1.
 */
export function subgroupsWithheld(subgroupMinSize: number | undefined): string | null {
  if (subgroupMinSize === undefined || subgroupMinSize >= MIN_SUBGROUP_SIZE) return null;
  return `subgroups, subgroup-size-control and subgroup-matrix not asked for: this adapter's subgroups are ${subgroupMinSize} wide, below the ${MIN_SUBGROUP_SIZE} onnxruntime's subgroup kernels are written for (they gave wrong images here)`;
}

// The limits onnxruntime-web's WebGPU provider asks for when it makes its own device: the fallback when the adapter refuses all of its limits.
const REQUESTED_LIMITS = [
  'maxBindGroups',
  'maxStorageBuffersPerShaderStage',
  'maxBufferSize',
  'maxStorageBufferBindingSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeWorkgroupsPerDimension',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
] as const;

let gpu: Promise<GpuInfo> | null = null;
let device: GPUDevice | null = null;
let memory: GpuMemory | null = null;

/** Why our GPU device was lost, once it has been (a request failing then is not its own fault). */
export function gpuDeviceLost(): string | null {
  return device ? deviceLoss(device).reason : null;
}

/** The device every WebGPU session runs on; null before detectGpu() or on wasm. */
export function gpuDevice(): GPUDevice | null {
  return device;
}

/** Buffers on our device, as counted at createBuffer and destroy; null on wasm. */
export function gpuMemory(): GpuMemory | null {
  return memory;
}

/** Destroys our GPU device (fault injection); false when there is none. */
export function loseGpuDevice(): boolean {
  device?.destroy();
  return device !== null;
}

/** Picks WebGPU when an adapter exists (device made at its real limits), else wasm. */
export function detectGpu(): Promise<GpuInfo> {
  gpu ??= (async (): Promise<GpuInfo> => {
    const { build: runtime, threads } = await onnxRuntime();
    const fallback = (reason: string): GpuInfo => ({ backend: 'wasm', adapter: `none (${reason}); running on wasm`, features: [], limits: {}, fallbackReason: reason, runtime, threads });
    if (!('gpu' in navigator) || !navigator.gpu) return fallback('navigator.gpu is missing');
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' }).catch(() => null);
    if (!adapter) return fallback('no WebGPU adapter');
    // every limit at the adapter's value (a GPUSupportedLimits' members are getters on its prototype: for...in walks them)
    const allLimits: Record<string, number> = {};
    for (const name in adapter.limits) {
      const v = (adapter.limits as unknown as Record<string, unknown>)[name];
      if (typeof v === 'number') allLimits[name] = v;
    }
    const ortLimits: Record<string, number> = {};
    for (const name of REQUESTED_LIMITS) if (typeof adapter.limits[name] === 'number') ortLimits[name] = adapter.limits[name];
    // subgroups narrower than onnxruntime's subgroup kernels are written for give wrong numbers: not asked for
    const info = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number };
    const withheld = subgroupsWithheld(info.subgroupMinSize);
    const requestedFeatures = ORT_FEATURES.filter((f) => adapter.features.has(f) && !(withheld && SUBGROUP_FEATURES.has(f))) as GPUFeatureName[];
    // the full request first; an adapter that refuses it still gets onnxruntime's own, then the defaults
    const attempts: { requiredLimits: Record<string, number>; requiredFeatures: GPUFeatureName[]; why?: string }[] = [
      { requiredLimits: allLimits, requiredFeatures: requestedFeatures },
      { requiredLimits: ortLimits, requiredFeatures: requestedFeatures, why: "the adapter refused all of its limits: onnxruntime's own were asked for" },
      { requiredLimits: ortLimits, requiredFeatures: adapter.features.has('shader-f16') ? ['shader-f16'] : [], why: "the adapter refused onnxruntime's features: only shader-f16 was asked for" },
    ];
    let reducedRequest: string | undefined;
    for (const attempt of attempts) {
      device = await adapter.requestDevice({ requiredLimits: attempt.requiredLimits, requiredFeatures: attempt.requiredFeatures }).catch(() => null);
      if (device) {
        reducedRequest = attempt.why;
        break;
      }
    }
    if (!device) return fallback('the adapter refused a device');
    memory = meterGpuMemory(device);
    // the device's one loss subscription (device-loss.ts); everything else listens there
    deviceLoss(device);
    const i = adapter.info as GPUAdapterInfo & { subgroupMinSize?: number; subgroupMaxSize?: number };
    const l = device.limits;
    return {
      backend: 'webgpu',
      adapter: [i.vendor, i.architecture, i.description].filter(Boolean).join(' ') || 'unknown adapter',
      // what was granted, not what the adapter offers
      features: [...device.features].sort(),
      requestedFeatures,
      ...(withheld && adapter.features.has('subgroups') ? { withheldFeatures: withheld } : {}),
      limits: {
        maxBufferSize: l.maxBufferSize,
        maxStorageBufferBindingSize: l.maxStorageBufferBindingSize,
        maxComputeWorkgroupStorageSize: l.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: l.maxComputeInvocationsPerWorkgroup,
        maxStorageBuffersPerShaderStage: l.maxStorageBuffersPerShaderStage,
        maxComputeWorkgroupsPerDimension: l.maxComputeWorkgroupsPerDimension,
      },
      ...(typeof i.subgroupMinSize === 'number' && typeof i.subgroupMaxSize === 'number' ? { subgroupSizes: { min: i.subgroupMinSize, max: i.subgroupMaxSize } } : {}),
      ...(reducedRequest ? { reducedRequest } : {}),
      runtime,
      threads,
    };
  })();
  return gpu;
}

/**
 * Files for a source. The app's own files (the built-in tiny model) are left to
 * the browser's HTTP cache: caching them again would keep a stale copy after
 * an update. Other URLs and Hub repos go through the download cache.
 */
function openBrowserModelFiles(spec: Parameters<typeof openModelFiles>[0], access?: Parameters<typeof openModelFiles>[1]): ModelFiles {
  if (spec.kind === 'url' && new URL(spec.url, self.location.href).origin === self.location.origin) {
    const files = new UrlModelFiles(spec.url, spec.url, undefined, { httpCache: true });
    // no cacheKey: the download cache leaves these alone
    return { id: files.id, read: (p, cb) => files.read(p, cb), size: (p) => files.size(p), exists: (p) => files.exists(p), stream: (p, cb) => files.stream(p, cb) };
  }
  return openModelFiles(spec, access);
}

/** PNG from RGBA on the canvas's own encoder, off the worker's thread: the step loop keeps going. */
async function encodePngWithCanvas(rgba: Uint8ClampedArray, width: number, height: number): Promise<Blob> {
  const canvas = new OffscreenCanvas(width, height);
  canvas.getContext('2d')!.putImageData(new ImageData(rgba as Uint8ClampedArray<ArrayBuffer>, width, height), 0, 0);
  return canvas.convertToBlob({ type: 'image/png' });
}

export async function createBrowserEngine(options: Partial<EngineOptions> & { backend?: BackendName } = {}): Promise<{ engine: Engine; gpu: GpuInfo }> {
  const info = await detectGpu();
  const { ort, streaming } = await onnxRuntime();
  const backend = options.backend ?? info.backend;
  const engine = new Engine({
    ort: ort as unknown as EngineOptions['ort'],
    streaming,
    // every session runs on our device (an EP option: onnxruntime 1.30 ignores env.webgpu.device and makes its own)
    webgpuDevice: backend === 'webgpu' ? device : undefined,
    // a failed call on it may be a loss reported a little later: its requests wait for the verdict (nothing else does)
    gpuLoss: backend === 'webgpu' && device ? deviceLoss(device) : null,
    adapter: info.adapter,
    openFiles: openBrowserModelFiles,
    fileCache: browserModelCache(),
    encodePng: typeof OffscreenCanvas === 'undefined' ? undefined : encodePngWithCanvas,
    ...options,
    deviceFit: {
      features: info.features,
      // no single buffer over the adapter's limits: attention is chunked and runs are sized to fit
      ...(backend === 'webgpu' ? { maxBufferBytes: Math.min(info.limits.maxBufferSize ?? Infinity, info.limits.maxStorageBufferBindingSize ?? Infinity) } : {}),
      ...options.deviceFit,
    },
    backend,
  });
  // a lost device ends this engine's work; the page restarts the worker and replays.
  // The listener holds the engine weakly and goes with it: an engine that was dropped is not kept for a loss that may never come.
  if (backend === 'webgpu' && device) {
    const held = new WeakRef(engine);
    const stop = deviceLoss(device).listen((reason) => held.deref()?.deviceLost(reason));
    engineListeners.register(engine, stop);
  }
  return { engine, gpu: info };
}

/** Removes a dropped engine's loss listener. */
const engineListeners = new FinalizationRegistry<() => void>((stop) => stop());
