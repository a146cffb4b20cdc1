// Builds SD3 model folders in Optimum's ONNX layout, deterministically:
//   npm run build:model -- --preset tiny|sd3-medium|sd3.5-medium --out DIR
//     [--weights fp32|fp16] [--io fp32|fp16] [--layers N] [--encoder-layers N] [--vae-layers N] [--vae-channels a,b,c,d]
//     [--attention decomposed|fused] [--external single|shards|none] [--shard-mb N] [--sparse] [--no-t5]
//   npm run build:tiny-model   (on install and before tests) writes the built-in tiny model:
//     public/models/tiny-sd3/            every graph self-contained
//     public/models/tiny-sd3-external/   same weights, transformer in model.onnx + model.onnx_data
// Weights are seeded by parameter name, so every build gives the same bytes.
// Built models belong in a git-ignored folder (models/ or public/models/).
import { rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { buildClipTextEncoder, buildT5Encoder, buildTransformer, buildVaeDecoder, buildVaeEncoder, type ComponentOptions } from './components.ts';
import type { AttentionKind } from './layers.ts';
import type { FloatType, Graph } from './onnx-graph.ts';
import { PRESETS, withDepth, type DepthOverrides, type ModelPreset } from './presets.ts';
import { clipTokenizer, t5Tokenizer } from './tokenizers.ts';
import { ExternalData, FolderOutput, MemoryOutput, type ModelOutput } from './weight-store.ts';

export const TINY_MODEL_ID = 'sd3-webgpu/tiny-sd3';

export interface BuildSpec {
  preset: ModelPreset;
  /** Recorded as model_index.json's _name_or_path (and so as the model's id). */
  id: string;
  weights: FloatType;
  io: FloatType;
  attention: AttentionKind;
  /** A component's external data file (Optimum: model.onnx_data; AMD / Olive: model.onnx.data), or null to keep its weights inside the graph. */
  dataFile: (folder: string) => string | null;
  /** Split external data into shards of at most this many bytes (`<file>.000`, `.001`, …). */
  shardBytes?: number;
  /** External data files are holes of the right size (plans and load tests of memory). */
  sparse?: boolean;
  withT5?: boolean;
  withVaeEncoder?: boolean;
  /** Weights at disk speed (fast-weights.ts) instead of seeded normals: for speed runs of full-size models. */
  fastWeights?: boolean;
}

export interface ComponentSummary {
  parameters: number;
  bytes: number;
}

const json = (v: unknown) => new TextEncoder().encode(`${JSON.stringify(v, null, 2)}\n`);

/** Writes every file of a model; returns parameters and bytes per component. */
export function buildModel(spec: BuildSpec, out: ModelOutput): Record<string, ComponentSummary> {
  const { preset: cfg } = spec;
  const withT5 = spec.withT5 ?? true;
  const opts: ComponentOptions = { weights: spec.weights, io: spec.io, attention: spec.attention };
  const summary: Record<string, ComponentSummary> = {};

  const graph = (folder: string, make: (g: { external?: ExternalData; fastWeights?: boolean }) => Graph) => {
    const dataFile = spec.dataFile(folder);
    const external = dataFile ? new ExternalData(out, folder, dataFile, { shardBytes: spec.shardBytes, sparse: spec.sparse }) : undefined;
    const g = make({ external, fastWeights: spec.fastWeights });
    external?.close();
    out.file(`${folder}/model.onnx`, g.serialize());
    let bytes = 0;
    for (const [path, size] of out.sizes) if (path.startsWith(`${folder}/model.onnx`)) bytes += size;
    summary[folder] = { parameters: g.parameters, bytes };
  };

  out.file('model_index.json', json({
    _class_name: 'StableDiffusion3Pipeline',
    _diffusers_version: '0.31.0',
    _name_or_path: spec.id,
    scheduler: ['diffusers', 'FlowMatchEulerDiscreteScheduler'],
    text_encoder: ['transformers', 'CLIPTextModelWithProjection'],
    text_encoder_2: ['transformers', 'CLIPTextModelWithProjection'],
    text_encoder_3: withT5 ? ['transformers', 'T5EncoderModel'] : [null, null],
    tokenizer: ['transformers', 'CLIPTokenizer'],
    tokenizer_2: ['transformers', 'CLIPTokenizer'],
    tokenizer_3: withT5 ? ['transformers', 'T5TokenizerFast'] : [null, null],
    transformer: ['diffusers', 'SD3Transformer2DModel'],
    vae: ['diffusers', 'AutoencoderKL'],
    // not a diffusers field: the tiny model states its own defaults, as real families get theirs from a table
    ...(cfg.defaults ? { sd3_webgpu_defaults: { num_inference_steps: cfg.defaults.steps, guidance_scale: cfg.defaults.guidance } } : {}),
  }));
  out.file('scheduler/scheduler_config.json', json({
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
    out.file(`${te.tokenizer}/tokenizer.json`, json(tok.tokenizer));
    out.file(`${te.tokenizer}/tokenizer_config.json`, json(tok.config));
    out.file(`${te.folder}/config.json`, json({
      _class_name: 'CLIPTextModelWithProjection',
      architectures: ['CLIPTextModelWithProjection'],
      model_type: 'clip_text_model',
      hidden_size: te.hidden,
      intermediate_size: te.intermediate,
      num_hidden_layers: te.layers,
      num_attention_heads: te.heads,
      projection_dim: te.projection,
      max_position_embeddings: te.maxPositions,
      vocab_size: Math.max(tok.vocabSize, te.vocabSize ?? 0),
      hidden_act: te.act,
      eos_token_id: tok.eosId,
      bos_token_id: tok.eosId - 1,
      pad_token_id: 1,
    }));
    graph(te.folder, (g) => buildClipTextEncoder(te, tok.vocabSize, tok.eosId, opts, g));
  }

  if (withT5) {
    const t5 = t5Tokenizer();
    out.file('tokenizer_3/tokenizer.json', json(t5.tokenizer));
    out.file('tokenizer_3/tokenizer_config.json', json(t5.config));
    out.file('text_encoder_3/config.json', json({
      architectures: ['T5EncoderModel'],
      model_type: 't5',
      d_model: cfg.t5.dModel,
      d_kv: cfg.t5.dKv,
      d_ff: cfg.t5.ff,
      num_heads: cfg.t5.heads,
      num_layers: cfg.t5.layers,
      vocab_size: Math.max(t5.vocabSize, cfg.t5.vocabSize ?? 0),
      feed_forward_proj: 'gated-gelu',
    }));
    graph('text_encoder_3', (g) => buildT5Encoder(cfg.t5, t5.vocabSize, opts, g));
  }

  const tr = cfg.transformer;
  out.file('transformer/config.json', json({
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
    qk_norm: tr.qkNorm,
    dual_attention_layers: tr.dualAttentionLayers,
  }));
  graph('transformer', (g) => buildTransformer(tr, opts, g));

  const vaeConfig = json({
    _class_name: 'AutoencoderKL',
    in_channels: 3,
    out_channels: 3,
    latent_channels: cfg.vae.latentChannels,
    block_out_channels: cfg.vae.blockOutChannels,
    layers_per_block: cfg.vae.layersPerBlock,
    norm_num_groups: cfg.vae.groups,
    scaling_factor: cfg.vae.scalingFactor,
    shift_factor: cfg.vae.shiftFactor,
    use_quant_conv: false,
    use_post_quant_conv: false,
  });
  out.file('vae_decoder/config.json', vaeConfig);
  graph('vae_decoder', (g) => buildVaeDecoder(cfg.vae, opts, g));
  if (spec.withVaeEncoder ?? true) {
    out.file('vae_encoder/config.json', vaeConfig);
    graph('vae_encoder', (g) => buildVaeEncoder(cfg.vae, opts, g));
  }
  return summary;
}

/** Every file of one tiny variant, path -> bytes. In memory, so tests can compare two builds. */
export function tinyModelFiles(variant: 'inline' | 'external'): Map<string, Uint8Array> {
  const out = new MemoryOutput();
  buildModel(
    {
      preset: PRESETS.tiny,
      id: TINY_MODEL_ID,
      weights: 'float32',
      io: 'float32',
      attention: 'decomposed',
      // the external variant covers both conventions: Optimum's model.onnx_data
      // (transformer) and AMD / Olive's model.onnx.data (CLIP-G); others stay inline
      dataFile: (folder) => (variant === 'inline' ? null : folder === 'transformer' ? 'model.onnx_data' : folder === 'text_encoder_2' ? 'model.onnx.data' : null),
    },
    out,
  );
  return out.files;
}

export function writeTinyModels(outRoot: string): string[] {
  const written: string[] = [];
  for (const variant of ['inline', 'external'] as const) {
    const dir = join(outRoot, variant === 'inline' ? 'tiny-sd3' : 'tiny-sd3-external');
    rmSync(dir, { recursive: true, force: true });
    const out = new FolderOutput(dir);
    for (const [path, bytes] of tinyModelFiles(variant)) out.file(path, bytes);
    written.push(dir);
  }
  return written;
}

const USAGE = `usage: npm run build:model -- --preset ${Object.keys(PRESETS).join('|')} --out DIR
  [--weights fp32|fp16] [--io fp32|fp16] [--layers N] [--encoder-layers N] [--vae-layers N] [--vae-channels a,b,c,d]
  [--attention decomposed|fused] [--external single|shards|none] [--shard-mb N] [--sparse] [--no-t5] [--no-vae-encoder] [--fast-weights]
  --sparse writes the external data as holes of the right size: for memory plans and load tests, not images.
  --fast-weights writes random weights at disk speed (not seeded normals): for speed and memory runs of full-size models.`;

const floatType = (v: string, flag: string): FloatType => {
  if (v === 'fp32') return 'float32';
  if (v === 'fp16') return 'float16';
  throw new Error(`${flag}: expected fp32 or fp16, got ${v}`);
};
const count = (v: string | undefined, flag: string, min = 1): number | undefined => {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`${flag}: expected an integer >= ${min}, got ${v}`);
  return n;
};

export function specFromArgs(argv: string[]): { spec: BuildSpec; out: string } {
  const { values: a } = parseArgs({
    args: argv,
    options: {
      preset: { type: 'string' },
      out: { type: 'string' },
      weights: { type: 'string', default: 'fp32' },
      io: { type: 'string' },
      layers: { type: 'string' },
      'encoder-layers': { type: 'string' },
      'vae-layers': { type: 'string' },
      'vae-channels': { type: 'string' },
      attention: { type: 'string', default: 'decomposed' },
      external: { type: 'string' },
      'shard-mb': { type: 'string' },
      sparse: { type: 'boolean', default: false },
      'no-t5': { type: 'boolean', default: false },
      'no-vae-encoder': { type: 'boolean', default: false },
      'fast-weights': { type: 'boolean', default: false },
    },
    strict: true,
  });
  const preset = PRESETS[a.preset ?? ''];
  if (!preset) throw new Error(`--preset: expected one of ${Object.keys(PRESETS).join(', ')}, got ${a.preset ?? 'nothing'}`);
  if (!a.out) throw new Error('--out: the folder to write the model to is required');
  const weights = floatType(a.weights!, '--weights');
  const io = a.io ? floatType(a.io, '--io') : weights;
  if (a.attention !== 'decomposed' && a.attention !== 'fused') throw new Error(`--attention: expected decomposed or fused, got ${a.attention}`);
  const external = a.external ?? (preset.name === 'tiny' ? 'none' : 'single');
  if (external !== 'single' && external !== 'shards' && external !== 'none') throw new Error(`--external: expected single, shards or none, got ${external}`);
  const depth: DepthOverrides = { layers: count(a.layers, '--layers'), encoderLayers: count(a['encoder-layers'], '--encoder-layers'), vaeLayers: count(a['vae-layers'], '--vae-layers') };
  let shaped = withDepth(preset, depth);
  if (a['vae-channels'] !== undefined) {
    // not a published shape: a narrow VAE where its decode time would drown a measurement (SwiftShader runs ~1 GFLOP/s)
    const chans = a['vae-channels'].split(',').map(Number);
    if (chans.length !== preset.vae.blockOutChannels.length || chans.some((c) => !Number.isInteger(c) || c < 1 || c % preset.vae.groups)) {
      throw new Error(`--vae-channels: expected ${preset.vae.blockOutChannels.length} comma-separated multiples of ${preset.vae.groups} (the VAE's groups), got ${a['vae-channels']}`);
    }
    shaped = { ...shaped, vae: { ...shaped.vae, blockOutChannels: chans } };
  }
  const suffix = [weights === 'float16' ? 'fp16' : '', io !== weights ? `io-${a.io}` : '', depth.layers ? `${depth.layers}l` : ''].filter(Boolean).join('-');
  return {
    out: resolve(a.out),
    spec: {
      preset: shaped,
      id: `sd3-webgpu/synthetic-${preset.name}${suffix ? `-${suffix}` : ''}`,
      weights,
      io,
      attention: a.attention,
      dataFile: () => (external === 'none' ? null : 'model.onnx_data'),
      shardBytes: external === 'shards' ? (count(a['shard-mb'], '--shard-mb') ?? 1024) * 1024 ** 2 : undefined,
      sparse: a.sparse,
      withT5: !a['no-t5'],
      withVaeEncoder: !a['no-vae-encoder'],
      fastWeights: a['fast-weights'],
    },
  };
}

const gb = (n: number) => `${(n / 1024 ** 3).toFixed(2)} GB`;

if (process.argv[1]?.endsWith('build.ts')) {
  const args = process.argv.slice(2);
  if (!args.includes('--preset')) {
    // npm run build:tiny-model [outRoot]
    const root = resolve(args[0] ?? 'public/models');
    for (const dir of writeTinyModels(root)) console.log(`tiny SD3 written to ${dir}`);
  } else {
    let parsed;
    try {
      parsed = specFromArgs(args);
    } catch (e) {
      console.error(`error: ${(e as Error).message}\n${USAGE}`);
      process.exit(2);
    }
    const { spec, out } = parsed;
    const started = performance.now();
    rmSync(out, { recursive: true, force: true });
    const summary = buildModel(spec, new FolderOutput(out));
    let params = 0;
    let bytes = 0;
    for (const [name, s] of Object.entries(summary)) {
      console.log(`${name.padEnd(16)} ${(s.parameters / 1e6).toFixed(1).padStart(9)} M params  ${gb(s.bytes).padStart(10)}`);
      params += s.parameters;
      bytes += s.bytes;
    }
    console.log(`${'total'.padEnd(16)} ${(params / 1e6).toFixed(1).padStart(9)} M params  ${gb(bytes).padStart(10)}${spec.sparse ? '  (sparse: holes, no weights)' : ''}`);
    console.log(`${spec.id} written to ${out} in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  }
}
