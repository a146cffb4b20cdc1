// Loads a model folder once: configs, tokenizers, and one session per component.
// It plans first (configs, small graphs and every file's size) so a model that
// cannot fit this device is refused before its weights are downloaded, and so
// download progress has the true total before any weight is downloaded. The plan is also
// what `npm run generate -- --plan` prints.
import type { BackendName, GenerationDefaults, ModelInfo, ProgressCallback } from '../api/types.ts';
import { ModelLoadError } from '../errors.ts';
import { largestFittingSize, type MemoryBudget } from '../memory/budget.ts';
import { attentionChunks, requestFootprint, rowScoreBytes, type ModelDims } from '../memory/footprint.ts';
import { FlowMatchEulerScheduler, parseSchedulerConfig } from '../scheduler/flow-match-euler.ts';
import { chunkAttention, findAttention } from './attention-chunks.ts';
import { fuseAttention } from './attention-fuse.ts';
import { ComponentSession, type Ort } from './component-session.ts';
import { checkExternalLocation } from './confine.ts';
import { relocateExternalData } from './external-data.ts';
import { checkFileSizes, checkHalfPrecision, checkModelFits, chooseAttentionForm, defaultDeviceFit, type AttentionChoice, type DeviceFit } from './device-fit.ts';
import { CachedModelFiles } from './file-cache.ts';
import { graphIoTypes, summarizeGraph, transformerShapes, type GraphIo, type GraphSummary, type TransformerShapes } from './graph-info.ts';
import { blobChunks, graphSkeletonFromStream } from './graph-stream.ts';
import type { ByteProgress, LocalFile, ModelFiles } from './model-files.ts';
import { ProgressThrottle } from './progress-throttle.ts';
import { CLIP_LENGTH, familyDefaults, parseTransformerConfig, parseVaeConfig, type TransformerConfig, type VaeConfig } from './model-config.ts';
import { describeShapes, FileIndex, familyFromShapes, findLayout, hiddenStateLayers, matchRoles, SD3_SCHEDULER, SD3_VAE, tokenizerDefaults, type IoRoles, type ModelLayout } from './model-layout.ts';
import { checkOps, lowerForWeb } from './lower-ops.ts';
import { opsToLower } from './op-support.ts';
import { deviceQueue } from './run-queue.ts';
import { PromptTokenizer } from './tokenizers.ts';

export interface TextEncoder {
  session: ComponentSession;
  tokenizer: PromptTokenizer;
  /** Hidden-state output used for the prompt embedding. */
  hiddenOutput: string;
  hiddenSize: number;
  projectionSize: number;
}

export interface LoadedModel {
  info: ModelInfo;
  clipL: TextEncoder;
  clipG: TextEncoder;
  /** Absent when the export has no T5 or it was skipped ("no T5" mode): zeros are used. */
  t5: TextEncoder | null;
  t5MaxLength: number;
  transformer: ComponentSession;
  vaeDecoder: ComponentSession;
  /** Image to image and inpainting: absent when the export has none (text to image only). */
  vaeEncoder: ComponentSession | null;
  transformerConfig: TransformerConfig;
  vaeConfig: VaeConfig;
  scheduler: FlowMatchEulerScheduler;
  /** What the memory estimates need: dimensions, activation dtypes, attention chunks. */
  dims: ModelDims;
  /** The device's memory with this model's weights in it. */
  budget: MemoryBudget;
  /** The transformer's output stays on the GPU (a float32-I/O model on our own WebGPU device): denoising never leaves it. */
  deviceResident: boolean;
  release(): Promise<void>;
}

export interface LoadOptions {
  ort: Ort;
  backend: BackendName;
  onProgress?: ProgressCallback;
  /** Skip text_encoder_3 even when present (saves memory; SD3 allows zeros). */
  skipT5?: boolean;
  /** T5 tokens (diffusers' max_sequence_length), at most 512. */
  t5MaxLength?: number;
  /** What the device can hold; defaults per backend (device-fit.ts). */
  fit?: Partial<DeviceFit>;
  /** Hand external data to onnxruntime as Blobs (JSPI build), read tensor by tensor: never held whole. */
  streamExternalData?: boolean;
  /** The GPUDevice every WebGPU session runs on (onnxruntime makes its own otherwise). Opaque here: the core knows no DOM. */
  webgpuDevice?: unknown;
  /** Keep the transformer's output on the GPU where the model allows it (float32 I/O on our WebGPU device). */
  deviceResident?: boolean;
  /**
   * Native onnxruntime (onnxruntime-node): sessions are made from the files on disk where the source has them
   * (a folder, the Node download cache), so external data of any size never passes through JS; these session
   * options (threads, the execution provider's) go with every session.
   */
  native?: { sessionOptions: Record<string, unknown> };
  /** Aborts the load: downloads stop at their next chunk, sessions made so far are released. */
  signal?: AbortSignal;
  /** Graphs up to this size are read whole while planning; larger ones are streamed, their weights skipped (default 64 MB). */
  planReadMaxBytes?: number;
  /**
   * Awaited once the plan is known and before the first session is created (a model switch makes room here).
   * `storeFiles` downloads every file the sessions will read into the source's cache first (a no-op for
   * local sources), so that a switch which must release the old model can keep it serving until then.
   */
  beforeSessions?: (plan: ModelPlan, storeFiles: () => Promise<void>) => Promise<void>;
}

