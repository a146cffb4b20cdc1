// What the GPU really holds: every buffer created on our device, counted at
// createBuffer and destroy. WebGPU reports no memory figures of its own, so
// this is how status() shows the GPU memory in use, and how the benchmark
// checks the engine's estimates against what onnxruntime allocates.
// (onnxruntime calls the prototype's methods on the device we hand it, so the
// prototype is wrapped, once, and counts only our device's buffers.)

export interface GpuMemory {
  /** Bytes in buffers not yet destroyed. */
  liveBytes: number;
  /** Most liveBytes since the last reset. */
  peakBytes: number;
  /** Largest single buffer since the last reset. */
  largestBufferBytes: number;
  buffers: number;
}

const meters = new WeakMap<GPUDevice, GpuMemory>();
const sizes = new WeakMap<GPUBuffer, { device: GPUDevice; size: number }>();
let installed = false;

function install(): void {
  if (installed) return;
  installed = true;
  const create = GPUDevice.prototype.createBuffer;
  GPUDevice.prototype.createBuffer = function (this: GPUDevice, desc: GPUBufferDescriptor) {
    const buffer = create.call(this, desc);
    const m = meters.get(this);
    if (m) {
      sizes.set(buffer, { device: this, size: desc.size });
      m.liveBytes += desc.size;
      m.buffers++;
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
    }
    return destroy.call(this);
  };
}

/** Starts counting a device's buffers; returns its live meter. */
export function meterGpuMemory(device: GPUDevice): GpuMemory {
  install();
  const m: GpuMemory = { liveBytes: 0, peakBytes: 0, largestBufferBytes: 0, buffers: 0 };
  meters.set(device, m);
  return m;
}

/** Starts a new peak (and largest buffer) from what is live now. */
export function resetGpuPeak(m: GpuMemory): void {
  m.peakBytes = m.liveBytes;
  m.largestBufferBytes = 0;
}
