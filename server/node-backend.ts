// The engine's backend in Node: WebGPU through the `webgpu` package (Dawn's
// node bindings) where it finds an adapter, else onnxruntime-web's wasm, as
// the CLI runs. Only the server knows about Dawn; the engine core is the same.
import type { BackendName } from '../workers/engine/api/types.ts';
import type { Engine, EngineOptions } from '../workers/engine/engine.ts';
import { createNodeEngine } from '../workers/engine/node.ts';

export type BackendChoice = BackendName | 'auto';

export interface NodeBackend {
  engine: Engine;
  backend: BackendName;
  /** Why WebGPU is not used, when it was asked for (auto or webgpu) and is not. */
  fallbackReason: string | null;
}

// the limits onnxruntime-web asks for when it makes its own device (as the browser entry)
const REQUESTED_LIMITS = ['maxBufferSize', 'maxStorageBufferBindingSize', 'maxComputeWorkgroupStorageSize', 'maxComputeWorkgroupsPerDimension', 'maxComputeInvocationsPerWorkgroup', 'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY', 'maxComputeWorkgroupSizeZ'] as const;

/** A GPUDevice from Dawn at the adapter's limits, or why there is none. */
async function dawnDevice(): Promise<{ device: GPUDevice; adapter: string; features: string[]; maxBufferBytes: number } | { reason: string }> {
  let dawn: { create: (flags: string[]) => GPU; globals: Record<string, unknown> };
  try {
    // optional dependency: a missing package is a reason, not a crash
    dawn = (await import('webgpu')) as unknown as typeof dawn;
  } catch (e) {
    return { reason: `the webgpu package could not be loaded (${(e as Error).message.split('\n')[0]})` };
  }
  const gpu = dawn.create([]);
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' }).catch(() => null);
  if (!adapter) return { reason: 'Dawn (the webgpu package) found no WebGPU adapter' };
  const requiredLimits: Record<string, number> = {};
  for (const name of REQUESTED_LIMITS) requiredLimits[name] = adapter.limits[name];
  const features: GPUFeatureName[] = adapter.features.has('shader-f16') ? ['shader-f16'] : [];
  const device = await adapter.requestDevice({ requiredLimits, requiredFeatures: features }).catch(() => null);
  if (!device) return { reason: 'the WebGPU adapter refused a device' };
  // onnxruntime-web's WebGPU backend looks for the browser's globals
  Object.assign(globalThis, dawn.globals);
  const nav = ((globalThis as { navigator?: object }).navigator ??= {}) as { gpu?: GPU };
  if (!nav.gpu) Object.defineProperty(nav, 'gpu', { value: gpu, configurable: true });
  const i = adapter.info;
  return {
    device,
    adapter: [i.vendor, i.architecture, i.description].filter(Boolean).join(' ') || 'unknown adapter',
    features: [...adapter.features].sort(),
    maxBufferBytes: Math.min(adapter.limits.maxBufferSize, adapter.limits.maxStorageBufferBindingSize),
  };
}

/** An engine on the chosen backend: 'auto' and 'webgpu' use Dawn where it has an adapter, and say why not otherwise. */
export async function createServerEngine(choice: BackendChoice, options: Partial<EngineOptions> = {}): Promise<NodeBackend> {
  if (choice === 'wasm') return { engine: createNodeEngine(options), backend: 'wasm', fallbackReason: null };
  const gpu = await dawnDevice();
  if ('reason' in gpu) {
    return { engine: createNodeEngine({ adapter: `none (${gpu.reason}); running on wasm`, ...options }), backend: 'wasm', fallbackReason: gpu.reason };
  }
  const ort = (await import('onnxruntime-web/webgpu')) as unknown as EngineOptions['ort'];
  (ort as unknown as { env: { wasm: { numThreads: number }; logLevel: string } }).env.wasm.numThreads = 1;
  (ort as unknown as { env: { logLevel: string } }).env.logLevel = 'error';
  const engine = createNodeEngine({
    ...options,
    ort,
    backend: 'webgpu',
    webgpuDevice: gpu.device,
    adapter: gpu.adapter,
    deviceFit: { features: gpu.features, maxBufferBytes: gpu.maxBufferBytes, ...options.deviceFit },
  });
  void gpu.device.lost.then((lost) => engine.deviceLost(lost.message || lost.reason || 'unknown'));
  return { engine, backend: 'webgpu', fallbackReason: null };
}
