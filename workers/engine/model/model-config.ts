// What the engine needs to know about a model, read from its own config files:
// dimensions, decode constants, size limits and per-family defaults.
import type { GenerationDefaults } from '../api/types.ts';

/** CLIP's context length: both CLIP encoders always see 77 tokens. */
export const CLIP_LENGTH = 77;

type Json = Record<string, unknown>;

export interface TransformerConfig {
  sampleSize: number;
  patchSize: number;
  inChannels: number;
  jointAttentionDim: number;
  pooledProjectionDim: number;
  posEmbedMaxSize: number;
  numLayers: number;
  numHeads: number;
  hiddenSize: number;
}

export interface VaeConfig {
  latentChannels: number;
  /** Channels per block, encoder order (the decoder runs them reversed). */
  blockOutChannels: number[];
  scalingFactor: number;
  shiftFactor: number;
  /** Pixels per latent: 2^(number of VAE blocks - 1). */
  scaleFactor: number;
}

const num = (json: Json, key: string, file: string, fallback?: number): number => {
  const v = json[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`${file}: ${key} must be a number, got ${JSON.stringify(json[key])}`);
  return v;
};

export function parseTransformerConfig(json: Json): TransformerConfig {
  const f = 'transformer/config.json';
  return {
    sampleSize: num(json, 'sample_size', f, 128),
    patchSize: num(json, 'patch_size', f, 2),
    inChannels: num(json, 'in_channels', f, 16),
    jointAttentionDim: num(json, 'joint_attention_dim', f, 4096),
    pooledProjectionDim: num(json, 'pooled_projection_dim', f, 2048),
    posEmbedMaxSize: num(json, 'pos_embed_max_size', f, 96),
    numLayers: num(json, 'num_layers', f, 24),
    numHeads: num(json, 'num_attention_heads', f, 24),
    hiddenSize: num(json, 'num_attention_heads', f, 24) * num(json, 'attention_head_dim', f, 64),
  };
}

export function parseVaeConfig(json: Json): VaeConfig {
  const f = 'vae_decoder/config.json';
  const channels = Array.isArray(json.block_out_channels) && json.block_out_channels.every((c) => typeof c === 'number' && c > 0) ? (json.block_out_channels as number[]) : [128, 256, 512, 512];
  const blocks = channels.length;
  return {
    latentChannels: num(json, 'latent_channels', f, 16),
    blockOutChannels: channels,
    scalingFactor: num(json, 'scaling_factor', f, 1.5305),
    shiftFactor: num(json, 'shift_factor', f, 0.0609),
    scaleFactor: 2 ** (blocks - 1),
  };
}

/** Name of CLIP's penultimate hidden state (clip_skip k moves it k layers down). */
export function penultimateOutput(textEncoderConfig: Json, folder: string, clipSkip = 0): string {
  const layers = num(textEncoderConfig, 'num_hidden_layers', `${folder}/config.json`);
  return `hidden_states.${layers - 1 - clipSkip}`;
}

/**
 * Defaults per family (diffusers' pipeline docs and model cards). Real exports
 * carry no defaults in their files, so the family is recognised from the
 * transformer's config; a model may state its own in model_index.json
 * (`sd3_webgpu_defaults`), as the tiny model does.
 */
export function familyDefaults(modelIndex: Json, transformerJson: Json, t: TransformerConfig, vae: VaeConfig): { family: string; defaults: GenerationDefaults } {
  const side = t.sampleSize * vae.scaleFactor;
  const own = modelIndex.sd3_webgpu_defaults as Json | undefined;
  const name = String(modelIndex._name_or_path ?? '').toLowerCase();
  const pick = (family: string, steps: number, guidance: number) => ({ family, defaults: { steps, guidance, width: side, height: side } });
  if (own && typeof own.num_inference_steps === 'number' && typeof own.guidance_scale === 'number') return pick(name || 'custom', own.num_inference_steps, own.guidance_scale);
  const qkNorm = transformerJson.qk_norm != null;
  if (t.numLayers >= 38) return name.includes('turbo') ? pick('sd3.5-large-turbo', 4, 0) : pick('sd3.5-large', 28, 3.5);
  if (qkNorm) return pick('sd3.5-medium', 40, 4.5);
  return pick('sd3-medium', 28, 7.0);
}