function parseJson(path: string, bytes: Uint8Array): Record<string, unknown> {
  try {
    const v = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v;
  } catch (e) {
    throw new ModelLoadError(path, `not valid JSON (${(e as Error).message})`);
  }
}

async function readJson(files: ModelFiles, path: string): Promise<Record<string, unknown>> {
  return parseJson(path, await files.read(path));
}

/** A JSON file that may be absent or empty (AMD's 0-byte config.json): null then. */
async function optionalJson(files: ModelFiles, index: FileIndex, path: string): Promise<Record<string, unknown> | null> {
  if ((await index.size(path)) === null) return null;
  const bytes = await files.read(path);
  if (!new TextDecoder().decode(bytes).trim()) return null;
  return parseJson(path, bytes);
}

/** Whether model_index.json declares a component (absent or [null, null] means no). */
const declared = (index: Record<string, unknown>, name: string) => Array.isArray(index[name]) && (index[name] as unknown[])[0] !== null;

/** Graphs up to this size are read whole while planning (external-data graphs are small); larger ones carry their weights inline and are streamed. */
const PLAN_GRAPH_MAX_BYTES = 64 * 1024 ** 2;
/** One row's attention scores are cut into query chunks of at most this much. */
export const ATTENTION_CHUNK_TARGET_BYTES = 128 * 1024 ** 2;

export interface ComponentPlan {
  /** What the engine calls the component: text_encoder, …, transformer, vae_decoder. */
  role: string;
  /** Where it is in the source (`unet`, `stable-diffusion-3-medium_io32/unet`). */
  folder: string;
  graphPath: string;
  graphSize: number;
  /** Read while planning when small; else read at load time. */
  graph: Uint8Array | null;
  summary: GraphSummary | null;
  /** The graph's inputs and outputs, and the ones the engine feeds and reads by role. */
  io: GraphIo[];
  roles: IoRoles;
  /** What the transformer graph shows of its architecture. */
  shapes: TransformerShapes | null;
  /** Text encoders: the hidden-state output used, its width, the pooled projection's width. */
  encoder: { hiddenOutput: string; hiddenSize: number; projectionSize: number } | null;
  /** External data files: their recorded location and size. */
  data: { location: string; path: string; size: number }[];
  /** Attention sites the chunk rewrite recognises (transformer and VAE decoder). */
  attentionSites: number;
  /** Query chunks the loader will cut each attention into (1: unchanged). */
  chunks: number;
  /** Decomposed attention is fused into MultiHeadAttention at load (the 'fused' forms; attention-fuse.ts). */
  fuse?: boolean;
  /** com.microsoft operators the loader rewrites into standard ONNX for this backend (lower-ops.ts): op -> nodes. */
  lowered: Record<string, number>;
}

/** Everything known before any weight is downloaded. */
export interface ModelPlan {
  id: string;
  family: string;
  /** Where the model was found and where each setting came from. */
  layout: ModelLayout;
  backend: BackendName;
  defaults: GenerationDefaults;
  limits: ModelInfo['limits'];
  index: Record<string, unknown>;
  schedulerJson: Record<string, unknown>;
  transformerConfig: TransformerConfig;
  vaeConfig: VaeConfig;
  withT5: boolean;
  t5MaxLength: number;
  components: Map<string, ComponentPlan>;
  dims: ModelDims;
  budget: MemoryBudget;
  fit: DeviceFit;
  /** The form attention runs in, its chunks and why (device-fit.ts chooseAttentionForm). */
  attention: AttentionChoice;
}

/** Download progress per file and over the whole model, in bytes. */
class LoadProgress {
  private readonly planned = new Map<string, number>();
  private readonly loaded = new Map<string, number>();
  private readonly throttle = new ProgressThrottle();

  constructor(private readonly onProgress?: ProgressCallback) {}

  plan(path: string, size: number): void {
    this.planned.set(path, size);
  }

  private overall() {
    let loaded = 0;
    let total = 0;
    for (const [path, size] of this.planned) {
      const got = this.loaded.get(path) ?? 0;
      loaded += got;
      total += Math.max(size, got);
    }
    return { loaded, total };
  }

  start(path: string): ByteProgress {
    const size = this.planned.get(path) ?? 0;
    this.onProgress?.({ status: 'initiate', file: path, loaded: 0, total: size, progress: 0, overall: this.overall() });
    // every chunk counts; the page hears of it at most ~10 times a second (done and ready always)
    const send = this.throttle.wrap((loaded, total) => this.onProgress?.({ status: 'download', file: path, loaded, total, progress: total ? (100 * loaded) / total : 0, overall: this.overall() }));
    return (loaded, total) => {
      this.loaded.set(path, loaded);
      send(loaded, total);
    };
  }

  done(path: string, bytes: number, cached: boolean): void {
    this.planned.set(path, bytes);
    this.loaded.set(path, bytes);
    this.onProgress?.({ status: 'done', file: path, loaded: bytes, total: bytes, progress: 100, cached, overall: this.overall() });
  }

  /** A file's download was given up (its cache write failed): its bytes no longer count as loaded. */
  dropped(path: string): void {
    this.loaded.delete(path);
  }

  ready(bytes: number): void {
    this.onProgress?.({ status: 'ready', loaded: bytes, total: bytes, progress: 100, overall: this.overall() });
  }
}

