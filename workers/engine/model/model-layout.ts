// Finding an SD3 export whatever its layout, and reading its graphs by role.
// Published exports differ from Optimum's layout (../shared/REAL-EXPORTS.md):
// AMD's `<name>_io16/` and `<name>_io32/` variant folders with `unet/` and no
// model_index.json or scheduler/; Amuse's root without model_index.json,
// scheduler/ or tokenizer_config.json; TensorStack's `unet/` and its names
// (`out_sample`, inputs in another order). What is missing falls back to the
// published defaults of the family the transformer graph's own shapes show.
import type { BackendName } from '../api/types.ts';
import { ModelLoadError } from '../errors.ts';
import type { TransformerShapes } from './graph-info.ts';
import type { ModelFiles } from './model-files.ts';

/** Where the model's components were found and how each of its settings was decided: what the plan reports. */
export interface ModelLayout {
  /** Folder under the source holding the components ('' for the source's root). */
  root: string;
  /** Variant folders found beside each other (AMD's `…_io16`, `…_io32`); empty when the components sit at the root. */
  variants: string[];
  /** AMD's naming: io16 = float16 graph inputs and outputs, io32 = float32 ones (fp16 inside). */
  variant: 'io16' | 'io32' | null;
  /** Why this variant (or root) was taken. */
  variantReason: string;
  /** 'transformer' (Optimum, Amuse) or 'unet' (AMD's SD3, TensorStack's Olive export). */
  transformerFolder: string;
  /** How the files were found: the source's file listing, or asking for known paths one by one. */
  discovery: 'listing' | 'probing';
  /** model_index.json, scheduler/scheduler_config.json, each component's config.json: 'file' or where the values came from instead. */
  configSources: Record<string, string>;
  /** Recognised from the transformer graph's shapes, or null. */
  shapeFamily: string | null;
  /** One line: what was found. */
  summary: string;
}

/** The published SD3 checkpoints' settings (stabilityai/*-diffusers: transformer/config.json, scheduler_config.json; diffusers' pipeline docs for steps and guidance). */
export interface FamilyConfig {
  family: string;
  steps: number;
  guidance: number;
  transformer: Record<string, unknown>;
  /** What the graph must show: hidden size, depth, patch, positional table side, dual-attention blocks, qk norm. */
  shapes: Required<TransformerShapes>;
}

const mmdit = { _class_name: 'SD3Transformer2DModel', sample_size: 128, patch_size: 2, in_channels: 16, out_channels: 16, attention_head_dim: 64, joint_attention_dim: 4096, pooled_projection_dim: 2048 };
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

export const FAMILIES: FamilyConfig[] = [
  {
    family: 'sd3-medium',
    steps: 28,
    guidance: 7.0,
    transformer: { ...mmdit, num_layers: 24, num_attention_heads: 24, caption_projection_dim: 1536, pos_embed_max_size: 192 },
    shapes: { hiddenSize: 1536, inChannels: 16, patchSize: 2, posEmbedMaxSize: 192, depth: 24, dualAttentionLayers: [], qkNorm: false },
  },
  {
    family: 'sd3.5-medium',
    steps: 40,
    guidance: 4.5,
    transformer: { ...mmdit, num_layers: 24, num_attention_heads: 24, caption_projection_dim: 1536, pos_embed_max_size: 384, qk_norm: 'rms_norm', dual_attention_layers: range(13) },
    shapes: { hiddenSize: 1536, inChannels: 16, patchSize: 2, posEmbedMaxSize: 384, depth: 24, dualAttentionLayers: range(13), qkNorm: true },
  },
  {
    family: 'sd3.5-large',
    steps: 28,
    guidance: 3.5,
    transformer: { ...mmdit, num_layers: 38, num_attention_heads: 38, caption_projection_dim: 2432, pos_embed_max_size: 192, qk_norm: 'rms_norm' },
    shapes: { hiddenSize: 2432, inChannels: 16, patchSize: 2, posEmbedMaxSize: 192, depth: 38, dualAttentionLayers: [], qkNorm: true },
  },
];

