// Model shapes the builder can make. `tiny` is the built-in model (toy widths,
// the real contract); `sd3-medium`, `sd3.5-medium`, `sd3.5-large` and
// `sd3.5-large-turbo` follow the published configs (transformer/config.json of
// stabilityai/stable-diffusion-3-medium-diffusers, -3.5-medium, -3.5-large and
// -3.5-large-turbo; CLIP-L, OpenCLIP bigG and T5 v1.1 XXL; the SD3 VAE), so
// their tensors, files and memory are the size real exports have.

export interface ClipShape {
  folder: 'text_encoder' | 'text_encoder_2';
  tokenizer: 'tokenizer' | 'tokenizer_2';
  hidden: number;
  intermediate: number;
  layers: number;
  heads: number;
  projection: number;
  maxPositions: number;
  inputIds: 'int64' | 'int32';
  padToken: string;
  act: 'quick_gelu' | 'gelu';
  /** Rows of the token table (the real vocabulary); our tokenizer uses the first few. */
  vocabSize?: number;
}

export interface T5Shape {
  dModel: number;
  dKv: number;
  heads: number;
  ff: number;
  layers: number;
  maxLength: number;
  vocabSize?: number;
}

export interface TransformerShape {
  sampleSize: number;
  patchSize: number;
  inChannels: number;
  outChannels: number;
  layers: number;
  heads: number;
  headDim: number;
  jointAttentionDim: number;
  captionProjectionDim: number;
  pooledProjectionDim: number;
  posEmbedMaxSize: number;
  timestepChannels: number;
  /** MMDiT-X (SD3.5-medium): blocks with a second, image-only attention. */
  dualAttentionLayers: number[];
  qkNorm: 'rms_norm' | null;
}

export interface VaeShape {
  latentChannels: number;
  blockOutChannels: number[];
  /** diffusers' layers_per_block: the encoder's resnets per block; the decoder has one more. */
  layersPerBlock: number;
  groups: number;
  scalingFactor: number;
  shiftFactor: number;
}

export interface ModelPreset {
  name: string;
  textEncoders: [ClipShape, ClipShape];
  t5: T5Shape;
  transformer: TransformerShape;
  vae: VaeShape;
  scheduler: { shift: number };
  /** Written into model_index.json for models whose family the app cannot recognise (tiny). */
  defaults?: { steps: number; guidance: number };
  /**
   * The family's own defaults (its model card), for families the app tells
   * apart by depth (Large: 38 blocks). withDepth writes them as `defaults`
   * when it cuts the blocks, so a reduced-depth build keeps its family.
   */
  familyDefaults?: { steps: number; guidance: number };
}

// Tiny widths, real contract: 16 latent channels, patch 2, VAE factor 8, CLIP
// 77 tokens, T5 joint dimension wider than CLIP-L+G so the zero-padding path is
// exercised, one CLIP with int32 input_ids.
const tiny: ModelPreset = {
  name: 'tiny',
  textEncoders: [
    { folder: 'text_encoder', tokenizer: 'tokenizer', hidden: 32, intermediate: 64, layers: 2, heads: 2, projection: 32, maxPositions: 77, inputIds: 'int64', padToken: '<|endoftext|>', act: 'quick_gelu' },
    { folder: 'text_encoder_2', tokenizer: 'tokenizer_2', hidden: 32, intermediate: 64, layers: 3, heads: 2, projection: 32, maxPositions: 77, inputIds: 'int32', padToken: '!', act: 'gelu' },
  ],
  t5: { dModel: 96, dKv: 16, heads: 2, ff: 128, layers: 1, maxLength: 512 },
  transformer: {
    sampleSize: 8, // default image: 8 latents * 8 = 64 px
    patchSize: 2,
    inChannels: 16,
    outChannels: 16,
    layers: 2,
    heads: 2,
    headDim: 16,
    jointAttentionDim: 96,
    captionProjectionDim: 32,
    pooledProjectionDim: 64,
    posEmbedMaxSize: 32, // largest image: 32 patches * 2 * 8 = 512 px
    timestepChannels: 256,
    dualAttentionLayers: [],
    qkNorm: null,
  },
  vae: { latentChannels: 16, blockOutChannels: [8, 8, 16, 16], layersPerBlock: 1, groups: 4, scalingFactor: 1.5305, shiftFactor: 0.0609 },
  scheduler: { shift: 3.0 },
  defaults: { steps: 4, guidance: 4.5 },
};

