// Loads a model folder once: configs, tokenizers, and one session per component.
// It plans first (configs, small graphs and every file's size) so a model that
// cannot fit this device is refused before its weights are downloaded, and so
// download progress has a true total from the first byte.
import type { BackendName, ModelInfo, ProgressCallback } from '../api/types.ts';
import { ModelLoadError } from '../errors.ts';
import { CLIP_LENGTH } from '../sd3/encode-prompt.ts';
import { FlowMatchEulerScheduler, parseSchedulerConfig } from '../scheduler/flow-match-euler.ts';
import { ComponentSession, type Ort } from './component-session.ts';
import { deviceQueue } from './run-queue.ts';
import { checkFileSizes, checkHalfPrecision, checkModelFits, defaultDeviceFit, estimateNeeds, type DeviceFit, type ModelNeeds } from './device-fit.ts';
import { CachedModelFiles } from './file-cache.ts';
import { hasHalfPrecisionWeights, summarizeGraph, type GraphSummary } from './graph-info.ts';
import type { ByteProgress, ModelFiles } from './model-files.ts';
import { familyDefaults, parseTransformerConfig, parseVaeConfig, penultimateOutput, type TransformerConfig, type VaeConfig } from './model-config.ts';
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
  /** Estimated memory: weights plus one default request. */
  needs: ModelNeeds;
  transformer: ComponentSession;
  vaeDecoder: ComponentSession;
  transformerConfig: TransformerConfig;
  vaeConfig: VaeConfig;
  scheduler: FlowMatchEulerScheduler;
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

/** Graphs up to this size are read while planning (external-data graphs are small). */
const PLAN_GRAPH_MAX_BYTES = 64 * 1024 ** 2;