/** Every SD3 and SD3.5 checkpoint ships this scheduler (FlowMatchEulerDiscreteScheduler, shift 3.0). */
export const SD3_SCHEDULER = { _class_name: 'FlowMatchEulerDiscreteScheduler', num_train_timesteps: 1000, shift: 3.0, use_dynamic_shifting: false, base_shift: 0.5, max_shift: 1.15, base_image_seq_len: 256, max_image_seq_len: 4096, invert_sigmas: false, shift_terminal: null };
/** And this VAE (16 latent channels, factor 8). */
export const SD3_VAE = { _class_name: 'AutoencoderKL', latent_channels: 16, block_out_channels: [128, 256, 512, 512], scaling_factor: 1.5305, shift_factor: 0.0609 };

/** The family whose published shapes the graph shows; null when the graph tells too little or matches none. */
export function familyFromShapes(s: TransformerShapes): FamilyConfig | null {
  if (s.hiddenSize === undefined || s.depth === undefined) return null;
  return (
    FAMILIES.find((f) => {
      const want = f.shapes;
      return (
        want.hiddenSize === s.hiddenSize &&
        want.depth === s.depth &&
        (s.patchSize === undefined || want.patchSize === s.patchSize) &&
        (s.posEmbedMaxSize === undefined || want.posEmbedMaxSize === s.posEmbedMaxSize) &&
        want.qkNorm === s.qkNorm &&
        want.dualAttentionLayers.join() === s.dualAttentionLayers.join()
      );
    }) ?? null
  );
}

export const describeShapes = (s: TransformerShapes): string =>
  [
    `hidden ${s.hiddenSize ?? '?'}`,
    `depth ${s.depth ?? '?'}`,
    `patch ${s.patchSize ?? '?'}`,
    `pos_embed ${s.posEmbedMaxSize ?? '?'}`,
    s.dualAttentionLayers.length ? `dual attention in ${s.dualAttentionLayers.length} blocks` : 'no dual attention',
    s.qkNorm ? 'qk norm' : 'no qk norm',
  ].join(', ');

/** A component folder's graph exists: what makes a folder a model root. */
const GRAPH_MARKERS = ['text_encoder/model.onnx', 'transformer/model.onnx', 'unet/model.onnx'];

/** Files of the source: its listing (one request) or, without one, a HEAD per path asked. */
export class FileIndex {
  private constructor(
    private readonly files: ModelFiles,
    private readonly listed: Map<string, number> | null,
  ) {}

  static async open(files: ModelFiles): Promise<FileIndex> {
    let listing: { path: string; size: number }[] | null = null;
    try {
      listing = files.list ? await files.list() : null;
    } catch (e) {
      // the source's own refusal (a gated repo, a 404) says more than any probe would
      if (e instanceof ModelLoadError) throw e;
    }
    return new FileIndex(files, listing ? new Map(listing.map((f) => [f.path.replace(/^\/+/, ''), f.size])) : null);
  }

  get discovery(): 'listing' | 'probing' {
    return this.listed ? 'listing' : 'probing';
  }

  /** The file's size, or null when it is absent. */
  async size(path: string): Promise<number | null> {
    if (this.listed) return this.listed.get(path) ?? null;
    return this.files.size(path);
  }

  async exists(path: string): Promise<boolean> {
    return (await this.size(path)) !== null;
  }

  /** Top-level folders that hold model components (only known from a listing). */
  modelFolders(): string[] {
    if (!this.listed) return [];
    const roots = new Set<string>();
    for (const path of this.listed.keys()) {
      const m = /^([^/]+)\/(.+)$/.exec(path);
      if (m && GRAPH_MARKERS.includes(m[2])) roots.add(m[1]);
    }
    return [...roots].sort();
  }
}

const variantOf = (folder: string): 'io16' | 'io32' | null => (/_io16$/i.test(folder) ? 'io16' : /_io32$/i.test(folder) ? 'io32' : null);

