// SD3's components as ONNX graphs with the real export contract (Optimum names,
// dtypes and symbolic axes) and SD3's real structure, at any width the preset
// gives. Inputs and outputs may be float16 over float32 weights (Casts at the
// edges, like AMD's `_io32` variants the other way round), so an fp16-I/O model
// still runs on the wasm backend.
import { DType, Graph, type DTypeCode, type FloatType, type GraphOptions } from './onnx-graph.ts';
import { attention, conv2d, dimOf, geluErf, geluTanh, groupNorm, headRmsNorm, layerNorm, linear, quickGelu, resnetBlock, rmsNorm, silu, vaeAttention, type AttentionKind } from './layers.ts';
import type { ClipShape, T5Shape, TransformerShape, VaeShape } from './presets.ts';

type Dim = number | string;

export interface ComponentOptions {
  /** Weights and activations. */
  weights: FloatType;
  /** Float inputs and outputs. */
  io: FloatType;
  attention: AttentionKind;
}

/** A graph with typed edges: float inputs arrive in the I/O type and are cast to the compute type, outputs the other way. */
class Component {
  readonly g: Graph;
  readonly io: DTypeCode;

  constructor(name: string, opts: ComponentOptions, graph: Omit<GraphOptions, 'float'>) {
    this.g = new Graph(name, { ...graph, float: opts.weights });
    this.io = opts.io === 'float16' ? DType.float16 : DType.float;
  }

  floatInput(name: string, dims: Dim[]): string {
    return this.g.cast(this.g.input(name, this.io, dims), this.io, this.g.floatType);
  }

  floatOutput(value: string, name: string, dims: Dim[]): void {
    this.g.output(this.g.cast(value, this.g.floatType, this.io), name, this.io, dims);
  }
}

/** CLIP text encoder with projection: outputs text_embeds, last_hidden_state, hidden_states.0..N. */
export function buildClipTextEncoder(cfg: ClipShape, vocabSize: number, eosId: number, opts: ComponentOptions, graph: Omit<GraphOptions, 'float'> = {}): Graph {
  const c = new Component(cfg.folder, opts, graph);
  const { g } = c;
  const H = cfg.hidden;
  const idType = cfg.inputIds === 'int32' ? DType.int32 : DType.int64;
  const ids = g.input('input_ids', idType, ['batch_size', 'sequence_length']);
  const shape = g.op('Shape', [ids]);
  const seq = dimOf(g, shape, 1);
  const hidden = (i: number, x: string) => c.floatOutput(x, `hidden_states.${i}`, ['batch_size', 'sequence_length', H]);

  const tokens = g.op('Gather', [g.weight('embeddings.token_embedding.weight', [Math.max(vocabSize, cfg.vocabSize ?? 0), H], 0.5), ids], { axis: 0 });
  const positions = g.op('Slice', [g.weight('embeddings.position_embedding.weight', [cfg.maxPositions, H], 0.2), g.ints([0]), seq, g.ints([0])]);
  let x = g.op('Add', [tokens, positions]);
  hidden(0, x);

  // causal mask, cut from a [max, max] table to the actual sequence length
  const maskTable = new Float32Array(cfg.maxPositions * cfg.maxPositions);
  for (let i = 0; i < cfg.maxPositions; i++) for (let j = i + 1; j < cfg.maxPositions; j++) maskTable[i * cfg.maxPositions + j] = -1e9;
  const mask = g.op('Slice', [g.tensor('causal_mask', [cfg.maxPositions, cfg.maxPositions], maskTable), g.ints([0, 0]), g.op('Concat', [seq, seq], { axis: 0 }), g.ints([0, 1])]);
  const act = cfg.act === 'gelu' ? geluErf : quickGelu;

  const hd = H / cfg.heads;
  for (let l = 0; l < cfg.layers; l++) {
    const p = `encoder.layers.${l}`;
    const h = layerNorm(g, x, `${p}.layer_norm1`, H);
    const q = linear(g, h, `${p}.self_attn.q_proj`, H, H);
    const k = linear(g, h, `${p}.self_attn.k_proj`, H, H);
    const v = linear(g, h, `${p}.self_attn.v_proj`, H, H);
    x = g.op('Add', [x, linear(g, attention(g, q, k, v, cfg.heads, hd, { mask, kind: opts.attention }), `${p}.self_attn.out_proj`, H, H)]);
    const m = layerNorm(g, x, `${p}.layer_norm2`, H);
    x = g.op('Add', [x, linear(g, act(g, linear(g, m, `${p}.mlp.fc1`, H, cfg.intermediate)), `${p}.mlp.fc2`, cfg.intermediate, H)]);
    hidden(l + 1, x);
  }
  const last = layerNorm(g, x, 'final_layer_norm', H);

  // pooled token: the first EOS of each row (HF CLIP with eos_token_id set)
  const isEos = g.op('Cast', [g.op('Equal', [ids, idType === DType.int32 ? g.int32s([eosId], true) : g.ints([eosId], true)])], { to: DType.float });
  const eosPos = g.op('ArgMax', [isEos], { axis: 1, keepdims: 1 });
  const index = g.op('Expand', [g.op('Unsqueeze', [eosPos, g.ints([2])]), g.op('Concat', [dimOf(g, shape, 0), g.ints([1, H])], { axis: 0 })]);
  const pooled = g.op('Squeeze', [g.op('GatherElements', [last, index], { axis: 1 }), g.ints([1])]);
  const textEmbeds = linear(g, pooled, 'text_projection', H, cfg.projection, false);

  c.floatOutput(textEmbeds, 'text_embeds', ['batch_size', cfg.projection]);
  c.floatOutput(last, 'last_hidden_state', ['batch_size', 'sequence_length', H]);
  g.moveOutputsFirst(['text_embeds', 'last_hidden_state']); // Optimum's output order
  return g;
}

