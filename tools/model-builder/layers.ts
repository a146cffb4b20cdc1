// Neural-network building blocks expressed as ONNX opset-17 subgraphs, in the
// graph's float type (fp32 or fp16). Opset 17 has no Gelu and no
// GroupNormalization: both are composed here. Attention comes decomposed
// (MatMul, Softmax, MatMul: what torch.onnx / Optimum export) or fused into
// onnxruntime's com.microsoft.MultiHeadAttention (what Olive exports carry).
import { Graph } from './onnx-graph.ts';

export type AttentionKind = 'decomposed' | 'fused';

/** y = x W (+ b); W is [in, out], scaled 1/sqrt(in) so activations stay O(1). */
export function linear(g: Graph, x: string, name: string, inDim: number, outDim: number, bias = true, gain = 1): string {
  const w = g.weight(`${name}.weight`, [inDim, outDim], gain / Math.sqrt(inDim));
  const y = g.op('MatMul', [x, w]);
  return bias ? g.op('Add', [y, g.weight(`${name}.bias`, [outDim], 0.02)]) : y;
}

/** LayerNorm over the last axis; without affine (SD3's adaLN norms) the scale is 1 and the bias 0. */
export function layerNorm(g: Graph, x: string, name: string, dim: number, affine = true, eps = 1e-5): string {
  const scale = affine ? g.tensor(`${name}.weight`, [dim], onesNear(g, name, dim)) : g.floats(new Array(dim).fill(1), [dim]);
  const bias = affine ? g.weight(`${name}.bias`, [dim], 0.02) : g.floats(new Array(dim).fill(0), [dim]);
  return g.op('LayerNormalization', [x, scale, bias], { axis: -1, epsilon: { float: eps } });
}

/** T5's RMSNorm: x / sqrt(mean(x^2) + eps) * w. ReduceMean takes `axes` as an attribute at opset 17. */
export function rmsNorm(g: Graph, x: string, name: string, dim: number, eps = 1e-6): string {
  const ms = g.op('ReduceMean', [g.op('Mul', [x, x])], { axes: [-1], keepdims: 1 });
  const inv = g.op('Reciprocal', [g.op('Sqrt', [g.op('Add', [ms, g.floats([eps])])])]);
  return g.op('Mul', [g.op('Mul', [x, inv]), g.tensor(`${name}.weight`, [dim], onesNear(g, name, dim))]);
}

function onesNear(_g: Graph, name: string, dim: number): Float32Array {
  // 1 + small seeded noise, so norms are not trivially the identity
  const out = new Float32Array(dim);
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  for (let i = 0; i < dim; i++) {
    h = (Math.imul(h, 1103515245) + 12345) >>> 0;
    out[i] = 1 + ((h / 4294967296) - 0.5) * 0.1;
  }
  return out;
}

export const silu = (g: Graph, x: string) => g.op('Mul', [x, g.op('Sigmoid', [x])]);

/** GELU, tanh approximation (SD3's feed-forward): 0.5x(1 + tanh(sqrt(2/pi)(x + 0.044715x^3))). */
export function geluTanh(g: Graph, x: string): string {
  const x3 = g.op('Mul', [g.op('Mul', [x, x]), x]);
  const inner = g.op('Mul', [g.op('Add', [x, g.op('Mul', [x3, g.floats([0.044715])])]), g.floats([Math.sqrt(2 / Math.PI)])]);
  const t = g.op('Add', [g.op('Tanh', [inner]), g.floats([1])]);
  return g.op('Mul', [g.op('Mul', [x, t]), g.floats([0.5])]);
}

/** Exact GELU (OpenCLIP bigG's activation): 0.5x(1 + erf(x / sqrt 2)). */
export function geluErf(g: Graph, x: string): string {
  const e = g.op('Erf', [g.op('Mul', [x, g.floats([Math.SQRT1_2])])]);
  return g.op('Mul', [g.op('Mul', [x, g.op('Add', [e, g.floats([1])])]), g.floats([0.5])]);
}

/** CLIP's quick GELU: x * sigmoid(1.702 x). */
export const quickGelu = (g: Graph, x: string) => g.op('Mul', [x, g.op('Sigmoid', [g.op('Mul', [x, g.floats([1.702])])])]);

/** [B,S,H*hd] -> [B,H,S,hd] */
function splitHeads(g: Graph, x: string, heads: number, headDim: number): string {
  return g.op('Transpose', [g.op('Reshape', [x, g.ints([0, 0, heads, headDim])])], { perm: [0, 2, 1, 3] });
}

export interface AttentionOptions {
  /** Added to the scores, broadcast over batch and heads: [S, T]. */
  mask?: string;
  scale?: number;
  kind?: AttentionKind;
}