/** Where to look for AMD's variant folders when the source cannot list its files: `<repo name without _amdgpu>_io16/…`. */
function probeCandidates(id: string): string[] {
  const bases = new Set<string>();
  for (const segment of id.split('/')) {
    const m = /^(.+)_amdgpu$/i.exec(segment);
    if (m) bases.add(m[1]);
  }
  const last = id.split('/').filter(Boolean).pop();
  if (last && !bases.size) bases.add(last.replace(/_amdgpu$/i, ''));
  return [...bases].flatMap((b) => [`${b}_io16`, `${b}_io32`]);
}

/**
 * Finds the folder holding the components and the transformer's folder.
 * A root with components wins (the user named the variant folder, or it is
 * Optimum's or Amuse's layout); otherwise variant folders are looked for
 * and io16 is taken only where the device runs float16 (WebGPU with shader-f16).
 */
export async function findLayout(files: ModelFiles, index: FileIndex, backend: BackendName, features: readonly string[]): Promise<Pick<ModelLayout, 'root' | 'variants' | 'variant' | 'variantReason' | 'transformerFolder' | 'discovery'>> {
  const hasComponents = async (root: string) => {
    for (const m of GRAPH_MARKERS) if (await index.exists(root ? `${root}/${m}` : m)) return true;
    return false;
  };
  let root = '';
  let variants: string[] = [];
  let variant: 'io16' | 'io32' | null = null;
  let variantReason: string;
  if (await hasComponents('')) {
    // the id ends in the folder the user named (`owner/repo/name_io32`, a folder path)
    variant = variantOf(files.id.replace(/\/+$/, '').split('/').pop() ?? '');
    variantReason = variant ? `the ${variant} variant, named by the source` : 'components at the root';
  } else {
    variants = index.modelFolders();
    if (!variants.length) for (const c of probeCandidates(files.id)) if (await hasComponents(c)) variants.push(c);
    if (!variants.length) {
      throw new ModelLoadError(
        'model_index.json',
        `there is none in ${files.id}, and neither its root nor a variant folder holds ${GRAPH_MARKERS.join(', ')}${index.discovery === 'probing' ? ' (this source cannot list its files: name the folder that holds the model as a subfolder)' : ''}`,
      );
    }
    const f16 = backend === 'webgpu' && features.includes('shader-f16');
    const io16 = variants.find((v) => variantOf(v) === 'io16');
    const io32 = variants.find((v) => variantOf(v) === 'io32');
    if (io16 && io32) {
      root = f16 ? io16 : io32;
      variantReason = f16 ? 'io16: this WebGPU adapter has shader-f16' : backend === 'webgpu' ? 'io32: this WebGPU adapter lacks shader-f16' : 'io32: float32 inputs and outputs for the wasm backend';
    } else if (variants.length === 1) {
      root = variants[0];
      variantReason = 'the only variant folder';
    } else {
      throw new ModelLoadError(files.id, `several model folders (${variants.join(', ')}): name one as the subfolder`);
    }
    variant = variantOf(root);
  }
  const at = (p: string) => (root ? `${root}/${p}` : p);
  const transformerFolder = (await index.exists(at('transformer/model.onnx'))) ? 'transformer' : (await index.exists(at('unet/model.onnx'))) ? 'unet' : null;
  if (!transformerFolder) throw new ModelLoadError(at('transformer/model.onnx'), 'the file is missing, and so is unet/model.onnx (the transformer must be in one of them)');
  return { root, variants, variant, variantReason, transformerFolder, discovery: index.discovery };
}