/** T5-like encoder: RMSNorm, unscaled attention, gated-GELU FFN; outputs last_hidden_state.
 * (T5's relative position bias is left out: a [heads] table per bucket, too small to matter for size.) */
export function buildT5Encoder(cfg: T5Shape, vocabSize: number, opts: ComponentOptions, graph: Omit<GraphOptions, 'float'> = {}): Graph {
  const c = new Component('text_encoder_3', opts, graph);
  const { g } = c;
  const d = cfg.dModel;
  const inner = cfg.heads * cfg.dKv;
  const ids = g.input('input_ids', DType.int64, ['batch_size', 'sequence_length']);
  let x = g.op('Gather', [g.weight('shared.weight', [Math.max(vocabSize, cfg.vocabSize ?? 0), d], 1), ids], { axis: 0 });
  for (let l = 0; l < cfg.layers; l++) {
    const p = `encoder.block.${l}.layer`;
    const h = rmsNorm(g, x, `${p}.0.layer_norm`, d);
    const q = linear(g, h, `${p}.0.SelfAttention.q`, d, inner, false);
    const k = linear(g, h, `${p}.0.SelfAttention.k`, d, inner, false);
    const v = linear(g, h, `${p}.0.SelfAttention.v`, d, inner, false);
    x = g.op('Add', [x, linear(g, attention(g, q, k, v, cfg.heads, cfg.dKv, { scale: 1 / Math.sqrt(cfg.dKv), kind: opts.attention }), `${p}.0.SelfAttention.o`, inner, d, false)]);
    const f = rmsNorm(g, x, `${p}.1.layer_norm`, d);
    const gated = g.op('Mul', [geluTanh(g, linear(g, f, `${p}.1.DenseReluDense.wi_0`, d, cfg.ff, false)), linear(g, f, `${p}.1.DenseReluDense.wi_1`, d, cfg.ff, false)]);
    x = g.op('Add', [x, linear(g, gated, `${p}.1.DenseReluDense.wo`, cfg.ff, d, false)]);
  }
  c.floatOutput(rmsNorm(g, x, 'encoder.final_layer_norm', d), 'last_hidden_state', ['batch_size', 'sequence_length', d]);
  return g;
}

/** diffusers' get_2d_sincos_pos_embed for SD3's cropped positional table: [M*M, D]. */
export function sincosPosTable(dim: number, gridSize: number, baseSize: number): Float32Array {
  const out = new Float32Array(gridSize * gridSize * dim);
  const half = dim / 2;
  const quarter = half / 2;
  const omega = Float64Array.from({ length: quarter }, (_, i) => 1 / Math.pow(10000, i / quarter));
  const oneD = (pos: number, into: Float32Array, at: number) => {
    for (let i = 0; i < quarter; i++) {
      into[at + i] = Math.sin(pos * omega[i]);
      into[at + quarter + i] = Math.cos(pos * omega[i]);
    }
  };
  const scale = gridSize / baseSize;
  for (let r = 0; r < gridSize; r++) {
    for (let col = 0; col < gridSize; col++) {
      const at = (r * gridSize + col) * dim;
      oneD(col / scale, out, at); // diffusers meshgrid puts w first
      oneD(r / scale, out, at + half);
    }
  }
  return out;
}