/** The export contract's inputs and outputs per component, with the element types the engine can feed and read. */
const FLOATS = ['float32', 'float16'];
const CONTRACT: Record<string, { inputs: Record<string, string[]>; outputs: Record<string, string[]> }> = {
  transformer: {
    inputs: { hidden_states: FLOATS, encoder_hidden_states: FLOATS, pooled_projections: FLOATS, timestep: FLOATS },
    outputs: { out_hidden_states: FLOATS },
  },
  vae_decoder: { inputs: { latent_sample: FLOATS }, outputs: { sample: FLOATS } },
  vae_encoder: { inputs: { sample: FLOATS }, outputs: { latent_parameters: FLOATS } },
  text_encoder: { inputs: { input_ids: ['int32', 'int64'] }, outputs: { text_embeds: FLOATS } },
  text_encoder_2: { inputs: { input_ids: ['int32', 'int64'] }, outputs: { text_embeds: FLOATS } },
  text_encoder_3: { inputs: { input_ids: ['int32', 'int64'] }, outputs: { last_hidden_state: FLOATS } },
};

/** A graph whose inputs or outputs the engine cannot feed or read is refused at load, naming the file and the tensor. */
function checkContract(c: ComponentSession, graphPath: string, roles: IoRoles): void {
  const contract = CONTRACT[c.name];
  if (!contract) return;
  for (const [kind, names] of [['input', contract.inputs], ['output', contract.outputs]] as const) {
    const present = kind === 'input' ? c.inputNames : c.outputNames;
    for (const [role, types] of Object.entries(names)) {
      const name = (kind === 'input' ? roles.inputs : roles.outputs)[role] ?? role;
      if (!present.includes(name)) throw new ModelLoadError(graphPath, `has no ${kind} ${name} (${kind}s: ${present.join(', ')})`);
      const type = kind === 'input' ? c.inputType(role) : c.outputType(role);
      if (!types.includes(type)) throw new ModelLoadError(graphPath, `${kind} ${name} is ${type}; the engine handles ${types.join(' or ')}`);
    }
  }
}

const summarize = (path: string, graph: Uint8Array): GraphSummary => {
  try {
    return summarizeGraph(graph);
  } catch (e) {
    throw new ModelLoadError(path, `not an ONNX model (${(e as Error).message})`);
  }
};

/** The family's name where shapes cannot tell a turbo from its base model. */
const turboName = (index: Record<string, unknown> | null, id: string) => `${String(index?._name_or_path ?? '')} ${id}`.toLowerCase().includes('turbo');

/** A fixed last axis of a graph output, or an error naming the file and the tensor. */
function lastDim(plan: ComponentPlan, output: string, why: string): number {
  const io = plan.io.find((v) => v.kind === 'output' && v.name === output);
  const d = io?.dims[io.dims.length - 1];
  if (typeof d !== 'number' || d <= 0) throw new ModelLoadError(plan.graphPath, `output ${output} has no fixed width, and ${why}`);
  return d;
}

/**
 * Finds the model in its source (model-layout.ts), reads configs, small
 * graphs (large inline ones are streamed, weights skipped) and every weight
 * file's size; decides the attention chunks and checks the memory budget.
 * Downloads no weights stored apart from their graphs.
 */
