// The label every GPU buffer the engine makes itself starts with (the
// denoiser's tensors, the pass timer's query results). onnxruntime's WebGPU EP
// makes its buffers from C++ without it, so the device's buffer meter
// (workers/gpu-memory.ts) tells the two apart by label, at no cost per buffer.
export const APP_BUFFER_LABEL = 'sd3-webgpu';
