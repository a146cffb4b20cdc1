// Which of a graph's operators the onnxruntime-web build we ship (1.30) has no
// kernel for, read from the graph file alone: with external data that file is
// small, so the answer comes before any weight is downloaded.
//
// Standard-domain operators: the CPU provider (wasm, and WebGPU's fallback)
// implements the whole default domain. com.microsoft operators: the kernels
// below. The wasm list is the CPU provider's contrib kernels
// (contrib_ops/cpu/cpu_contrib_kernels.cc) less what the web build leaves out;
// each operator that onnxruntime's transformer optimizer emits was checked by
// creating a session under Node (tests/unit/lower-ops.test.ts keeps checking).
// The WebGPU list is contrib_ops/webgpu/webgpu_contrib_kernels.cc; a WebGPU
// session falls back to the CPU kernels for the rest. Native onnxruntime
// (onnxruntime-node) has the same CPU and WebGPU kernels (tests/unit/lower-ops
// creates the lowered operators' sessions on it); its CUDA and DirectML
// providers have the GPU operators DirectML exports use (NhwcConv, GroupNorm,
// SkipGroupNorm, BiasAdd, BiasSplitGelu, packed MultiHeadAttention:
// contrib_ops/cuda, contrib_ops/dml), so nothing is lowered there (not
// exercised on this project's machines: no CUDA, no Windows).
import type { BackendName } from '../api/types.ts';
import { ModelLoadError } from '../errors.ts';
import { graphNodes, type NodeInfo } from './graph-info.ts';

export type Backend = BackendName;

const CPU_MS = [
  'Attention', 'BiasGelu', 'BifurcationDetector', 'CDist', 'ConvTransposeWithDynamicPads', 'CropAndResize', 'DecoderMaskedMultiHeadAttention',
  'DequantizeLinear', 'DynamicQuantizeLSTM', 'DynamicQuantizeMatMul', 'DynamicTimeWarping', 'EmbedLayerNormalization', 'ExpandDims', 'FastGelu',
  'FusedConv', 'FusedGemm', 'FusedMatMul', 'GatherBlockQuantized', 'GatherND', 'Gelu', 'GridSample', 'GroupQueryAttention', 'Inverse',
  'LayerNormalization', 'MatMulBnb4', 'MatMulFpQ4', 'MatMulInteger16', 'MatMulIntegerToFloat', 'MatMulNBits', 'MaxpoolWithMask',
  'MultiHeadAttention', 'MurmurHash3', 'NGramRepeatBlock', 'NhwcMaxPool', 'Pad', 'QAttention', 'QEmbedLayerNormalization', 'QGemm',
  'QLinearAdd', 'QLinearAveragePool', 'QLinearConcat', 'QLinearConv', 'QLinearGlobalAveragePool', 'QLinearLeakyRelu', 'QLinearMul',
  'QLinearSigmoid', 'QLinearSoftmax', 'QLinearWhere', 'QuantizeLinear', 'QuickGelu', 'Range', 'RotaryEmbedding', 'SimplifiedLayerNormalization',
  'SkipLayerNormalization', 'SkipSimplifiedLayerNormalization', 'SparseAttention', 'Trilu', 'Unique', 'WordConvEmbedding',
];
const WEBGPU_MS = [
  'Attention', 'BiasAdd', 'BiasGelu', 'BiasSplitGelu', 'FastGelu', 'FusedConv', 'Gelu', 'GroupQueryAttention', 'LayerNormalization', 'MatMulNBits',
  'MultiHeadAttention', 'QuickGelu', 'RotaryEmbedding', 'SimplifiedLayerNormalization', 'SkipLayerNormalization', 'SkipSimplifiedLayerNormalization',
];

/** The GPU operators of onnxruntime's transformer optimizer that CUDA and DirectML run natively. */
const GPU_OPTIMIZER_MS = ['NhwcConv', 'GroupNorm', 'SkipGroupNorm', 'BiasAdd', 'BiasSplitGelu'];

