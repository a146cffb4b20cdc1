// Browser entry for the engine: onnxruntime-web's WebGPU build, with our own
// GPUDevice created at the adapter's real limits, or the wasm provider when
// WebGPU is absent. Only this file knows about bundler URLs and navigator.gpu.
import * as ort from 'onnxruntime-web/webgpu';
// the webgpu bundle runs on the asyncify build of the wasm runtime; serve it
// ourselves so nothing is fetched from a CDN
import wasmUrl from 'onnxruntime-web/ort-wasm-simd-threaded.asyncify.wasm?url';
import type { BackendName } from './engine/api/types.ts';
import { Engine, type EngineOptions } from './engine/engine.ts';
import { openModelFiles, type ModelFiles } from './engine/model/model-files.ts';
import { browserModelCache } from './store/model-cache.ts';

export { ort };

export interface GpuInfo {
  backend: BackendName;
  /** "vendor architecture (description)" or why WebGPU is unavailable. */
  adapter: string;
  features: string[];
  limits: { maxBufferSize?: number; maxStorageBufferBindingSize?: number };
  fallbackReason?: string;
}

let configured = false;
function configureOrt(): void {
  if (configured) return;
  configured = true;
  ort.env.wasm.wasmPaths = { wasm: new URL(wasmUrl, self.location.href).href };
  // threads need cross-origin isolation; one thread works everywhere
  ort.env.wasm.numThreads = 1;
  ort.env.logLevel = 'error';
}

// Limits onnxruntime-web's WebGPU backend asks for when it makes its own device.
const REQUESTED_LIMITS = [
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

/** Destroys our GPU device (fault injection); false when there is none. */
export function loseGpuDevice(): boolean {
  device?.destroy();
  return device !== null;
}

/** Picks WebGPU when an adapter exists (device made at its real limits), else wasm. */
export function detectGpu(): Promise<GpuInfo> {
  configureOrt();
  gpu ??= (async (): Promise<GpuInfo> => {
    const fallback = (reason: string): GpuInfo => ({ backend: 'wasm', adapter: `none (${reason}); running on wasm`, features: [], limits: {}, fallbackReason: reason });
    if (!('gpu' in navigator) || !navigator.gpu) return fallback('navigator.gpu is missing');
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' }).catch(() => null);
    if (!adapter) return fallback('no WebGPU adapter');
    const requiredLimits: Record<string, number> = {};
    for (const name of REQUESTED_LIMITS) requiredLimits[name] = adapter.limits[name];
    const requiredFeatures: GPUFeatureName[] = adapter.features.has('shader-f16') ? ['shader-f16'] : [];
    device = await adapter.requestDevice({ requiredLimits, requiredFeatures }).catch(() => null);
    if (!device) return fallback('the adapter refused a device');
    ort.env.webgpu.device = device;
    const i = adapter.info;
    return {
      backend: 'webgpu',
      adapter: [i.vendor, i.architecture, i.description].filter(Boolean).join(' ') || 'unknown adapter',
      features: [...adapter.features].sort(),
      limits: { maxBufferSize: adapter.limits.maxBufferSize, maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize },
    };
  })();
  return gpu;
}

/**
 * Files for a source. The app's own files (the built-in tiny model) are left to
 * the browser's HTTP cache: caching them again would keep a stale copy after
 * an update. Other URLs and Hub repos go through the download cache.
 */
function openBrowserModelFiles(spec: Parameters<typeof openModelFiles>[0]): ModelFiles {
  const files = openModelFiles(spec);
  if (spec.kind === 'url' && new URL(spec.url, self.location.href).origin === self.location.origin) {
    return { id: files.id, read: (p, cb) => files.read(p, cb), size: (p) => files.size(p), exists: (p) => files.exists(p) };
  }
  return files;
}

export async function createBrowserEngine(options: Partial<EngineOptions> & { backend?: BackendName } = {}): Promise<{ engine: Engine; gpu: GpuInfo }> {
  const info = await detectGpu();
  const backend = options.backend ?? info.backend;
  const engine = new Engine({
    ort: ort as unknown as EngineOptions['ort'],
    adapter: info.adapter,
    limits: backend === 'webgpu' ? info.limits : {},
    openFiles: openBrowserModelFiles,
    fileCache: browserModelCache(),
    ...options,
    deviceFit: { features: info.features, ...options.deviceFit },
    backend,
  });
  // a lost device ends this engine's work; the page restarts the worker and replays
  if (backend === 'webgpu') void device?.lost.then((lost) => engine.deviceLost(lost.message || lost.reason || 'unknown'));
  return { engine, gpu: info };
}
