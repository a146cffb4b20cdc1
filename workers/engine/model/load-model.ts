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
import { ComponentSession, type Ort } from './component-session.ts';
import { checkFileSizes, checkHalfPrecision, checkModelFits, defaultDeviceFit, type DeviceFit } from './device-fit.ts';
import { CachedModelFiles } from './file-cache.ts';
import { summarizeGraph, type GraphSummary } from './graph-info.ts';
import type { ByteProgress, ModelFiles } from './model-files.ts';
import { CLIP_LENGTH, familyDefaults, parseTransformerConfig, parseVaeConfig, penultimateOutput, type TransformerConfig, type VaeConfig } from './model-config.ts';
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
  /** Aborts the load: downloads stop at their next chunk, sessions made so far are released. */
  signal?: AbortSignal;
}

async function readJson(files: ModelFiles, path: string): Promise<Record<string, unknown>> {
  const bytes = await files.read(path);
  try {
    const v = JSON.parse(new TextDecoder().decode(bytes));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v;
  } catch (e) {
    throw new ModelLoadError(path, `not valid JSON (${(e as Error).message})`);
  }
}

/** Whether model_index.json declares a component (absent or [null, null] means no). */
const declared = (index: Record<string, unknown>, name: string) => Array.isArray(index[name]) && (index[name] as unknown[])[0] !== null;

/** Graphs up to this size are read while planning (external-data graphs are small; larger ones carry their weights inline). */
const PLAN_GRAPH_MAX_BYTES = 64 * 1024 ** 2;
/** One row's attention scores are cut into query chunks of at most this much. */
export const ATTENTION_CHUNK_TARGET_BYTES = 128 * 1024 ** 2;

export interface ComponentPlan {
  folder: string;
  graphPath: string;
  graphSize: number;
  /** Read while planning when small; else read at load time. */
  graph: Uint8Array | null;
  summary: GraphSummary | null;
  /** External data files: their recorded location and size. */
  data: { location: string; path: string; size: number }[];
  /** Attention sites the chunk rewrite recognises (transformer and VAE decoder). */
  attentionSites: number;
  /** Query chunks the loader will cut each attention into (1: unchanged). */
  chunks: number;
}

/** Everything known before any weight is downloaded. */
export interface ModelPlan {
  id: string;
  family: string;
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
}

/** Download progress per file and over the whole model, in bytes. */
class LoadProgress {
  private readonly planned = new Map<string, number>();
  private readonly loaded = new Map<string, number>();

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
    return (loaded, total) => {
      this.loaded.set(path, loaded);
      this.onProgress?.({ status: 'download', file: path, loaded, total, progress: total ? (100 * loaded) / total : 0, overall: this.overall() });
    };
  }

  done(path: string, bytes: number, cached: boolean): void {
    this.planned.set(path, bytes);
    this.loaded.set(path, bytes);
    this.onProgress?.({ status: 'done', file: path, loaded: bytes, total: bytes, progress: 100, cached, overall: this.overall() });
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
  text_encoder: { inputs: { input_ids: ['int32', 'int64'] }, outputs: { text_embeds: FLOATS } },
  text_encoder_2: { inputs: { input_ids: ['int32', 'int64'] }, outputs: { text_embeds: FLOATS } },
  text_encoder_3: { inputs: { input_ids: ['int32', 'int64'] }, outputs: { last_hidden_state: FLOATS } },
};