interface ComponentPlan {
  folder: string;
  graphPath: string;
  graphSize: number;
  /** Read while planning when small; else read at load time. */
  graph: Uint8Array | null;
  /** External data files: their recorded location and size. */
  data: { location: string; path: string; size: number }[];
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

export async function loadModel(files: ModelFiles, opts: LoadOptions): Promise<LoadedModel> {
  const { ort, backend } = opts;
  const fit = defaultDeviceFit(backend, opts.fit);
  const created: ComponentSession[] = [];
  const queue = deviceQueue(ort);
  const progress = new LoadProgress(opts.onProgress);
  const cachedPaths = files instanceof CachedModelFiles ? files.hits : undefined;

  const readTracked = async (path: string): Promise<Uint8Array> => {
    const before = cachedPaths?.has(path) ?? false;
    const bytes = await files.read(path, progress.start(path));
    progress.done(path, bytes.byteLength, !before && (cachedPaths?.has(path) ?? false));
    return bytes;
  };

  /** Sizes of a component's files; small graphs are read now to find their external data. */
  const planComponent = async (folder: string): Promise<ComponentPlan> => {
    const graphPath = `${folder}/model.onnx`;
    const graphSize = await files.size(graphPath);
    if (graphSize === null) throw new ModelLoadError(graphPath, 'the file is missing (HTTP 404 or not in the folder)');
    progress.plan(graphPath, graphSize);
    checkFileSizes([{ path: graphPath, size: graphSize }], fit);
    const graph = graphSize <= PLAN_GRAPH_MAX_BYTES ? await readTracked(graphPath) : null;
    const data: ComponentPlan['data'] = [];
    if (graph) {
      let summary: GraphSummary;
      try {
        summary = summarizeGraph(graph);
      } catch (e) {
        throw new ModelLoadError(graphPath, `not an ONNX model (${(e as Error).message})`);
      }
      checkHalfPrecision(graphPath, summary.halfPrecision, backend, fit);
      for (const location of summary.externalLocations) {
        const path = `${folder}/${location}`;
        const size = await files.size(path);
        if (size === null) throw new ModelLoadError(path, `the graph's external data file is missing`);
        progress.plan(path, size);
        data.push({ location, path, size });
      }
      checkFileSizes(data, fit);
    }
    return { folder, graphPath, graphSize, graph, data };
  };

  const createSession = async (plan: ComponentPlan): Promise<ComponentSession> => {
    const graph = plan.graph ?? (await readTracked(plan.graphPath));
    if (!plan.graph) checkHalfPrecision(plan.graphPath, hasHalfPrecisionWeights(graph), backend, fit);
    const externalData: { path: string; data: Uint8Array }[] = [];
    for (const d of plan.data) externalData.push({ path: d.location, data: await readTracked(d.path) });
    let s;
    try {
      s = await queue.run(() =>
        ort.InferenceSession.create(graph, {
          executionProviders: [backend],
          graphOptimizationLevel: 'all',
          externalData: externalData.length ? externalData : undefined,
        }),
      );
    } catch (e) {
      throw new ModelLoadError(plan.graphPath, `onnxruntime could not create a session (${(e as Error).message ?? e})`);
    }
    const bytes = graph.byteLength + externalData.reduce((a, d) => a + d.data.byteLength, 0);
    const c = new ComponentSession(plan.folder, s, ort, bytes, queue);
    created.push(c);
    checkContract(c, plan.graphPath);
    return c;
  };

  try {
    const index = await readJson(files, 'model_index.json');
    if (!String(index._class_name ?? '').startsWith('StableDiffusion3')) {
      throw new ModelLoadError('model_index.json', `expected a StableDiffusion3 pipeline, found ${JSON.stringify(index._class_name)}`);
    }
    for (const required of ['text_encoder', 'text_encoder_2', 'transformer']) {
      if (!declared(index, required)) throw new ModelLoadError('model_index.json', `component ${required} is missing`);
    }
    const scheduler = new FlowMatchEulerScheduler(parseSchedulerConfig(await readJson(files, 'scheduler/scheduler_config.json')));
    const transformerJson = await readJson(files, 'transformer/config.json');
    const transformerConfig = parseTransformerConfig(transformerJson);
    const vaeConfig = parseVaeConfig(await readJson(files, 'vae_decoder/config.json'));
    const { family, defaults } = familyDefaults(index, transformerJson, transformerConfig, vaeConfig);
    const withT5 = !opts.skipT5 && declared(index, 'text_encoder_3') && (await files.exists('text_encoder_3/model.onnx'));
    const t5MaxLength = Math.min(opts.t5MaxLength ?? 256, 512);

    // plan: every weight file's size, before downloading any weights
    const folders = ['text_encoder', 'text_encoder_2', ...(withT5 ? ['text_encoder_3'] : []), 'transformer', 'vae_decoder'];
    const plans = new Map<string, ComponentPlan>();
    for (const folder of folders) plans.set(folder, await planComponent(folder));
    const plannedBytes = [...plans.values()].reduce((a, p) => a + p.graphSize + p.data.reduce((b, d) => b + d.size, 0), 0);
    const needs = estimateNeeds(plannedBytes, transformerConfig, vaeConfig, defaults, CLIP_LENGTH + t5MaxLength);
    checkModelFits(needs, defaults, backend, fit, withT5);

    const textEncoder = async (folder: string, tokenizerFolder: string): Promise<TextEncoder> => {
      const config = await readJson(files, `${folder}/config.json`);
      const tokenizer = new PromptTokenizer(await readJson(files, `${tokenizerFolder}/tokenizer.json`), await readJson(files, `${tokenizerFolder}/tokenizer_config.json`));
      const s = await createSession(plans.get(folder)!);
      const isT5 = folder === 'text_encoder_3';
      const hiddenOutput = isT5 ? 'last_hidden_state' : penultimateOutput(config, folder);
      if (!s.outputNames.includes(hiddenOutput)) throw new ModelLoadError(`${folder}/model.onnx`, `has no output ${hiddenOutput} (outputs: ${s.outputNames.join(', ')})`);
      const hiddenSize = Number(isT5 ? config.d_model : config.hidden_size);
      return { session: s, tokenizer, hiddenOutput, hiddenSize, projectionSize: Number(config.projection_dim ?? 0) };
    };

    const clipL = await textEncoder('text_encoder', 'tokenizer');
    const clipG = await textEncoder('text_encoder_2', 'tokenizer_2');
    const t5 = withT5 ? await textEncoder('text_encoder_3', 'tokenizer_3') : null;
    if (clipL.projectionSize + clipG.projectionSize !== transformerConfig.pooledProjectionDim) {
      throw new ModelLoadError('transformer/config.json', `pooled_projection_dim ${transformerConfig.pooledProjectionDim} != CLIP projections ${clipL.projectionSize} + ${clipG.projectionSize}`);
    }
    const transformer = await createSession(plans.get('transformer')!);
    const vaeDecoder = await createSession(plans.get('vae_decoder')!);

    const sizeMultiple = transformerConfig.patchSize * vaeConfig.scaleFactor;
    const weightBytes = created.reduce((a, c) => a + c.weightBytes, 0);
    const info: ModelInfo = {
      id: files.id,
      family,
      backend,
      defaults,
      limits: { minSize: sizeMultiple, maxSize: transformerConfig.posEmbedMaxSize * sizeMultiple, sizeMultiple },
      hasT5: t5 !== null,
      weightBytes,
      estimatedBytes: needs.totalBytes,
    };
    progress.ready(weightBytes);
    return {
      info,
      clipL,
      clipG,
      t5,
      t5MaxLength,
      needs,
      transformer,
      vaeDecoder,
      transformerConfig,
      vaeConfig,
      scheduler,
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