/** SD3's MMDiT (and SD3.5-medium's MMDiT-X): patch embed + cropped sin-cos positions,
 * timestep+pooled conditioning, joint attention blocks with adaLN-Zero modulation
 * (last block context_pre_only), optional qk RMSNorm and a second image-only
 * attention in the dual-attention blocks, unpatchify. */
export function buildTransformer(cfg: TransformerShape, opts: ComponentOptions, graph: Omit<GraphOptions, 'float'> = {}): Graph {
  const c = new Component('transformer', opts, graph);
  const { g } = c;
  const D = cfg.heads * cfg.headDim;
  const p = cfg.patchSize;
  const C = cfg.inChannels;
  const raw = g.input('hidden_states', c.io, ['batch_size', C, 'height', 'width']);
  const x0 = g.cast(raw, c.io, g.floatType);
  const ctx0 = c.floatInput('encoder_hidden_states', ['batch_size', 'sequence_length', cfg.jointAttentionDim]);
  const pooled = c.floatInput('pooled_projections', ['batch_size', cfg.pooledProjectionDim]);
  // the timestep's sinusoid is computed in float32 whatever the model's dtype, as diffusers does
  const t = g.cast(g.input('timestep', c.io, ['batch_size']), c.io, DType.float);

  const shape = g.op('Shape', [raw]);
  const batch = dimOf(g, shape, 0);
  const H = dimOf(g, shape, 2);
  const W = dimOf(g, shape, 3);
  const h = g.op('Div', [H, g.ints([p])]);
  const w = g.op('Div', [W, g.ints([p])]);

  // patch embedding: conv k=p s=p, then [B,D,h,w] -> [B,hw,D]
  const patches = conv2d(g, x0, 'pos_embed.proj', C, D, p, { stride: p, pads: [0, 0, 0, 0] });
  let x = g.op('Transpose', [g.op('Reshape', [patches, g.ints([0, D, -1])])], { perm: [0, 2, 1] });
  const M = cfg.posEmbedMaxSize;
  const table = g.tensor('pos_embed.pos_embed', [1, M, M, D], () => sincosPosTable(D, M, cfg.sampleSize / p));
  const top = g.op('Div', [g.op('Sub', [g.ints([M]), h]), g.ints([2])]);
  const left = g.op('Div', [g.op('Sub', [g.ints([M]), w]), g.ints([2])]);
  const crop = g.op('Slice', [table, g.op('Concat', [top, left], { axis: 0 }), g.op('Concat', [g.op('Add', [top, h]), g.op('Add', [left, w])], { axis: 0 }), g.ints([1, 2])]);
  x = g.op('Add', [x, g.op('Reshape', [crop, g.ints([1, -1, D])])]);

  // conditioning: sinusoidal timestep (flip_sin_to_cos) + pooled text
  const half = cfg.timestepChannels / 2;
  const freqs = Array.from({ length: half }, (_, i) => Math.exp((-Math.log(10000) * i) / half));
  const arg = g.op('Mul', [g.op('Unsqueeze', [t, g.ints([1])]), g.floats(freqs, [1, half], DType.float)]);
  const tProj = g.cast(g.op('Concat', [g.op('Cos', [arg]), g.op('Sin', [arg])], { axis: 1 }), DType.float, g.floatType);
  const mlp = (input: string, name: string, inDim: number) => linear(g, silu(g, linear(g, input, `${name}.linear_1`, inDim, D)), `${name}.linear_2`, D, D);
  const temb = g.op('Add', [mlp(tProj, 'time_text_embed.timestep_embedder', cfg.timestepChannels), mlp(pooled, 'time_text_embed.text_embedder', cfg.pooledProjectionDim)]);
  const cond = silu(g, temb);

  let ctx = linear(g, ctx0, 'context_embedder', cfg.jointAttentionDim, cfg.captionProjectionDim);
  const modulation = (name: string, chunks: number) => {
    const m = g.op('Unsqueeze', [linear(g, cond, name, D, chunks * D), g.ints([1])]);
    return g.opN('Split', [m, g.ints(new Array(chunks).fill(D))], chunks, { axis: 2 });
  };
  const norm = (v: string) => layerNorm(g, v, `ln_${v}`, D, false, 1e-6);
  const modulate = (normed: string, scale: string, shift: string) => g.op('Add', [g.op('Mul', [normed, g.op('Add', [scale, g.floats([1])])]), shift]);
  const feedForward = (v: string, name: string) => linear(g, geluTanh(g, linear(g, v, `${name}.net.0.proj`, D, 4 * D)), `${name}.net.2`, 4 * D, D);
  const imageTokens = g.op('Gather', [g.op('Shape', [x]), g.ints([1])], { axis: 0 });
  const qkNorm = (v: string, name: string) => (cfg.qkNorm ? headRmsNorm(g, v, name, cfg.heads, cfg.headDim) : v);
  const kind = opts.attention;

  for (let l = 0; l < cfg.layers; l++) {
    const b = `transformer_blocks.${l}`;
    const preOnly = l === cfg.layers - 1;
    const dual = cfg.dualAttentionLayers.includes(l);
    // SD35AdaLayerNormZeroX adds shift, scale and gate for the second attention
    const [shiftMsa, scaleMsa, gateMsa, shiftMlp, scaleMlp, gateMlp, shiftMsa2, scaleMsa2, gateMsa2] = modulation(`${b}.norm1.linear`, dual ? 9 : 6);
    const nxBase = norm(x);
    const nx = modulate(nxBase, scaleMsa, shiftMsa);
    let nc: string;
    let cMod: string[] = [];
    if (preOnly) {
      const [scale, shift] = modulation(`${b}.norm1_context.linear`, 2); // AdaLayerNormContinuous: scale, shift
      nc = modulate(norm(ctx), scale, shift);
    } else {
      cMod = modulation(`${b}.norm1_context.linear`, 6);
      nc = modulate(norm(ctx), cMod[1], cMod[0]);
    }
    const cat = (a: string, cc: string) => g.op('Concat', [a, cc], { axis: 1 });
    const q = cat(qkNorm(linear(g, nx, `${b}.attn.to_q`, D, D), `${b}.attn.norm_q`), qkNorm(linear(g, nc, `${b}.attn.add_q_proj`, D, D), `${b}.attn.norm_added_q`));
    const k = cat(qkNorm(linear(g, nx, `${b}.attn.to_k`, D, D), `${b}.attn.norm_k`), qkNorm(linear(g, nc, `${b}.attn.add_k_proj`, D, D), `${b}.attn.norm_added_k`));
    const v = cat(linear(g, nx, `${b}.attn.to_v`, D, D), linear(g, nc, `${b}.attn.add_v_proj`, D, D));
    const joint = attention(g, q, k, v, cfg.heads, cfg.headDim, { kind });
    // sample tokens come first in SD3's joint sequence
    const ox = g.op('Slice', [joint, g.ints([0]), imageTokens, g.ints([1])]);
    x = g.op('Add', [x, g.op('Mul', [gateMsa, linear(g, ox, `${b}.attn.to_out.0`, D, D)])]);
    if (dual) {
      // attn2: self-attention over the image tokens alone, from the same normed input with its own modulation
      const nx2 = modulate(nxBase, scaleMsa2, shiftMsa2);
      const q2 = qkNorm(linear(g, nx2, `${b}.attn2.to_q`, D, D), `${b}.attn2.norm_q`);
      const k2 = qkNorm(linear(g, nx2, `${b}.attn2.to_k`, D, D), `${b}.attn2.norm_k`);
      const v2 = linear(g, nx2, `${b}.attn2.to_v`, D, D);
      const a2 = linear(g, attention(g, q2, k2, v2, cfg.heads, cfg.headDim, { kind }), `${b}.attn2.to_out.0`, D, D);
      x = g.op('Add', [x, g.op('Mul', [gateMsa2, a2])]);
    }
    x = g.op('Add', [x, g.op('Mul', [gateMlp, feedForward(modulate(norm(x), scaleMlp, shiftMlp), `${b}.ff`)])]);
    if (!preOnly) {
      const oc = g.op('Slice', [joint, imageTokens, g.ints([Number.MAX_SAFE_INTEGER]), g.ints([1])]);
      const [, , cGateMsa, cShiftMlp, cScaleMlp, cGateMlp] = cMod;
      ctx = g.op('Add', [ctx, g.op('Mul', [cGateMsa, linear(g, oc, `${b}.attn.to_add_out`, D, D)])]);
      ctx = g.op('Add', [ctx, g.op('Mul', [cGateMlp, feedForward(modulate(norm(ctx), cScaleMlp, cShiftMlp), `${b}.ff_context`)])]);
    }
  }

  const [scaleOut, shiftOut] = modulation('norm_out.linear', 2);
  const y = linear(g, modulate(norm(x), scaleOut, shiftOut), 'proj_out', D, p * p * cfg.outChannels);
  // unpatchify: [B, h*w, p*p*C] -> [B,h,w,p,p,C] -> [B,C,h,p,w,p] -> [B,C,H,W]
  const six = g.op('Reshape', [y, g.op('Concat', [batch, h, w, g.ints([p, p, cfg.outChannels])], { axis: 0 })]);
  const perm = g.op('Transpose', [six], { perm: [0, 5, 1, 3, 2, 4] });
  const out = g.op('Reshape', [perm, g.op('Concat', [batch, g.ints([cfg.outChannels]), H, W], { axis: 0 })]);
  c.floatOutput(out, 'out_hidden_states', ['batch_size', cfg.outChannels, 'height', 'width']);
  return g;
}