/** A graph whose inputs or outputs the engine cannot feed or read is refused at load, naming the file and the tensor. */
function checkContract(c: ComponentSession, graphPath: string): void {
  const contract = CONTRACT[c.name];
  if (!contract) return;
  for (const [kind, names] of [['input', contract.inputs], ['output', contract.outputs]] as const) {
    const present = kind === 'input' ? c.inputNames : c.outputNames;
    for (const [name, types] of Object.entries(names)) {
      if (!present.includes(name)) throw new ModelLoadError(graphPath, `has no ${kind} ${name} (${kind}s: ${present.join(', ')}); SD3 exports in Optimum's layout name it so`);
      const type = kind === 'input' ? c.inputType(name) : c.outputType(name);
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

/**
 * Reads configs, small graphs and every weight file's size; decides the
 * attention chunks and checks the memory budget. Downloads no weights.
 */
export async function planModel(files: ModelFiles, opts: Omit<LoadOptions, 'ort'>, progress = new LoadProgress(opts.onProgress), readTracked?: (path: string) => Promise<Uint8Array>): Promise<ModelPlan> {
  const { backend } = opts;
  const fit = defaultDeviceFit(backend, opts.fit);
  const read = readTracked ?? ((path: string) => files.read(path));

  const index = await readJson(files, 'model_index.json');
  if (!String(index._class_name ?? '').startsWith('StableDiffusion3')) {
    throw new ModelLoadError('model_index.json', `expected a StableDiffusion3 pipeline, found ${JSON.stringify(index._class_name)}`);
  }
  for (const required of ['text_encoder', 'text_encoder_2', 'transformer']) {
    if (!declared(index, required)) throw new ModelLoadError('model_index.json', `component ${required} is missing`);
  }
  const schedulerJson = await readJson(files, 'scheduler/scheduler_config.json');
  parseSchedulerConfig(schedulerJson);
  const transformerJson = await readJson(files, 'transformer/config.json');
  const transformerConfig = parseTransformerConfig(transformerJson);
  const vaeConfig = parseVaeConfig(await readJson(files, 'vae_decoder/config.json'));
  const { family, defaults } = familyDefaults(index, transformerJson, transformerConfig, vaeConfig);
  const withT5 = !opts.skipT5 && declared(index, 'text_encoder_3') && (await files.exists('text_encoder_3/model.onnx'));
  const t5MaxLength = Math.min(opts.t5MaxLength ?? 256, 512);
  const sizeMultiple = transformerConfig.patchSize * vaeConfig.scaleFactor;
  const limits = { minSize: sizeMultiple, maxSize: transformerConfig.posEmbedMaxSize * sizeMultiple, sizeMultiple };

  /** Sizes of a component's files; small graphs are read now to find their external data and attention. */
  const planComponent = async (folder: string): Promise<ComponentPlan> => {
    const graphPath = `${folder}/model.onnx`;
    const graphSize = await files.size(graphPath);
    if (graphSize === null) throw new ModelLoadError(graphPath, 'the file is missing (HTTP 404 or not in the folder)');
    progress.plan(graphPath, graphSize);
    const graph = graphSize <= PLAN_GRAPH_MAX_BYTES ? await read(graphPath) : null;
    const plan: ComponentPlan = { folder, graphPath, graphSize, graph, summary: null, data: [], attentionSites: 0, chunks: 1 };
    if (graph) {
      plan.summary = summarize(graphPath, graph);
      checkHalfPrecision(graphPath, plan.summary, backend, fit);
      plan.data = await sizeExternalData(files, folder, plan.summary.externalLocations, progress);
      checkFileSizes(plan.data, fit);
      if (folder === 'transformer' || folder === 'vae_decoder') plan.attentionSites = findAttention(graph).length;
    } else {
      // an inline graph over the limit is one file the runtime must take whole
      checkFileSizes([{ path: graphPath, size: graphSize }], fit);
    }
    return plan;
  };

  const folders = ['text_encoder', 'text_encoder_2', ...(withT5 ? ['text_encoder_3'] : []), 'transformer', 'vae_decoder'];
  const components = new Map<string, ComponentPlan>();
  for (const folder of folders) components.set(folder, await planComponent(folder));
  const weightBytes = [...components.values()].reduce((a, p) => a + p.graphSize + p.data.reduce((b, d) => b + d.size, 0), 0);

  // activations are as wide as the weights: fp16 graphs compute in fp16 (an fp16-I/O graph over fp32 weights computes in fp32)
  const bytesOf = (c: ComponentPlan) => (c.summary?.halfPrecision ? 2 : 4);
  const transformer = components.get('transformer')!;
  const vae = components.get('vae_decoder')!;
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

  const budget: MemoryBudget = { memoryBytes: fit.memoryBytes, weightBytes, maxBufferBytes: fit.maxBufferBytes };
  checkModelFits(budget, requestFootprint(dims, limits.minSize, limits.minSize, 0), limits.minSize, defaults, backend, withT5);
  return { id: files.id, family, backend, defaults, limits, index, schedulerJson, transformerConfig, vaeConfig, withT5, t5MaxLength, components, dims, budget, fit };
}

async function sizeExternalData(files: ModelFiles, folder: string, locations: string[], progress: LoadProgress): Promise<ComponentPlan['data']> {
  const data: ComponentPlan['data'] = [];
  for (const location of locations) {
    const path = `${folder}/${location}`;
    const size = await files.size(path);
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

  const tracked = async <T extends Uint8Array | Blob>(path: string, get: (onProgress: ByteProgress) => Promise<T>): Promise<T> => {
    opts.signal?.throwIfAborted();
    const before = cachedPaths?.has(path) ?? false;
    const report = progress.start(path);
    // an abort stops a download at its next chunk: the stream ends and cancels its request
    const data = await get((loaded, total) => {
      opts.signal?.throwIfAborted();
      report(loaded, total);
    });
    progress.done(path, data instanceof Blob ? data.size : data.byteLength, !before && (cachedPaths?.has(path) ?? false));
    return data;
  };
  const readTracked = (path: string) => tracked(path, (p) => files.read(path, p));
  // external data as a Blob where the source has one and the runtime streams it; bytes otherwise
  const dataTracked = (path: string) => (opts.streamExternalData && files.blob ? tracked(path, (p) => files.blob!(path, p)) : readTracked(path));

  const createSession = async (plan: ComponentPlan, fit: DeviceFit, gpuOutputs: readonly string[] = []): Promise<ComponentSession> => {
    let graph = plan.graph ?? (await readTracked(plan.graphPath));
    let summary = plan.summary;
    if (!plan.graph) {
      // a large inline graph is summarised only now: its fp16 weights and any external data it also has
      summary = summarize(plan.graphPath, graph);
      checkHalfPrecision(plan.graphPath, summary, backend, fit);
      plan.data = await sizeExternalData(files, plan.folder, summary.externalLocations, progress);
      checkFileSizes(plan.data, fit);
    }
    const graphBytes = graph.byteLength;
    if (plan.chunks > 1) graph = chunkAttention(graph, plan.chunks).model;
    // outputs left on the GPU: only float32 ones (the engine converts float16 on the host), on our device
    const gpuOnly = summary && !summary.halfIO && backend === 'webgpu' && opts.webgpuDevice ? gpuOutputs : [];
    const externalData: { path: string; data: Uint8Array | Blob }[] = [];
    for (const d of plan.data) externalData.push({ path: d.location, data: await dataTracked(d.path) });
    let s;
    try {
      s = await queue.run(
        () =>
          ort.InferenceSession.create(graph, {
            // our device, so that its limits, its loss and its buffers are the ones the engine sees
            executionProviders: [backend === 'webgpu' && opts.webgpuDevice ? ({ name: 'webgpu', device: opts.webgpuDevice } as { name: 'webgpu' }) : backend],
            graphOptimizationLevel: 'all',
            externalData: externalData.length ? externalData : undefined,
            ...(gpuOnly.length ? { preferredOutputLocation: Object.fromEntries(gpuOnly.map((n) => [n, 'gpu-buffer' as const])) } : {}),
          }),
        `create ${plan.folder}`,
      );
    } catch (e) {
      throw new ModelLoadError(plan.graphPath, `onnxruntime could not create a session (${(e as Error).message ?? e})`);
    }
    // the bytes really read: a server may leave Content-Length out of its HEAD answers (compressed responses)
    const bytes = graphBytes + externalData.reduce((a, d) => a + (d.data instanceof Blob ? d.data.size : d.data.byteLength), 0);
    const c = new ComponentSession(plan.folder, s, ort, bytes, queue, summary?.halfIO ?? true);
    c.gpuOutputs = gpuOnly;
    created.push(c);
    checkContract(c, plan.graphPath);
    opts.signal?.throwIfAborted();
    return c;
  };

  try {
    const plan = await planModel(files, opts, progress, readTracked);
    const { components, transformerConfig, vaeConfig, defaults } = plan;

    const textEncoder = async (folder: string, tokenizerFolder: string): Promise<TextEncoder> => {
      const config = await readJson(files, `${folder}/config.json`);
      const tokenizer = new PromptTokenizer(await readJson(files, `${tokenizerFolder}/tokenizer.json`), await readJson(files, `${tokenizerFolder}/tokenizer_config.json`));
      const s = await createSession(components.get(folder)!, plan.fit);
      const isT5 = folder === 'text_encoder_3';
      const hiddenOutput = isT5 ? 'last_hidden_state' : penultimateOutput(config, folder);
      if (!s.outputNames.includes(hiddenOutput)) throw new ModelLoadError(`${folder}/model.onnx`, `has no output ${hiddenOutput} (outputs: ${s.outputNames.join(', ')})`);
      const hiddenSize = Number(isT5 ? config.d_model : config.hidden_size);
      return { session: s, tokenizer, hiddenOutput, hiddenSize, projectionSize: Number(config.projection_dim ?? 0) };
    };

    const clipL = await textEncoder('text_encoder', 'tokenizer');
    const clipG = await textEncoder('text_encoder_2', 'tokenizer_2');
    const t5 = plan.withT5 ? await textEncoder('text_encoder_3', 'tokenizer_3') : null;
    if (clipL.projectionSize + clipG.projectionSize !== transformerConfig.pooledProjectionDim) {
      throw new ModelLoadError('transformer/config.json', `pooled_projection_dim ${transformerConfig.pooledProjectionDim} != CLIP projections ${clipL.projectionSize} + ${clipG.projectionSize}`);
    }
    const transformer = await createSession(components.get('transformer')!, plan.fit, opts.deviceResident ? ['out_hidden_states'] : []);
    const vaeDecoder = await createSession(components.get('vae_decoder')!, plan.fit);

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
      weightBytes,
      memoryBytes: budget.memoryBytes,
      largestSize: largest?.width ?? 0,
      attentionChunks: { transformer: plan.dims.transformerChunks, vae: plan.dims.vaeChunks },
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
