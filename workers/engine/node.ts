// Node entry: the engine on onnxruntime-web's wasm backend (CLI, benchmark,
// unit tests). The browser entry is workers/engine.worker.ts.
import * as ort from 'onnxruntime-web';
import { Engine, type EngineOptions } from './engine.ts';
import type { ModelSourceSpec } from './api/types.ts';
import { openModelFiles } from './model/model-files.ts';
import { nodeFolderFiles } from './model/node-folder-files.ts';
import { encodePngOffThread } from './model/node-png.ts';

export { ort };

/** Files for any source, local folders included. */
export function openNodeModelFiles(spec: ModelSourceSpec) {
  return spec.kind === 'path' ? nodeFolderFiles(spec.path) : openModelFiles(spec);
}

/** A source from a CLI argument: an http(s) URL, a Hub repo id, or a folder. */
export function parseModelArg(arg: string): ModelSourceSpec {
  if (/^https?:\/\//.test(arg)) return { kind: 'url', url: arg };
  if (arg.startsWith('hf:')) return { kind: 'hub', repo: arg.slice(3) };
  return { kind: 'path', path: arg };
}

export function createNodeEngine(options: Partial<EngineOptions> = {}): Engine {
  // one wasm thread per run keeps results independent of the machine's core count
  ort.env.wasm.numThreads = options.ort ? ort.env.wasm.numThreads : 1;
  ort.env.logLevel = 'error';
  return new Engine({ ort, backend: 'wasm', adapter: null, openFiles: openNodeModelFiles, encodePng: encodePngOffThread, ...options });
}