const KERNELS: Record<Backend, Set<string>> = {
  wasm: new Set(CPU_MS),
  cpu: new Set(CPU_MS),
  coreml: new Set(CPU_MS),
  webgpu: new Set([...CPU_MS, ...WEBGPU_MS]),
  cuda: new Set([...CPU_MS, ...WEBGPU_MS, ...GPU_OPTIMIZER_MS]),
  dml: new Set([...CPU_MS, ...WEBGPU_MS, ...GPU_OPTIMIZER_MS]),
};

/** Backends whose MultiHeadAttention takes packed Q/K/V. */
const PACKED_ATTENTION = new Set<Backend>(['cuda', 'dml']);

const STANDARD = new Set(['', 'ai.onnx', 'ai.onnx.ml']);

/** MultiHeadAttention with Q, K and V packed in one input ([B, S, N, 3, H]) or K and V in one ([B, L, N, 2, H]):
 * the CPU kernel (wasm) and WebGPU's both raise "not implemented" on them, at run time, not at load. */
export const packedAttention = (n: NodeInfo) => n.opType === 'MultiHeadAttention' && !n.inputs[2];

function supported(n: NodeInfo, backend: Backend): boolean {
  if (STANDARD.has(n.domain)) return true;
  if (n.domain !== 'com.microsoft') return false;
  if (packedAttention(n) && !PACKED_ATTENTION.has(backend)) return false;
  return KERNELS[backend].has(n.opType);
}

/** The graph's operators the backend has no kernel for, with how many nodes use each. */
export function unsupportedOps(model: Uint8Array, backend: Backend): { op: string; domain: string; count: number }[] {
  const counts = new Map<string, { op: string; domain: string; count: number }>();
  for (const n of graphNodes(model)) {
    if (supported(n, backend)) continue;
    const key = `${n.domain}.${n.opType}`;
    const c = counts.get(key) ?? { op: n.opType, domain: n.domain, count: 0 };
    c.count++;
    counts.set(key, c);
  }
  return [...counts.values()];
}

/** com.microsoft operators lower-ops.ts rewrites into standard ONNX: they do not stop a load. */
export const LOWERABLE = new Set(['NhwcConv', 'GroupNorm', 'SkipGroupNorm', 'BiasAdd', 'BiasSplitGelu', 'MultiHeadAttention']);

/** The com.microsoft operators lowering (lower-ops.ts) rewrites for this backend, with how many nodes each: what the plan reports. */
export function opsToLower(model: Uint8Array, backend: Backend): Record<string, number> {
  return Object.fromEntries(unsupportedOps(model, backend).filter((o) => o.domain === 'com.microsoft' && LOWERABLE.has(o.op)).map((o) => [o.op, o.count]));
}

/** The graph's operators that neither the backend nor lowering can run. */
export function opsLeftAfterLowering(model: Uint8Array, backend: Backend): { op: string; domain: string; count: number }[] {
  // a MultiHeadAttention is unsupported only when packed, and lowering unpacks it
  return unsupportedOps(model, backend).filter((o) => o.domain !== 'com.microsoft' || !LOWERABLE.has(o.op));
}

/** Refuses a graph (before any weight is downloaded) naming the file and each operator the backend cannot run. */
export function checkOps(graphPath: string, model: Uint8Array, backend: Backend): void {
  const left = opsLeftAfterLowering(model, backend);
  if (!left.length) return;
  const list = left.map((o) => `${o.domain ? `${o.domain}.` : ''}${o.op} (${o.count} node${o.count > 1 ? 's' : ''})`).join(', ');
  const runtime = backend === 'wasm' || backend === 'webgpu' ? `onnxruntime-web's ${backend} build` : `onnxruntime's ${backend} provider`;
  throw new ModelLoadError(graphPath, `uses operators ${runtime} has no kernel for: ${list}`);
}