/** diffusers' UNetMidBlock2D: resnet, attention, resnet. */
function vaeMidBlock(g: Graph, h: string, name: string, ch: number, groups: number, kind: AttentionKind): string {
  h = resnetBlock(g, h, `${name}.resnets.0`, ch, ch, groups);
  h = vaeAttention(g, h, `${name}.attentions.0`, ch, groups, kind);
  return resnetBlock(g, h, `${name}.resnets.1`, ch, ch, groups);
}

/** VAE decoder: conv_in, mid block, up blocks (layers_per_block + 1 resnets, nearest x2 + conv), GroupNorm-SiLU-conv_out. */
export function buildVaeDecoder(cfg: VaeShape, opts: ComponentOptions, graph: Omit<GraphOptions, 'float'> = {}): Graph {
  const c = new Component('vae_decoder', opts, graph);
  const { g } = c;
  const z = c.floatInput('latent_sample', ['batch_size', cfg.latentChannels, 'latent_height', 'latent_width']);
  const chans = [...cfg.blockOutChannels].reverse();
  let h = conv2d(g, z, 'decoder.conv_in', cfg.latentChannels, chans[0], 3);
  h = vaeMidBlock(g, h, 'decoder.mid_block', chans[0], cfg.groups, opts.attention);
  for (let i = 0; i < chans.length; i++) {
    for (let r = 0; r <= cfg.layersPerBlock; r++) {
      const inCh = r === 0 ? chans[Math.max(0, i - 1)] : chans[i];
      h = resnetBlock(g, h, `decoder.up_blocks.${i}.resnets.${r}`, inCh, chans[i], cfg.groups);
    }
    if (i < chans.length - 1) {
      h = g.op('Resize', [h, '', g.floats([1, 1, 2, 2], [4], DType.float)], { mode: 'nearest', coordinate_transformation_mode: 'asymmetric', nearest_mode: 'floor' });
      h = conv2d(g, h, `decoder.up_blocks.${i}.upsamplers.0.conv`, chans[i], chans[i], 3);
    }
  }
  const last = chans[chans.length - 1];
  h = conv2d(g, silu(g, groupNorm(g, h, 'decoder.conv_norm_out', last, cfg.groups)), 'decoder.conv_out', last, 3, 3, { gain: 1.5 });
  c.floatOutput(h, 'sample', ['batch_size', 3, 'height', 'width']);
  return g;
}

