// Loads a model folder once: configs, tokenizers, and one session per component.
import type { BackendName, ModelInfo, ProgressCallback } from '../api/types.ts';
import { ModelLoadError } from '../errors.ts';
import { FlowMatchEulerScheduler, parseSchedulerConfig } from '../scheduler/flow-match-euler.ts';
import { ComponentSession, type Ort } from './component-session.ts';
import { deviceQueue } from './run-queue.ts';
import { externalDataLocations } from './external-data.ts';
import type { ModelFiles } from './model-files.ts';
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

export async function loadModel(files: ModelFiles, opts: LoadOptions): Promise<LoadedModel> {
  const { ort, backend, onProgress } = opts;
  const created: ComponentSession[] = [];
  const queue = deviceQueue(ort);
  const progress = (file: string) => (loaded: number, total: number) => onProgress?.({ status: 'download', file, loaded, total, progress: total ? (100 * loaded) / total : 0 });

  const session = async (folder: string): Promise<ComponentSession> => {
    const path = `${folder}/model.onnx`;
    onProgress?.({ status: 'initiate', file: path, loaded: 0, total: 0, progress: 0 });
    const graph = await files.read(path, progress(path));
    const externalData: { path: string; data: Uint8Array }[] = [];
    for (const location of externalDataLocations(graph)) {
      const dataPath = `${folder}/${location}`;
      externalData.push({ path: location, data: await files.read(dataPath, progress(dataPath)) });
    }
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
      throw new ModelLoadError(path, `onnxruntime could not create a session (${(e as Error).message ?? e})`);
    }
    const bytes = graph.byteLength + externalData.reduce((a, d) => a + d.data.byteLength, 0);
    const c = new ComponentSession(folder, s, bytes, queue);
    created.push(c);
    onProgress?.({ status: 'done', file: path, loaded: bytes, total: bytes, progress: 100 });
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

    const textEncoder = async (folder: string, tokenizerFolder: string): Promise<TextEncoder> => {
      const config = await readJson(files, `${folder}/config.json`);
      const tokenizer = new PromptTokenizer(await readJson(files, `${tokenizerFolder}/tokenizer.json`), await readJson(files, `${tokenizerFolder}/tokenizer_config.json`));
      const s = await session(folder);
      const isT5 = folder === 'text_encoder_3';
      const hiddenOutput = isT5 ? 'last_hidden_state' : penultimateOutput(config, folder);
      if (!s.outputNames.includes(hiddenOutput)) throw new ModelLoadError(`${folder}/model.onnx`, `has no output ${hiddenOutput} (outputs: ${s.outputNames.join(', ')})`);
      const hiddenSize = Number(isT5 ? config.d_model : config.hidden_size);
      return { session: s, tokenizer, hiddenOutput, hiddenSize, projectionSize: Number(config.projection_dim ?? 0) };
    };

    const clipL = await textEncoder('text_encoder', 'tokenizer');
    const clipG = await textEncoder('text_encoder_2', 'tokenizer_2');
    const t5 = !opts.skipT5 && declared(index, 'text_encoder_3') && (await files.exists('text_encoder_3/model.onnx')) ? await textEncoder('text_encoder_3', 'tokenizer_3') : null;
    if (clipL.projectionSize + clipG.projectionSize !== transformerConfig.pooledProjectionDim) {
      throw new ModelLoadError('transformer/config.json', `pooled_projection_dim ${transformerConfig.pooledProjectionDim} != CLIP projections ${clipL.projectionSize} + ${clipG.projectionSize}`);
    }
    const transformer = await session('transformer');
    const vaeDecoder = await session('vae_decoder');

    const { family, defaults } = familyDefaults(index, transformerJson, transformerConfig, vaeConfig);
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
    };
    onProgress?.({ status: 'ready', loaded: weightBytes, total: weightBytes, progress: 100 });
    return {
      info,
      clipL,
      clipG,
      t5,
      t5MaxLength: Math.min(opts.t5MaxLength ?? 256, 512),
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