export async function planModel(files: ModelFiles, opts: Omit<LoadOptions, 'ort'>, progress = new LoadProgress(opts.onProgress), readTracked?: (path: string) => Promise<Uint8Array>): Promise<ModelPlan> {
  const { backend } = opts;
  const fit = defaultDeviceFit(backend, opts.fit);
  const read = readTracked ?? ((path: string) => files.read(path));
  const readMax = opts.planReadMaxBytes ?? PLAN_GRAPH_MAX_BYTES;

  const fileIndex = await FileIndex.open(files);
  const found = await findLayout(files, fileIndex, backend, fit.features ?? []);
  const at = (path: string) => (found.root ? `${found.root}/${path}` : path);
  const configSources: Record<string, string> = {};
  const config = async (path: string, instead: string) => {
    const json = await optionalJson(files, fileIndex, at(path));
    configSources[path] = json ? 'file' : instead;
    return json;
  };

  const index = await config('model_index.json', 'absent: components found by their folders');
  if (index && !String(index._class_name ?? '').startsWith('StableDiffusion3')) {
    throw new ModelLoadError(at('model_index.json'), `expected a StableDiffusion3 pipeline, found ${JSON.stringify(index._class_name)}`);
  }
  for (const required of ['text_encoder', 'text_encoder_2']) {
    if (index && !declared(index, required)) throw new ModelLoadError(at('model_index.json'), `component ${required} is missing`);
  }
  const withT5 = !opts.skipT5 && (!index || declared(index, 'text_encoder_3')) && (await fileIndex.exists(at('text_encoder_3/model.onnx')));
  const t5MaxLength = Math.min(opts.t5MaxLength ?? 256, 512);

  /** The whole graph when small, else its skeleton streamed past its weights (graph-stream.ts). */
  const readGraph = async (graphPath: string, graphSize: number): Promise<{ graph: Uint8Array | null; skeleton: Uint8Array }> => {
    if (graphSize <= readMax) {
      const graph = await read(graphPath);
      return { graph, skeleton: graph };
    }
    const chunks = files.blob ? blobChunks(await files.blob(graphPath, progress.start(graphPath))) : files.stream?.(graphPath, progress.start(graphPath));
    if (!chunks) {
      // a source that can only read whole files: keep what was read for the session
      const graph = await read(graphPath);
      return { graph, skeleton: graph };
    }
    try {
      return { graph: null, skeleton: await graphSkeletonFromStream(chunks) };
    } catch (e) {
      if (e instanceof ModelLoadError) throw e;
      throw new ModelLoadError(graphPath, `not an ONNX model (${(e as Error).message})`);
    }
  };

  /** Sizes of a component's files; its graph (or skeleton) is read now for external data, attention, inputs and outputs. */
  const planComponent = async (role: string, folder: string): Promise<ComponentPlan> => {
    const graphPath = `${folder}/model.onnx`;
    const graphSize = await fileIndex.size(graphPath);
    if (graphSize === null) throw new ModelLoadError(graphPath, 'the file is missing (HTTP 404 or not in the folder)');
    progress.plan(graphPath, graphSize);
    const { graph, skeleton } = await readGraph(graphPath, graphSize);
    const summary = summarize(graphPath, skeleton);
    checkHalfPrecision(graphPath, summary, backend, fit);
    checkOps(graphPath, skeleton, backend);
    // an inline graph is one file the runtime must take whole
    if (!summary.externalLocations.length) checkFileSizes([{ path: graphPath, size: graphSize }], fit);
    const data = await sizeExternalData(files, folder, summary.externalLocations, progress, fileIndex, graphPath);
    checkFileSizes(data, fit);
    const io = graphIoTypes(skeleton);
    const names = (kind: 'input' | 'output') => io.filter((v) => v.kind === kind).map((v) => v.name);
    return {
      role,
      folder,
      graphPath,
      graphSize,
      graph,
      summary,
      data,
      io,
      roles: matchRoles(role, graphPath, names('input'), names('output')),
      shapes: role === 'transformer' ? transformerShapes(skeleton) : null,
      encoder: null,
      attentionSites: role === 'transformer' || role.startsWith('vae_') ? findAttention(skeleton).length : 0,
      chunks: 1,
      lowered: opsToLower(skeleton, backend),
    };
  };

  // the VAE encoder is optional: without it the model does text to image only
  const withEncoder = await fileIndex.exists(at('vae_encoder/model.onnx'));
  const roles = ['text_encoder', 'text_encoder_2', ...(withT5 ? ['text_encoder_3'] : []), 'transformer', 'vae_decoder', ...(withEncoder ? ['vae_encoder'] : [])];
  const components = new Map<string, ComponentPlan>();
  for (const role of roles) components.set(role, await planComponent(role, at(role === 'transformer' ? found.transformerFolder : role)));
  const transformer = components.get('transformer')!;
  const vae = components.get('vae_decoder')!;
  const vaeEncoder = components.get('vae_encoder') ?? null;

  // the transformer's config, or its family's published one, told apart and checked by the graph's own shapes
  const shapes = transformer.shapes!;
  const shapeFamily = familyFromShapes(shapes);
  const transformerConfigPath = `${found.transformerFolder}/config.json`;
  let transformerJson = await config(transformerConfigPath, shapeFamily ? `${shapeFamily.family} defaults (the graph shows ${describeShapes(shapes)})` : 'absent');
  if (!transformerJson) {
    if (!shapeFamily) {
      throw new ModelLoadError(at(transformerConfigPath), `it is missing or empty, and the transformer graph's shapes (${describeShapes(shapes)}) match no published family (sd3-medium, sd3.5-medium, sd3.5-large): add the transformer's config.json`);
    }
    transformerJson = shapeFamily.transformer;
  }
  const transformerConfig = parseTransformerConfig(transformerJson);
  const mismatch = [
    ['num_layers', transformerConfig.numLayers, shapes.depth, 'transformer blocks'],
    ['hidden size (num_attention_heads × attention_head_dim)', transformerConfig.hiddenSize, shapes.hiddenSize, 'as hidden size'],
    ['patch_size', transformerConfig.patchSize, shapes.patchSize, 'as patch size'],
    ['pos_embed_max_size', transformerConfig.posEmbedMaxSize, shapes.posEmbedMaxSize, 'as positional table side'],
  ].find(([, said, shown]) => shown !== undefined && said !== shown);
  if (mismatch) throw new ModelLoadError(at(transformerConfigPath), `says ${mismatch[0]} ${mismatch[1]}, but the graph has ${mismatch[2]} ${mismatch[3]}`);

  const vaeJson = (await config('vae_decoder/config.json', 'SD3 VAE defaults (every SD3 and SD3.5 checkpoint shares them)')) ?? SD3_VAE;
  const vaeConfig = parseVaeConfig(vaeJson);
  const latentInput = vae.io.find((v) => v.kind === 'input' && v.name === vae.roles.inputs.latent_sample);
  if (typeof latentInput?.dims[1] === 'number' && latentInput.dims[1] !== vaeConfig.latentChannels) {
    throw new ModelLoadError(vae.graphPath, `takes ${latentInput.dims[1]} latent channels, but its config says ${vaeConfig.latentChannels}`);
  }
  if (vaeEncoder) {
    // the posterior's mean and log-variance (Optimum's latent_parameters), or latents already drawn from it
    const out = vaeEncoder.io.find((v) => v.kind === 'output' && v.name === vaeEncoder.roles.outputs.latent_parameters);
    const channels = out?.dims[1];
    if (typeof channels === 'number' && channels !== 2 * vaeConfig.latentChannels && channels !== vaeConfig.latentChannels) {
      throw new ModelLoadError(vaeEncoder.graphPath, `gives ${channels} channels; the engine reads ${2 * vaeConfig.latentChannels} (mean and log-variance) or ${vaeConfig.latentChannels} (latents)`);
    }
  }
  const schedulerJson = (await config('scheduler/scheduler_config.json', 'SD3 defaults (FlowMatchEulerDiscreteScheduler, shift 3.0: every SD3 and SD3.5 checkpoint)')) ?? { ...SD3_SCHEDULER };
  parseSchedulerConfig(schedulerJson);

  // text encoders: their configs, or what their graphs' outputs show
  for (const role of roles.filter((r) => r.startsWith('text_encoder'))) {
    const c = components.get(role)!;
    const json = await config(`${role}/config.json`, "the graph's outputs");
    const outputs = c.io.filter((v) => v.kind === 'output').map((v) => v.name);
    if (role === 'text_encoder_3') {
      // read by its role's name: the session maps it to the graph's
      c.encoder = { hiddenOutput: 'last_hidden_state', hiddenSize: typeof json?.d_model === 'number' ? json.d_model : lastDim(c, c.roles.outputs.last_hidden_state, 'text_encoder_3/config.json (d_model) is missing'), projectionSize: 0 };
      continue;
    }
    // CLIP's penultimate hidden state (hidden_states.0 is the embeddings, hidden_states.N the last layer)
    const layers = typeof json?.num_hidden_layers === 'number' ? json.num_hidden_layers : hiddenStateLayers(outputs);
    const hiddenOutput = `hidden_states.${layers - 1}`;
    if (!layers || !outputs.includes(hiddenOutput)) {
      throw new ModelLoadError(c.graphPath, `has no output ${layers ? hiddenOutput : 'hidden_states.N'} for the penultimate layer's hidden state (outputs: ${outputs.join(', ')})`);
    }
    const missing = `${role}/config.json is missing`;
    c.encoder = {
      hiddenOutput,
      hiddenSize: typeof json?.hidden_size === 'number' ? json.hidden_size : lastDim(c, hiddenOutput, missing),
      projectionSize: typeof json?.projection_dim === 'number' ? json.projection_dim : lastDim(c, c.roles.outputs.text_embeds, missing),
    };
  }
  const [clipL, clipG] = [components.get('text_encoder')!.encoder!, components.get('text_encoder_2')!.encoder!];
  if (clipL.projectionSize + clipG.projectionSize !== transformerConfig.pooledProjectionDim) {
    throw new ModelLoadError(at(transformerConfigPath), `pooled_projection_dim ${transformerConfig.pooledProjectionDim} != CLIP projections ${clipL.projectionSize} + ${clipG.projectionSize}`);
  }

  let { family, defaults } = familyDefaults(index ?? {}, transformerJson, transformerConfig, vaeConfig);
  if (shapeFamily && !(index?.sd3_webgpu_defaults)) {
    const turbo = shapeFamily.family === 'sd3.5-large' && turboName(index, files.id);
    family = turbo ? 'sd3.5-large-turbo' : shapeFamily.family;
    defaults = { ...defaults, steps: turbo ? 4 : shapeFamily.steps, guidance: turbo ? 0 : shapeFamily.guidance };
  }
  const sizeMultiple = transformerConfig.patchSize * vaeConfig.scaleFactor;
  const limits = { minSize: sizeMultiple, maxSize: transformerConfig.posEmbedMaxSize * sizeMultiple, sizeMultiple };
  const weightBytes = [...components.values()].reduce((a, p) => a + residentFactor(backend, p.summary) * (p.graphSize + p.data.reduce((b, d) => b + d.size, 0)), 0);

  // activations are as wide as the weights: fp16 graphs compute in fp16 (an fp16-I/O graph over fp32 weights computes in fp32)
  const bytesOf = (c: ComponentPlan) => (c.summary?.halfPrecision ? 2 : 4);
  const dims: ModelDims = {
    transformer: transformerConfig,
    vae: vaeConfig,
    textTokens: CLIP_LENGTH + t5MaxLength,
    transformerBytes: bytesOf(transformer),
    vaeBytes: bytesOf(vae),
    transformerChunks: 1,
    vaeChunks: 1,
  };
  // cut attention so one row's scores at the model's default size stay small and within the adapter's buffers
  const target = Math.min(ATTENTION_CHUNK_TARGET_BYTES, fit.maxBufferBytes);
  if (transformer.attentionSites) transformer.chunks = dims.transformerChunks = attentionChunks(rowScoreBytes(dims, defaults.width, defaults.height), target);
  if (vae.attentionSites) {
    const latentPixels = (defaults.width / vaeConfig.scaleFactor) * (defaults.height / vaeConfig.scaleFactor);
    vae.chunks = dims.vaeChunks = attentionChunks(latentPixels * latentPixels * dims.vaeBytes, target);
  }
  // the encoder's mid-block attention is the decoder's, over the same latent pixels
  if (vaeEncoder?.attentionSites) vaeEncoder.chunks = dims.vaeChunks;
  // the form attention runs in: from the adapter's features and buffer limit, or forced by fit.attention
  // FlashAttention needs subgroups on the device the sessions run on: the engine's own device says what it has
  const deviceFeatures = (opts.webgpuDevice as { features?: Iterable<string> } | undefined)?.features;
  const attention = chooseAttentionForm({ backend, features: fit.features, deviceFeatures: deviceFeatures ? [...deviceFeatures] : undefined, subgroupMinSize: (opts.webgpuDevice as { adapterInfo?: { subgroupMinSize?: number } } | undefined)?.adapterInfo?.subgroupMinSize, maxBufferBytes: fit.maxBufferBytes, chunks: Math.max(dims.transformerChunks, dims.vaeChunks), headDim: transformerConfig.hiddenSize / transformerConfig.numHeads, force: fit.attention });
  for (const c of [transformer, vae, ...(vaeEncoder ? [vaeEncoder] : [])]) c.fuse = attention.form !== 'decomposed-chunked' && c.attentionSites > 0;
  if (attention.chunks === 1) {
    transformer.chunks = vae.chunks = dims.transformerChunks = dims.vaeChunks = 1;
    if (vaeEncoder) vaeEncoder.chunks = 1;
  }

  for (const t of ['tokenizer', 'tokenizer_2', ...(withT5 ? ['tokenizer_3'] : [])]) {
    configSources[`${t}/tokenizer_config.json`] = (await fileIndex.exists(at(`${t}/tokenizer_config.json`))) ? 'file' : t === 'tokenizer_3' ? 'T5 defaults' : 'CLIP defaults (bos/eos/pad, 77 tokens)';
  }
  const layout: ModelLayout = {
    ...found,
    configSources,
    shapeFamily: shapeFamily?.family ?? null,
    summary: [
      found.root ? `variant folder ${found.root} (${found.variantReason}; found: ${found.variants.join(', ')})` : `components at the root${found.variant ? ` (${found.variantReason})` : ''}`,
      `transformer in ${found.transformerFolder}/`,
      index ? 'model_index.json' : 'no model_index.json',
      configSources['scheduler/scheduler_config.json'] === 'file' ? 'scheduler config' : 'scheduler: SD3 defaults',
      shapeFamily ? `graph shapes: ${shapeFamily.family}` : `graph shapes: ${describeShapes(shapes)} (no published family)`,
      `files found by ${found.discovery}`,
    ].join('; '),
  };

  const budget: MemoryBudget = { memoryBytes: fit.memoryBytes, weightBytes, maxBufferBytes: fit.maxBufferBytes };
  checkModelFits(budget, requestFootprint(dims, limits.minSize, limits.minSize, 0), limits.minSize, defaults, backend, withT5);
  return { id: files.id, family, layout, backend, defaults, limits, index: index ?? {}, schedulerJson, transformerConfig, vaeConfig, withT5, t5MaxLength, components, dims, budget, fit, attention };
}