/** Known names per role: the engine's own name first (Optimum's), then other exporters'. */
export const ROLE_ALIASES: Record<string, Record<string, string[]>> = {
  transformer: {
    hidden_states: ['hidden_states', 'sample'],
    encoder_hidden_states: ['encoder_hidden_states'],
    pooled_projections: ['pooled_projections', 'pooled_text_embeds'],
    timestep: ['timestep', 'timesteps'],
  },
  vae_decoder: { latent_sample: ['latent_sample', 'latents'] },
  vae_encoder: { sample: ['sample', 'images'] },
  text_encoder: { input_ids: ['input_ids'] },
};
const OUTPUT_ALIASES: Record<string, Record<string, string[]>> = {
  transformer: { out_hidden_states: ['out_hidden_states', 'out_sample'] },
  vae_decoder: { sample: ['sample'] },
  vae_encoder: { latent_parameters: ['latent_parameters', 'latent_sample', 'latent_dist'] },
  text_encoder: { text_embeds: ['text_embeds', 'pooler_output'] },
  text_encoder_3: { last_hidden_state: ['last_hidden_state'] },
};

/** Graph names by role: inputs and outputs the engine feeds and reads under its own (Optimum's) names. */
export interface IoRoles {
  inputs: Record<string, string>;
  outputs: Record<string, string>;
}

/**
 * Matches a graph's inputs and outputs to the roles the engine needs, by name
 * with known aliases in any order; a graph with one output gives it whatever
 * its name. A role left unmatched is an error naming the file and the tensor.
 */
export function matchRoles(role: string, graphPath: string, inputs: readonly string[], outputs: readonly string[]): IoRoles {
  const kind = role === 'text_encoder_2' || role === 'text_encoder_3' ? 'text_encoder' : role;
  const result: IoRoles = { inputs: {}, outputs: {} };
  const pick = (wanted: Record<string, string[]>, present: readonly string[], what: 'input' | 'output', into: Record<string, string>) => {
    const roles = Object.entries(wanted);
    for (const [name, aliases] of roles) {
      let found = aliases.find((a) => present.includes(a));
      // one tensor and one role: whatever it is called
      if (!found && present.length === 1 && roles.length === 1) found = present[0];
      if (!found) {
        throw new ModelLoadError(graphPath, `has no ${what} ${name} (${what}s: ${present.join(', ') || 'none'}); the names known for it: ${aliases.join(', ')}`);
      }
      into[name] = found;
    }
  };
  pick(ROLE_ALIASES[kind] ?? {}, inputs, 'input', result.inputs);
  const outs = OUTPUT_ALIASES[role] ?? OUTPUT_ALIASES[kind] ?? {};
  if (role === 'transformer' && outputs.length === 1) result.outputs.out_hidden_states = outputs[0];
  else pick(outs, outputs, 'output', result.outputs);
  return result;
}

/** CLIP's hidden states `hidden_states.0` … `hidden_states.N` among a graph's outputs: N, the encoder's layers; 0 when it has none. */
export function hiddenStateLayers(outputs: readonly string[]): number {
  let n = -1;
  for (const o of outputs) {
    const m = /^hidden_states\.(\d+)$/.exec(o);
    if (m) n = Math.max(n, Number(m[1]));
  }
  return Math.max(n, 0);
}

/**
 * tokenizer_config.json's defaults where a folder has none (Amuse): CLIP's
 * special tokens and 77-token length (SD3's CLIP-G pads with "!", as its
 * published tokenizer_2 does), T5's for tokenizer_3.
 */
export function tokenizerDefaults(folder: string, tokenizerJson: Record<string, unknown>): Record<string, unknown> {
  const model = tokenizerJson.model as { type?: string } | undefined;
  const padding = tokenizerJson.padding as { pad_token?: string } | null | undefined;
  if (folder.endsWith('tokenizer_3') || model?.type === 'Unigram') {
    return { tokenizer_class: 'T5Tokenizer', model_max_length: 512, eos_token: '</s>', unk_token: '<unk>', pad_token: padding?.pad_token ?? '<pad>' };
  }
  return {
    tokenizer_class: 'CLIPTokenizer',
    model_max_length: 77,
    bos_token: '<|startoftext|>',
    eos_token: '<|endoftext|>',
    unk_token: '<|endoftext|>',
    pad_token: padding?.pad_token ?? (folder.endsWith('tokenizer_2') ? '!' : '<|endoftext|>'),
  };
}
