// Writes the tiny SD3 model folders in Optimum's ONNX layout:
//   public/models/tiny-sd3/            every graph self-contained
//   public/models/tiny-sd3-external/   same weights, transformer in model.onnx + model.onnx_data
// Usage: tsx tools/tiny-model/build.ts [outRoot]   (npm run build:tiny-model)
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { buildClipTextEncoder, buildT5Encoder, buildTransformer, buildVaeDecoder, buildVaeEncoder } from './components.ts';
import type { Graph } from './onnx-graph.ts';
import { tinyConfig as cfg } from './tiny-config.ts';
import { clipTokenizer, t5Tokenizer } from './tokenizers.ts';

export const TINY_MODEL_ID = 'sd3-webgpu/tiny-sd3';

type Files = Map<string, Uint8Array>;
const json = (v: unknown) => new TextEncoder().encode(`${JSON.stringify(v, null, 2)}\n`);

/** Every file of one variant, path -> bytes. Pure: no I/O, so tests can compare two builds. */
export function tinyModelFiles(variant: 'inline' | 'external'): Files {
  const files: Files = new Map();
  // the external variant covers both conventions: Optimum's model.onnx_data
  // (transformer) and AMD / Olive's model.onnx.data (CLIP-G)
  const graph = (folder: string, g: Graph, externalDataFile?: string) => {
    const { model, externalData } = g.serialize(variant === 'external' && externalDataFile ? { externalDataFile } : {});
    files.set(`${folder}/model.onnx`, model);
    if (externalData) files.set(`${folder}/${externalDataFile}`, externalData);
  };

  files.set('model_index.json', json({
    _class_name: 'StableDiffusion3Pipeline',
    _diffusers_version: '0.31.0',
    _name_or_path: TINY_MODEL_ID,
    scheduler: ['diffusers', 'FlowMatchEulerDiscreteScheduler'],
    text_encoder: ['transformers', 'CLIPTextModelWithProjection'],
    text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'],
    text_encoder_3: ['transformers', 'T5EncoderModel'],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    tokenizer_2: ['transformers', 'CLIPTokenizer'],
    tokenizer_3: ['transformers', 'T5TokenizerFast'],
    transformer: ['diffusers', 'SD3Transformer2DModel'],
    vae: ['diffusers', 'AutoencoderKL'],
    // not a diffusers field: the tiny model states its own defaults, as real families get theirs from a table
    sd3_webgpu_defaults: { num_inference_steps: cfg.defaults.steps, guidance_scale: cfg.defaults.guidance },
  }));
  files.set('scheduler/scheduler_config.json', json({
    _class_name: 'FlowMatchEulerDiscreteScheduler',
    _diffusers_version: '0.31.0',
    num_train_timesteps: 1000,
    shift: cfg.scheduler.shift,
    use_dynamic_shifting: false,
    base_shift: 0.5,
    max_shift: 1.15,
    base_image_seq_len: 256,
    max_image_seq_len: 4096,
    invert_sigmas: false,
    shift_terminal: null,
  }));

  for (const te of cfg.textEncoders) {
    const tok = clipTokenizer(te.padToken);
    files.set(`${te.tokenizer}/tokenizer.json`, json(tok.tokenizer));
    files.set(`${te.tokenizer}/tokenizer_config.json`, json(tok.config));
    files.set(`${te.folder}/config.json`, json({
      _class_name: 'CLIPTextModelWithProjection',
      architectures: ['CLIPTextModelWithProjection'],
      model_type: 'clip_text_model',
      hidden_size: te.hidden,
      intermediate_size: te.intermediate,
      num_hidden_layers: te.layers,
      num_attention_heads: te.heads,
      projection_dim: te.projection,
      max_position_embeddings: te.maxPositions,
      vocab_size: tok.vocabSize,
      hidden_act: 'quick_gelu',
      eos_token_id: tok.eosId,
      bos_token_id: tok.eosId - 1,
      pad_token_id: 1,
    }));
    graph(te.folder, buildClipTextEncoder(te, tok.vocabSize, tok.eosId), te.folder === 'text_encoder_2' ? 'model.onnx.data' : undefined);
  }

  const t5 = t5Tokenizer();
  files.set('tokenizer_3/tokenizer.json', json(t5.tokenizer));
  files.set('tokenizer_3/tokenizer_config.json', json(t5.config));
  files.set('text_encoder_3/config.json', json({
    architectures: ['T5EncoderModel'],
    model_type: 't5',
    d_model: cfg.t5.dModel,
    d_kv: cfg.t5.dKv,
    d_ff: cfg.t5.ff,
    num_heads: cfg.t5.heads,
    num_layers: cfg.t5.layers,
    vocab_size: t5.vocabSize,
    feed_forward_proj: 'gated-gelu',
  }));
  graph('text_encoder_3', buildT5Encoder(cfg.t5, t5.vocabSize));

  const tr = cfg.transformer;
  files.set('transformer/config.json', json({
    _class_name: 'SD3Transformer2DModel',
    sample_size: tr.sampleSize,
    patch_size: tr.patchSize,
    in_channels: tr.inChannels,
    out_channels: tr.outChannels,
    num_layers: tr.layers,
    attention_head_dim: tr.headDim,
    num_attention_heads: tr.heads,
    joint_attention_dim: tr.jointAttentionDim,
    caption_projection_dim: tr.captionProjectionDim,
    pooled_projection_dim: tr.pooledProjectionDim,
    pos_embed_max_size: tr.posEmbedMaxSize,
    qk_norm: null,
    dual_attention_layers: [],
  }));
  graph('transformer', buildTransformer(tr), 'model.onnx_data');

  const vaeConfig = json({
    _class_name: 'AutoencoderKL',
    in_channels: 3,
    out_channels: 3,
    latent_channels: cfg.vae.latentChannels,
    block_out_channels: cfg.vae.blockOutChannels,
    norm_num_groups: cfg.vae.groups,
    scaling_factor: cfg.vae.scalingFactor,
    shift_factor: cfg.vae.shiftFactor,
    use_quant_conv: false,
    use_post_quant_conv: false,
  });
  files.set('vae_decoder/config.json', vaeConfig);
  files.set('vae_encoder/config.json', vaeConfig);
  graph('vae_decoder', buildVaeDecoder(cfg.vae));
  graph('vae_encoder', buildVaeEncoder(cfg.vae));
  return files;
}

export function writeTinyModels(outRoot: string): string[] {
  const written: string[] = [];
  for (const variant of ['inline', 'external'] as const) {
    const dir = join(outRoot, variant === 'inline' ? 'tiny-sd3' : 'tiny-sd3-external');
    rmSync(dir, { recursive: true, force: true });
    for (const [path, bytes] of tinyModelFiles(variant)) {
      mkdirSync(dirname(join(dir, path)), { recursive: true });
      writeFileSync(join(dir, path), bytes);
    }
    written.push(dir);
  }
  return written;
}

if (import.meta.url === `file://${process.argv[1]}` || process.argv[1]?.endsWith('build.ts')) {
  const root = resolve(process.argv[2] ?? 'public/models');
  for (const dir of writeTinyModels(root)) console.log(`tiny SD3 written to ${dir}`);
}