const clipL: ClipShape = { folder: 'text_encoder', tokenizer: 'tokenizer', hidden: 768, intermediate: 3072, layers: 12, heads: 12, projection: 768, maxPositions: 77, inputIds: 'int64', padToken: '<|endoftext|>', act: 'quick_gelu', vocabSize: 49408 };
const clipG: ClipShape = { folder: 'text_encoder_2', tokenizer: 'tokenizer_2', hidden: 1280, intermediate: 5120, layers: 32, heads: 20, projection: 1280, maxPositions: 77, inputIds: 'int64', padToken: '!', act: 'gelu', vocabSize: 49408 };
const t5xxl: T5Shape = { dModel: 4096, dKv: 64, heads: 64, ff: 10240, layers: 24, maxLength: 512, vocabSize: 32128 };
const sd3Vae: VaeShape = { latentChannels: 16, blockOutChannels: [128, 256, 512, 512], layersPerBlock: 2, groups: 32, scalingFactor: 1.5305, shiftFactor: 0.0609 };
const mmdit = { sampleSize: 128, patchSize: 2, inChannels: 16, outChannels: 16, layers: 24, heads: 24, headDim: 64, jointAttentionDim: 4096, captionProjectionDim: 1536, pooledProjectionDim: 2048, timestepChannels: 256 };
// SD3.5 Large (8 B): 38 blocks of 38 heads x 64 (hidden and caption projection
// 2432), QK RMSNorm, no dual-attention blocks, positional table 192² (diffusers'
// scripts/convert_sd3_to_diffusers.py: heads = depth, caption_projection_dim
// from context_embedder, pos_embed_max_size 192 for "sd3.0 and sd3.5 8b").
// Turbo is the same transformer, timestep-distilled: 4 steps, no guidance.
const mmditLarge: TransformerShape = { ...mmdit, layers: 38, heads: 38, captionProjectionDim: 2432, posEmbedMaxSize: 192, dualAttentionLayers: [], qkNorm: 'rms_norm' };
const large: ModelPreset = { name: 'sd3.5-large', textEncoders: [clipL, clipG], t5: t5xxl, transformer: mmditLarge, vae: sd3Vae, scheduler: { shift: 3.0 }, familyDefaults: { steps: 28, guidance: 3.5 } };

export const PRESETS: Record<string, ModelPreset> = {
  tiny,
  'sd3-medium': {
    name: 'sd3-medium',
    textEncoders: [clipL, clipG],
    t5: t5xxl,
    transformer: { ...mmdit, posEmbedMaxSize: 192, dualAttentionLayers: [], qkNorm: null },
    vae: sd3Vae,
    scheduler: { shift: 3.0 },
  },
  'sd3.5-medium': {
    name: 'sd3.5-medium',
    textEncoders: [clipL, clipG],
    t5: t5xxl,
    transformer: { ...mmdit, posEmbedMaxSize: 384, dualAttentionLayers: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], qkNorm: 'rms_norm' },
    vae: sd3Vae,
    scheduler: { shift: 3.0 },
  },
  'sd3.5-large': large,
  // the same model, timestep-distilled: only its defaults differ
  'sd3.5-large-turbo': { ...large, name: 'sd3.5-large-turbo', familyDefaults: { steps: 4, guidance: 0 } },
};

export interface DepthOverrides {
  /** Transformer blocks (dual-attention blocks keep their indices below this). */
  layers?: number;
  /** Layers of each text encoder, at most its own. */
  encoderLayers?: number;
  /** VAE resnets per block (diffusers' layers_per_block). */
  vaeLayers?: number;
}

/**
 * A preset at reduced depth: widths untouched, so tensors keep their real sizes.
 * A family the app recognises by depth (familyDefaults) states its defaults in
 * model_index.json once its blocks are cut (the family is then the model's id).
 */
export function withDepth(p: ModelPreset, d: DepthOverrides): ModelPreset {
  const enc = (n: number) => (d.encoderLayers ? Math.min(n, d.encoderLayers) : n);
  const layers = d.layers ?? p.transformer.layers;
  return {
    ...p,
    ...(p.familyDefaults && layers < p.transformer.layers ? { defaults: p.familyDefaults } : {}),
    textEncoders: p.textEncoders.map((t) => ({ ...t, layers: enc(t.layers) })) as [ClipShape, ClipShape],
    t5: { ...p.t5, layers: enc(p.t5.layers) },
    transformer: { ...p.transformer, layers, dualAttentionLayers: p.transformer.dualAttentionLayers.filter((i) => i < layers) },
    vae: { ...p.vae, layersPerBlock: d.vaeLayers ?? p.vae.layersPerBlock },
  };
}
