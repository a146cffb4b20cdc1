// What the GPU really holds: every buffer created on our device, counted at
// createBuffer and destroy. WebGPU reports no memory figures of its own, so
// this is how status() shows the GPU memory in use, and how the benchmark
// checks the engine's estimates against what onnxruntime allocates.
// (onnxruntime calls the prototype's methods on the device we hand it, so the
// prototype is wrapped, once, and counts only our device's buffers.)
//
// Each live buffer is also counted by kind: who made it (onnxruntime, or the
// app's own code, by its label), its usage flags and its size. That is what lets a
// test tell the buffers onnxruntime keeps on purpose (its buffer cache, below)
// from buffers someone forgot to destroy.

import { APP_BUFFER_LABEL } from './engine/app-buffers.ts';

/** Who made a buffer: onnxruntime's WebGPU EP or the app (the engine's denoiser and pass timer: labelled APP_BUFFER_LABEL). */
export type BufferOrigin = 'ort' | 'app';

export interface GpuMemory {
  /** Bytes in buffers not yet destroyed. */
  liveBytes: number;
  /** Most liveBytes since the last reset. */
  peakBytes: number;
  /** Largest single buffer since the last reset. */
  largestBufferBytes: number;
  buffers: number;
  /** Live buffers by kind (see kindKey: "origin usage size") → how many. */
  byKind: Record<string, number>;
}

const meters = new WeakMap<GPUDevice, GpuMemory>();
const sizes = new WeakMap<GPUBuffer, { device: GPUDevice; size: number; kind: string }>();
let installed = false;

/** "ort 0x8c 4096": the key byKind counts under. */
export function kindKey(origin: BufferOrigin, usage: number, size: number): string {
  return `${origin} 0x${usage.toString(16)} ${size}`;
}

export function parseKind(key: string): { origin: BufferOrigin; usage: number; size: number } {
  const [origin, usage, size] = key.split(' ');
  return { origin: origin as BufferOrigin, usage: Number(usage), size: Number(size) };
}

/** The app's buffers carry its label (engine/app-buffers.ts); every other buffer on our device is onnxruntime's. */
function originOf(desc: GPUBufferDescriptor): BufferOrigin {
  return desc.label?.startsWith(APP_BUFFER_LABEL) ? 'app' : 'ort';
}

function install(): void {
  if (installed) return;
  installed = true;
  const create = GPUDevice.prototype.createBuffer;
  GPUDevice.prototype.createBuffer = function (this: GPUDevice, desc: GPUBufferDescriptor) {
    const buffer = create.call(this, desc);
    const m = meters.get(this);
    if (m) {
      const kind = kindKey(originOf(desc), desc.usage, desc.size);
      sizes.set(buffer, { device: this, size: desc.size, kind });
      m.liveBytes += desc.size;
      m.buffers++;
      m.byKind[kind] = (m.byKind[kind] ?? 0) + 1;
      m.peakBytes = Math.max(m.peakBytes, m.liveBytes);
      m.largestBufferBytes = Math.max(m.largestBufferBytes, desc.size);
    }
    return buffer;
  };
  const destroy = GPUBuffer.prototype.destroy;
  GPUBuffer.prototype.destroy = function (this: GPUBuffer) {
    const entry = sizes.get(this);
    if (entry) {
      sizes.delete(this);
      const m = meters.get(entry.device)!;
      m.liveBytes -= entry.size;
      m.buffers--;
      if (--m.byKind[entry.kind] === 0) delete m.byKind[entry.kind];
    }
    return destroy.call(this);
  };
}

/** Starts counting a device's buffers; returns its live meter. */
export function meterGpuMemory(device: GPUDevice): GpuMemory {
  install();
  const m: GpuMemory = { liveBytes: 0, peakBytes: 0, largestBufferBytes: 0, buffers: 0, byKind: {} };
  meters.set(device, m);
  return m;
}

/** Starts a new peak (and largest buffer) from what is live now. */
export function resetGpuPeak(m: GpuMemory): void {
  m.peakBytes = m.liveBytes;
  m.largestBufferBytes = 0;
}

