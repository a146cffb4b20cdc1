// The worker's API: the browser form of the seed server's endpoints
// (inference, image by id, status), exposed over Comlink by engine.worker.ts.
// Progress callbacks arrive as Comlink proxies; pixel buffers are transferred.
import * as Comlink from 'comlink';
import type { EngineStatus, GenerateResult, ModelInfo, ModelSourceSpec, ProgressCallback, ProgressEvent } from './engine/api/types.ts';
import type { Engine } from './engine/engine.ts';
import { ModelNotLoadedError } from './engine/errors.ts';
import { checkTransformerOnBackends, type BackendCheck } from './backend-check.ts';
import { createBrowserEngine, type GpuInfo } from './browser-engine.ts';

export interface WorkerStatus extends EngineStatus {
  gpu: GpuInfo | null;
}

/** Errors cross postMessage as plain objects with code, field and message intact. */
function plainError(e: unknown): Error {
  if (e && typeof e === 'object' && 'toJSON' in e && typeof (e as { toJSON: unknown }).toJSON === 'function') {
    const json = (e as { toJSON(): Record<string, unknown> }).toJSON();
    return Object.assign(new Error(String(json.message)), json);
  }
  return e instanceof Error ? e : new Error(String(e));
}

async function guard<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    throw plainError(e);
  }
}

/** Moves the preview's pixels instead of copying them. */
function transferProgress(onProgress?: ProgressCallback): ProgressCallback | undefined {
  if (!onProgress) return undefined;
  return (event: ProgressEvent) => {
    const buffers = event.preview ? [event.preview.rgba.buffer as ArrayBuffer] : [];
    void onProgress(Comlink.transfer(event, buffers));
  };
}

export class WorkerApi {
  private engine: Engine | null = null;
  private gpu: GpuInfo | null = null;

  /** Detects WebGPU (or falls back to wasm) and creates the engine. */
  async init(): Promise<GpuInfo> {
    return guard(async () => {
      if (!this.engine) {
        const { engine, gpu } = await createBrowserEngine();
        this.engine = engine;
        this.gpu = gpu;
      }
      return this.gpu!;
    });
  }

  private async ready(): Promise<Engine> {
    await this.init();
    return this.engine!;
  }

  async loadModel(source: ModelSourceSpec, onProgress?: ProgressCallback): Promise<ModelInfo> {
    return guard(async () => (await this.ready()).load(source, onProgress));
  }

  /** Runs one request; resolves with its result, PNG and pixels transferred. */
  async generate(request: unknown, onProgress?: ProgressCallback, opts: { preview?: boolean } = {}): Promise<GenerateResult> {
    return guard(async () => {
      const engine = await this.ready();
      if (!engine.model) throw new ModelNotLoadedError();
      const result = await engine.generate(request, { onProgress: transferProgress(onProgress), preview: opts.preview });
      return Comlink.transfer(result, [result.rgba.buffer as ArrayBuffer, result.png.buffer as ArrayBuffer]);
    });
  }

  async cancel(id: string): Promise<boolean> {
    return this.engine?.cancel(id) ?? false;
  }

  async status(): Promise<WorkerStatus> {
    return { ...(this.engine?.status() ?? emptyStatus()), gpu: this.gpu };
  }

  /** Diagnostic: the tiny transformer on webgpu vs wasm, same inputs. */
  async checkBackends(modelUrl: string): Promise<BackendCheck> {
    return guard(async () => {
      const gpu = await this.init();
      if (gpu.backend !== 'webgpu') throw new Error(`WebGPU is unavailable here: ${gpu.fallbackReason}`);
      return checkTransformerOnBackends(modelUrl);
    });
  }
}

function emptyStatus(): EngineStatus {
  return {
    model: null,
    backend: null,
    adapter: null,
    requestsServed: 0,
    requestsFailed: 0,
    requestsCancelled: 0,
    requestsActive: 0,
    requestsQueued: 0,
    weightBytes: 0,
    requestBytes: 0,
    admittedBytes: 0,
    budgetBytes: 0,
    peakAdmittedBytes: 0,
    cycles: 0,
  };
}