/** VAE encoder: conv_in, down blocks (layers_per_block resnets + stride-2 conv padded (0,1,0,1)), mid block, conv_out to mean||logvar. */
export function buildVaeEncoder(cfg: VaeShape, opts: ComponentOptions, graph: Omit<GraphOptions, 'float'> = {}): Graph {
  const c = new Component('vae_encoder', opts, graph);
  const { g } = c;
  const x = c.floatInput('sample', ['batch_size', 3, 'height', 'width']);
  const chans = cfg.blockOutChannels;
  let h = conv2d(g, x, 'encoder.conv_in', 3, chans[0], 3);
  for (let i = 0; i < chans.length; i++) {
    for (let r = 0; r < cfg.layersPerBlock; r++) {
      const inCh = r === 0 ? chans[Math.max(0, i - 1)] : chans[i];
      h = resnetBlock(g, h, `encoder.down_blocks.${i}.resnets.${r}`, inCh, chans[i], cfg.groups);
    }
    if (i < chans.length - 1) h = conv2d(g, h, `encoder.down_blocks.${i}.downsamplers.0.conv`, chans[i], chans[i], 3, { stride: 2, pads: [0, 0, 1, 1] });
  }
  const last = chans[chans.length - 1];
  h = vaeMidBlock(g, h, 'encoder.mid_block', last, cfg.groups, opts.attention);
  h = conv2d(g, silu(g, groupNorm(g, h, 'encoder.conv_norm_out', last, cfg.groups)), 'encoder.conv_out', last, 2 * cfg.latentChannels, 3);
  c.floatOutput(h, 'latent_parameters', ['batch_size', 2 * cfg.latentChannels, 'latent_height', 'latent_width']);
  return g;
}