/**
 * How much memory a component's weights take per byte of file: native CPU has no fp16 matrix kernels on
 * most CPUs, so onnxruntime turns fp16 weights into fp32 at load (measured: a 5.5 GB fp16 model peaks at
 * 12 GB RSS on CPU); everywhere else the weights stay as stored.
 */
export const residentFactor = (backend: BackendName, summary: GraphSummary | null): number => (backend === 'cpu' && summary?.halfPrecision ? 2 : 1);

/** The operators lowered at load, per component that had any. */
const loweredOps = (plan: ModelPlan): Record<string, Record<string, number>> => Object.fromEntries([...plan.components].filter(([, c]) => Object.keys(c.lowered).length).map(([name, c]) => [name, c.lowered]));

async function sizeExternalData(files: ModelFiles, folder: string, locations: string[], progress: LoadProgress, index?: FileIndex, graphPath = folder): Promise<ComponentPlan['data']> {
  const data: ComponentPlan['data'] = [];
  // every source's external data is planned here: a location is refused before any file is looked at
  for (const location of locations) checkExternalLocation(graphPath, location);
  for (const location of locations) {
    const path = `${folder}/${location}`;
    const size = await (index ?? files).size(path);
    if (size === null) throw new ModelLoadError(path, `the graph's external data file is missing`);
    progress.plan(path, size);
    data.push({ location, path, size });
  }
  return data;
}

