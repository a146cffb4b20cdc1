// Dimensions of the tiny SD3: toy widths, real contract (16 latent channels,
// patch 2, VAE factor 8, CLIP 77 tokens, T5 joint dimension wider than CLIP-L+G
// so the zero-padding path is exercised, one CLIP with int32 input_ids).
export const tinyConfig = {
  textEncoders: [
    { folder: 'text_encoder', tokenizer: 'tokenizer', hidden: 32, intermediate: 64, layers: 2, heads: 2, projection: 32, maxPositions: 77, inputIds: 'int64', padToken: '<|endoftext|>' },
    { folder: 'text_encoder_2', tokenizer: 'tokenizer_2', hidden: 32, intermediate: 64, layers: 3, heads: 2, projection: 32, maxPositions: 77, inputIds: 'int32', padToken: '!' },
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
  },
  vae: { latentChannels: 16, blockOutChannels: [8, 8, 16, 16], groups: 4, scalingFactor: 1.5305, shiftFactor: 0.0609 },
  scheduler: { shift: 3.0 },
  defaults: { steps: 4, guidance: 4.5 },
} as const;

export type TinyConfig = typeof tinyConfig;
