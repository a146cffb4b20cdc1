// Node entry: the engine on the runtime workers/engine/runtime/node-runtime.ts
// picks (native onnxruntime by default; onnxruntime-web's wasm when asked),
// for the CLI, the server, the benchmarks and the unit tests. The browser
// entry is workers/engine.worker.ts.
import * as ort from 'onnxruntime-web';
import { Engine, type EngineOptions } from './engine.ts';
import type { ModelSourceSpec } from './api/types.ts';
import { openModelFiles, type HubAccess } from './model/model-files.ts';
import { withNodeHubDefaults } from './model/node-hub.ts';
import { nodeFolderFiles } from './model/node-folder-files.ts';
import { encodePngOffThread } from './model/node-png.ts';
import type { Ort } from './model/component-session.ts';
import { cpuRuntime, nodeRuntime, wasmRuntime, type BackendChoice, type NodeRuntime } from './runtime/node-runtime.ts';

/** onnxruntime-web (its wasm backend in Node): for what is about wasm itself. */
export { ort };

/** Files for any source, local folders included; Hub sources take HF_ENDPOINT and HF_TOKEN (or the token file) as huggingface_hub does. */
export function openNodeModelFiles(spec: ModelSourceSpec, access?: HubAccess) {
  if (spec.kind === 'path') return nodeFolderFiles(spec.path);
  const hub = withNodeHubDefaults(spec, access);
  return openModelFiles(hub.spec, hub.access);
}

/** A source from a CLI argument: an http(s) URL, `hf:owner/repo[/subfolder][@revision]`, or a folder. */
export { parseModelArg } from './model/hub-spec.ts';

export interface NodeEngineOptions extends Partial<EngineOptions> {
  /** The runtime (nodeRuntime()); default: native CPU on every core. */
  runtime?: NodeRuntime;
}

/** The wasm runtime on one thread: what the page computes without WebGPU, for tests and benchmarks about wasm. */
export const wasmNodeRuntime = (threads = 1) => wasmRuntime(ort as unknown as Ort, threads);

export function createNodeEngine(options: NodeEngineOptions = {}): Engine {
  const { runtime: given, ...rest } = options;
  // an engine handed onnxruntime-web itself (older callers) runs on its wasm
  const runtime = given ?? (rest.ort ? wasmRuntime(rest.ort, rest.ort.env.wasm.numThreads ?? 1) : cpuRuntime());
  return new Engine({
    ort: runtime.ort,
    backend: runtime.backend,
    native: runtime.native,
    runtimeStatus: runtime.status,
    adapter: runtime.status.device,
    openFiles: openNodeModelFiles,
    encodePng: encodePngOffThread,
    ...rest,
    deviceFit: { ...runtime.deviceFit, ...rest.deviceFit },
  });
}

/** An engine on `choice` ('auto': the fastest backend this machine runs), with CPU and wasm on `threads`. */
export async function createNodeEngineOn(choice: BackendChoice, threads: number | undefined, options: Partial<EngineOptions> = {}): Promise<Engine> {
  return createNodeEngine({ ...options, runtime: await nodeRuntime(choice, { threads }) });
}