/** Multi-head scaled dot-product attention over [B,S,D] q/k/v; returns [B,S,D]. */
export function attention(g: Graph, q: string, k: string, v: string, heads: number, headDim: number, opts: AttentionOptions = {}): string {
  const scale = opts.scale ?? 1 / Math.sqrt(headDim);
  if (opts.kind === 'fused') {
    const inputs = [q, k, v];
    // MultiHeadAttention's inputs: query, key, value, bias, key_padding_mask, attention_bias [1|B, 1|N, S, T]
    if (opts.mask) inputs.push('', '', g.op('Unsqueeze', [opts.mask, g.ints([0, 1])]));
    return g.msOp('MultiHeadAttention', inputs, { num_heads: heads, scale: { float: scale } });
  }
  const qh = splitHeads(g, q, heads, headDim);
  const kt = g.op('Transpose', [g.op('Reshape', [k, g.ints([0, 0, heads, headDim])])], { perm: [0, 2, 3, 1] });
  const vh = splitHeads(g, v, heads, headDim);
  let scores = g.op('Mul', [g.op('MatMul', [qh, kt]), g.floats([scale])]);
  if (opts.mask) scores = g.op('Add', [scores, opts.mask]);
  const out = g.op('MatMul', [g.op('Softmax', [scores], { axis: -1 }), vh]);
  return g.op('Reshape', [g.op('Transpose', [out], { perm: [0, 2, 1, 3] }), g.ints([0, 0, heads * headDim])]);
}

/** RMSNorm of each head's [hd] slice of a [B,S,H*hd] tensor (SD3.5's qk_norm "rms_norm"). */
export function headRmsNorm(g: Graph, x: string, name: string, heads: number, headDim: number): string {
  const perHead = g.op('Reshape', [x, g.ints([0, 0, heads, headDim])]);
  return g.op('Reshape', [rmsNorm(g, perHead, name, headDim), g.ints([0, 0, heads * headDim])]);
}

export function conv2d(g: Graph, x: string, name: string, inCh: number, outCh: number, kernel: number, opts: { stride?: number; pads?: number[]; gain?: number } = {}): string {
  const pad = (kernel - 1) >> 1;
  const w = g.weight(`${name}.weight`, [outCh, inCh, kernel, kernel], (opts.gain ?? 1) / Math.sqrt(inCh * kernel * kernel));
  const b = g.weight(`${name}.bias`, [outCh], 0.02);
  return g.op('Conv', [x, w, b], {
    kernel_shape: [kernel, kernel],
    strides: [opts.stride ?? 1, opts.stride ?? 1],
    pads: opts.pads ?? [pad, pad, pad, pad],
  });
}

/** GroupNorm as Reshape -> InstanceNormalization -> Reshape -> per-channel affine (opset 17 has no GroupNormalization). */
export function groupNorm(g: Graph, x: string, name: string, channels: number, groups: number, eps = 1e-6): string {
  const grouped = g.op('Reshape', [x, g.ints([0, groups, -1])]);
  const normed = g.op('InstanceNormalization', [grouped, g.floats(new Array(groups).fill(1), [groups]), g.floats(new Array(groups).fill(0), [groups])], { epsilon: { float: eps } });
  const back = g.op('Reshape', [normed, g.op('Shape', [x])]);
  const gamma = g.tensor(`${name}.weight`, [channels, 1, 1], onesNear(g, name, channels));
  const beta = g.weight(`${name}.bias`, [channels, 1, 1], 0.02);
  return g.op('Add', [g.op('Mul', [back, gamma]), beta]);
}

/** diffusers' ResnetBlock2D: norm-silu-conv twice, with a 1x1 shortcut when channels change. */
export function resnetBlock(g: Graph, x: string, name: string, inCh: number, outCh: number, groups: number): string {
  let h = conv2d(g, silu(g, groupNorm(g, x, `${name}.norm1`, inCh, groups)), `${name}.conv1`, inCh, outCh, 3);
  h = conv2d(g, silu(g, groupNorm(g, h, `${name}.norm2`, outCh, groups)), `${name}.conv2`, outCh, outCh, 3);
  const skip = inCh === outCh ? x : conv2d(g, x, `${name}.conv_shortcut`, inCh, outCh, 1);
  return g.op('Add', [skip, h]);
}

/** diffusers' VAE mid-block attention: GroupNorm, one head over all pixels, output projection, residual. */
export function vaeAttention(g: Graph, x: string, name: string, channels: number, groups: number, kind: AttentionKind): string {
  const h = groupNorm(g, x, `${name}.group_norm`, channels, groups);
  const tokens = g.op('Transpose', [g.op('Reshape', [h, g.ints([0, channels, -1])])], { perm: [0, 2, 1] }); // [B, HW, C]
  const q = linear(g, tokens, `${name}.to_q`, channels, channels);
  const k = linear(g, tokens, `${name}.to_k`, channels, channels);
  const v = linear(g, tokens, `${name}.to_v`, channels, channels);
  const o = linear(g, attention(g, q, k, v, 1, channels, { kind }), `${name}.to_out.0`, channels, channels);
  const back = g.op('Reshape', [g.op('Transpose', [o], { perm: [0, 2, 1] }), g.op('Shape', [x])]);
  return g.op('Add', [back, x]);
}

/** Index 1-D int64 `shape` at `i`, keeping a 1-element tensor (for Concat into new shapes). */
export const dimOf = (g: Graph, shape: string, i: number) => g.op('Gather', [shape, g.ints([i])], { axis: 0 });