// GPUBufferUsage, by value: this file's helpers also run in Node (the tests)
const STORAGE = 0x0080;
const UNIFORM = 0x0040;

/**
 * onnxruntime-web 1.30's WebGPU buffer manager (core/providers/webgpu/buffer_manager.cc)
 * does not destroy a buffer when its tensor is released: at the end of the run it
 * goes back to a cache, per usage, for the next run to take. With the options the
 * engine creates its sessions with (the defaults: storageBufferCacheMode 'bucket',
 * uniformBufferCacheMode 'simple', query-resolve and other buffers 'disabled'):
 *   - storage buffers are allocated at one of these bucket sizes (a request is
 *     rounded up to the next; above the last, to a multiple of 16 and never cached)
 *     and each bucket keeps at most this many freed buffers;
 *   - uniform buffers are kept at their exact size, without limit (their sizes are
 *     the programs' uniform blocks: a few hundred bytes, a few distinct sizes);
 *   - everything else (staging, read-back) is released at once.
 * The cache is one per device (onnxruntime's WebGpuContext, shared by every session
 * on it) and is only released with the context, when the last session goes.
 * So after any run the device legitimately holds: the weights, plus for each
 * bucket up to min(limit, the most buffers of that bucket one run had live at
 * once), plus the uniform buffers one run had live at once. A larger image or
 * batch than the runs before raises that, once; repeating it does not.
 */
export const ORT_STORAGE_BUCKET_LIMITS: ReadonlyMap<number, number> = new Map([
  [64, 250], [128, 200], [256, 200], [512, 200], [2048, 230], [4096, 200],
  [8192, 50], [16384, 50], [32768, 50], [65536, 50], [131072, 50], [262144, 50],
  [524288, 50], [1048576, 50], [2097152, 30], [4194304, 20], [8388608, 10],
  [12582912, 10], [16777216, 10], [26214400, 15], [33554432, 22], [44236800, 2],
  [58982400, 6], [67108864, 6], [134217728, 6], [167772160, 6],
]);

/** How many freed buffers of this kind onnxruntime's cache may keep: 0 for anything it releases (or that it did not make). */
export function ortCacheLimit(key: string): number {
  const { origin, usage, size } = parseKind(key);
  if (origin !== 'ort') return 0;
  if (usage & STORAGE) return ORT_STORAGE_BUCKET_LIMITS.get(size) ?? 0;
  if (usage & UNIFORM) return Infinity;
  return 0;
}

export interface GpuMemoryDiff {
  /** Kinds with more live buffers than the baseline and not what onnxruntime's cache keeps: leaks. */
  unexplained: Record<string, number>;
  /** Kinds with fewer live buffers than the baseline (something of the baseline was destroyed). */
  missing: Record<string, number>;
  /** Growth onnxruntime's cache accounts for (within each bucket's limit). */
  ortCache: { buffers: number; bytes: number };
}

/**
 * Splits what `after` holds beyond `baseline` into what onnxruntime's buffer
 * cache may keep and the rest. A buffer the app made, a read-back, a staging
 * buffer, a storage buffer off the buckets, or a bucket over its limit is
 * unexplained: nothing legitimately keeps it.
 */
export function diffGpuMemory(baseline: GpuMemory, after: GpuMemory): GpuMemoryDiff {
  const unexplained: Record<string, number> = {};
  const missing: Record<string, number> = {};
  const ortCache = { buffers: 0, bytes: 0 };
  for (const key of new Set([...Object.keys(baseline.byKind), ...Object.keys(after.byKind)])) {
    const grew = (after.byKind[key] ?? 0) - (baseline.byKind[key] ?? 0);
    if (grew < 0) missing[key] = -grew;
    if (grew <= 0) continue;
    const cached = Math.min(grew, ortCacheLimit(key));
    if (grew > cached) unexplained[key] = grew - cached;
    ortCache.buffers += cached;
    ortCache.bytes += cached * parseKind(key).size;
  }
  return { unexplained, missing, ortCache };
}