export async function loadModel(files: ModelFiles, opts: LoadOptions): Promise<LoadedModel> {
  const { ort, backend } = opts;
  const created: ComponentSession[] = [];
  const queue = deviceQueue(ort);
  const progress = new LoadProgress(opts.onProgress);
  const cachedPaths = files instanceof CachedModelFiles ? files.hits : undefined;

  /** Files this load downloaded into the cache before reading them: read back from there, but not "cached". */
  const storedNow = new Set<string>();
  const tracked = async <T extends Uint8Array | Blob>(path: string, get: (onProgress: ByteProgress) => Promise<T>): Promise<T> => {
    opts.signal?.throwIfAborted();
    const before = cachedPaths?.has(path) ?? false;
    const report = progress.start(path);
    // an abort stops a download at its next chunk: the stream ends and cancels its request
    const data = await get((loaded, total) => {
      opts.signal?.throwIfAborted();
      report(loaded, total);
    });
    progress.done(path, data instanceof Blob ? data.size : data.byteLength, !before && !storedNow.has(path) && (cachedPaths?.has(path) ?? false));
    return data;
  };
  // every file the sessions and tokenizers will read that planning has not, into the cache
  const storeFiles = async (plan: ModelPlan): Promise<void> => {
    const store = files.store?.bind(files);
    if (!store) return;
    const at = (path: string) => (plan.layout.root ? `${plan.layout.root}/${path}` : path);
    const tokenizerFiles = ['tokenizer', 'tokenizer_2', ...(plan.withT5 ? ['tokenizer_3'] : [])].flatMap((t) => [
      at(`${t}/tokenizer.json`),
      ...(plan.layout.configSources[`${t}/tokenizer_config.json`] === 'file' ? [at(`${t}/tokenizer_config.json`)] : []),
    ]);
    const sessionFiles = [...plan.components.values()].flatMap((c) => [...(c.graph ? [] : [c.graphPath]), ...c.data.map((d) => d.path)]);
    for (const path of [...tokenizerFiles, ...sessionFiles]) {
      opts.signal?.throwIfAborted();
      const before = cachedPaths?.has(path) ?? false;
      const report = progress.start(path);
      const size = await store(path, (loaded, total) => {
        opts.signal?.throwIfAborted();
        report(loaded, total);
      });
      // the cache refused the file (quota…): the sessions download it and the rest as they read them
      if (size === null) return progress.dropped(path);
      const fromCache = cachedPaths?.has(path) ?? false;
      if (!fromCache) storedNow.add(path);
      progress.done(path, size, fromCache && !before);
    }
  };
  const readTracked = (path: string) => tracked(path, (p) => files.read(path, p));
  // external data as a Blob where the source has one and the runtime streams it; bytes otherwise
  const dataTracked = (path: string) => (opts.streamExternalData && files.blob ? tracked(path, (p) => files.blob!(path, p)) : readTracked(path));

  /** A file on disk for native onnxruntime (downloaded into the Node cache first), with its progress; null when the source has none. */
  const localTracked = async (path: string): Promise<LocalFile | null> => {
    opts.signal?.throwIfAborted();
    const before = cachedPaths?.has(path) ?? false;
    const report = progress.start(path);
    const file = await files.localFile!(path, (loaded, total) => {
      opts.signal?.throwIfAborted();
      report(loaded, total);
    });
    if (!file) {
      progress.dropped(path);
      return null;
    }
    progress.done(path, file.size, !before && !storedNow.has(path) && (cachedPaths?.has(path) ?? false));
    return file;
  };

  /**
   * What native onnxruntime is handed: the graph's path where it needs no rewrite and its external data lies
   * beside it under the names it records (a folder); else the graph's bytes (rewritten) with the folder its
   * external data lies in, renamed to the names there (the Node cache). Null when the files are not on disk.
   */
  const nativeSource = async (plan: ComponentPlan, rewrites: boolean): Promise<{ path: string; bytes: number } | { graph: Uint8Array; folder: string | null; bytes: number } | null> => {
    if (!opts.native || !files.localFile) return null;
    // a graph read while planning was reported then
    const graphFile = plan.graph ? await files.localFile(plan.graphPath) : await localTracked(plan.graphPath);
    if (!graphFile) return null;
    const data: LocalFile[] = [];
    for (const d of plan.data) {
      const f = await localTracked(d.path);
      if (!f) return null;
      data.push(f);
    }
    const bytes = graphFile.size + data.reduce((a, f) => a + f.size, 0);
    const beside = data.every((f, i) => f.folder === graphFile.folder && f.name === plan.data[i].location);
    if (!rewrites && beside) return { path: graphFile.path, bytes };
    const folder = data[0]?.folder ?? null;
    if (data.some((f) => f.folder !== folder)) return null;
    let graph = plan.graph ?? (await files.read(plan.graphPath));
    if (!beside) graph = relocateExternalData(graph, new Map(plan.data.map((d, i) => [d.location, data[i].name])));
    return { graph, folder, bytes };
  };

  /** The graph as this backend runs it: operators it lacks lowered, attention fused or chunked as planned. */
  const rewrite = (plan: ComponentPlan, graph: Uint8Array): Uint8Array => {
    graph = lowerForWeb(graph, backend).model;
    if (plan.fuse) graph = fuseAttention(graph).model;
    if (plan.chunks > 1) graph = chunkAttention(graph, plan.chunks).model;
    return graph;
  };

  const createSession = async (plan: ComponentPlan, fit: DeviceFit, gpuOutputs: readonly string[] = []): Promise<ComponentSession> => {
    const rewrites = plan.fuse === true || plan.chunks > 1 || Object.keys(plan.lowered).length > 0;
    const onDisk = await nativeSource(plan, rewrites);
    let summary = plan.summary;
    let graph: Uint8Array | string;
    let bytes: number;
    const externalData: { path: string; data: Uint8Array | Blob }[] = [];
    let externalFolder: string | null = null;
    if (onDisk && 'path' in onDisk) {
      // onnxruntime reads the graph and its external data itself
      graph = onDisk.path;
      bytes = onDisk.bytes;
    } else if (onDisk) {
      graph = rewrite(plan, onDisk.graph);
      externalFolder = onDisk.folder;
      bytes = onDisk.bytes;
    } else {
      const read = plan.graph ?? (await readTracked(plan.graphPath));
      if (!summary) {
        summary = summarize(plan.graphPath, read);
        checkHalfPrecision(plan.graphPath, summary, backend, fit);
      }
      graph = rewrite(plan, read);
      for (const d of plan.data) externalData.push({ path: d.location, data: await dataTracked(d.path) });
      // the bytes really read: a server may leave Content-Length out of its HEAD answers (compressed responses)
      bytes = read.byteLength + externalData.reduce((a, d) => a + (d.data instanceof Blob ? d.data.size : d.data.byteLength), 0);
    }
    const halfIO = summary?.halfIO ?? false;
    // outputs left on the GPU: only float32 ones (the engine converts float16 on the host), on our device
    const gpuOnly = !halfIO && backend === 'webgpu' && opts.webgpuDevice ? gpuOutputs.map((role) => plan.roles.outputs[role] ?? role) : [];
    const native = opts.native?.sessionOptions ?? {};
    const nativeExtra = (native.extra ?? {}) as Record<string, unknown>;
    let s;
    try {
      s = await queue.run(
        () =>
          ort.InferenceSession.create(graph as Uint8Array, {
            // our device, so that its limits, its loss and its buffers are the ones the engine sees
            executionProviders: [backend === 'webgpu' && opts.webgpuDevice ? ({ name: 'webgpu', device: opts.webgpuDevice } as { name: 'webgpu' }) : backend],
            graphOptimizationLevel: 'all',
            externalData: externalData.length ? externalData : undefined,
            ...(gpuOnly.length ? { preferredOutputLocation: Object.fromEntries(gpuOnly.map((n) => [n, 'gpu-buffer' as const])) } : {}),
            ...native,
            // a graph handed over as bytes finds its external data in this folder (onnxruntime's session config key)
            ...(externalFolder ? { extra: { ...nativeExtra, session: { ...((nativeExtra.session as object) ?? {}), model_external_initializers_file_folder_path: externalFolder } } } : {}),
          }),
        `create ${plan.folder}`,
      );
    } catch (e) {
      throw new ModelLoadError(plan.graphPath, `onnxruntime could not create a session (${(e as Error).message ?? e})`);
    }
    const c = new ComponentSession(plan.role, s, ort, bytes * residentFactor(backend, summary), queue, halfIO);
    c.setRoles(plan.roles);
    c.gpuOutputs = gpuOnly;
    created.push(c);
    checkContract(c, plan.graphPath, plan.roles);
    opts.signal?.throwIfAborted();
    return c;
  };

  try {
    const plan = await planModel(files, opts, progress, readTracked);
    await opts.beforeSessions?.(plan, () => storeFiles(plan));
    opts.signal?.throwIfAborted();
    const { components, transformerConfig, vaeConfig, defaults } = plan;
    const at = (path: string) => (plan.layout.root ? `${plan.layout.root}/${path}` : path);

    const textEncoder = async (role: string, tokenizerFolder: string): Promise<TextEncoder> => {
      const tokenizerJson = await readJson(files, at(`${tokenizerFolder}/tokenizer.json`));
      // Amuse ships tokenizer folders without tokenizer_config.json: CLIP's or T5's defaults then
      const tokenizerConfig = plan.layout.configSources[`${tokenizerFolder}/tokenizer_config.json`] === 'file' ? await readJson(files, at(`${tokenizerFolder}/tokenizer_config.json`)) : tokenizerDefaults(tokenizerFolder, tokenizerJson);
      const tokenizer = new PromptTokenizer(tokenizerJson, tokenizerConfig);
      const c = components.get(role)!;
      const s = await createSession(c, plan.fit);
      return { session: s, tokenizer, ...c.encoder! };
    };

    const clipL = await textEncoder('text_encoder', 'tokenizer');
    const clipG = await textEncoder('text_encoder_2', 'tokenizer_2');
    const t5 = plan.withT5 ? await textEncoder('text_encoder_3', 'tokenizer_3') : null;
    const transformer = await createSession(components.get('transformer')!, plan.fit, opts.deviceResident ? ['out_hidden_states'] : []);
    const vaeDecoder = await createSession(components.get('vae_decoder')!, plan.fit);
    const encoderPlan = components.get('vae_encoder');
    const vaeEncoder = encoderPlan ? await createSession(encoderPlan, plan.fit) : null;

    const weightBytes = created.reduce((a, c) => a + c.weightBytes, 0);
    const budget = { ...plan.budget, weightBytes };
    const largest = largestFittingSize(budget, plan.dims, plan.limits, defaults.width, defaults.height, defaults.guidance);
    const info: ModelInfo = {
      id: files.id,
      family: plan.family,
      backend,
      defaults,
      limits: plan.limits,
      hasT5: t5 !== null,
      imageInput: vaeEncoder !== null,
      weightBytes,
      memoryBytes: budget.memoryBytes,
      largestSize: largest?.width ?? 0,
      attentionChunks: { transformer: plan.dims.transformerChunks, vae: plan.dims.vaeChunks },
      attention: { form: plan.attention.form, chunks: plan.attention.chunks, reason: plan.attention.reason },
      layout: { root: plan.layout.root, variant: plan.layout.variant, transformerFolder: plan.layout.transformerFolder, configSources: plan.layout.configSources, summary: plan.layout.summary, lowered: loweredOps(plan) },
    };
    progress.ready(weightBytes);
    return {
      info,
      clipL,
      clipG,
      t5,
      t5MaxLength: plan.t5MaxLength,
      transformer,
      vaeDecoder,
      vaeEncoder,
      transformerConfig,
      vaeConfig,
      scheduler: new FlowMatchEulerScheduler(parseSchedulerConfig(plan.schedulerJson)),
      dims: plan.dims,
      budget,
      // the VAE then takes its latents from the GPU too, so both must have float32 I/O
      deviceResident: transformer.gpuOutputs.length > 0 && !vaeDecoder.halfIO,
      release: async () => {
        await Promise.all(created.map((c) => c.release()));
      },
    };
  } catch (e) {
    // a failed load leaves nothing behind
    await Promise.all(created.map((c) => c.release().catch(() => undefined)));
    throw e;
  }
}
