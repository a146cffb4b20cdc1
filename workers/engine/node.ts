// Node entry: the engine on onnxruntime-web's wasm backend (CLI, benchmark,
// unit tests). The browser entry is workers/engine.worker.ts.
import * as ort from 'onnxruntime-web';
import { Engine, type EngineOptions } from './engine.ts';
import type { ModelSourceSpec } from './api/types.ts';
import { openModelFiles, type HubAccess } from './model/model-files.ts';
import { withNodeHubDefaults } from './model/node-hub.ts';
import { nodeFolderFiles } from './model/node-folder-files.ts';
import { encodePngOffThread } from './model/node-png.ts';

export { ort };

/** Files for any source, local folders included; Hub sources take HF_ENDPOINT and HF_TOKEN (or the token file) as huggingface_hub does. */
export function openNodeModelFiles(spec: ModelSourceSpec, access?: HubAccess) {
  if (spec.kind === 'path') return nodeFolderFiles(spec.path);
  const hub = withNodeHubDefaults(spec, access);
  return openModelFiles(hub.spec, hub.access);
}

/** A source from a CLI argument: an http(s) URL, `hf:owner/repo[/subfolder][@revision]`, or a folder. */
export { parseModelArg } from './model/hub-spec.ts';

export function createNodeEngine(options: Partial<EngineOptions> = {}): Engine {
  // one wasm thread per run keeps results independent of the machine's core count
  ort.env.wasm.numThreads = options.ort ? ort.env.wasm.numThreads : 1;
  ort.env.logLevel = 'error';
  return new Engine({ ort, backend: 'wasm', adapter: null, openFiles: openNodeModelFiles, encodePng: encodePngOffThread, ...options });
}
