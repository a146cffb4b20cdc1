// The flags `npm run generate` and `npm run serve` share, parsed and checked
// once: the model, the backend and its threads, the engine's limits (requests
// at once, rows per run, GPU memory, largest buffer), the download cache, T5.
// A bad value is named with its allowed range, and the command exits 2 before
// anything loads.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { ModelSourceSpec } from '../workers/engine/api/types.ts';
import type { Engine } from '../workers/engine/engine.ts';
import { ModelTooLargeError } from '../workers/engine/errors.ts';
import { DEFAULT_MAX_ACTIVE } from '../workers/engine/interleaver/interleaver.ts';
import { defaultNodeCacheFolder, nodeFileCache } from '../workers/engine/model/node-file-cache.ts';
import { createNodeEngine, type NodeEngineOptions } from '../workers/engine/node.ts';
import { BACKEND_CHOICES, describeRuntime, nodeRuntime, type BackendChoice } from '../workers/engine/runtime/node-runtime.ts';

type Options = NonNullable<ParseArgsConfig['options']>;

export const ENGINE_FLAGS = {
  model: { type: 'string', default: 'public/models/tiny-sd3' },
  backend: { type: 'string', default: 'auto' },
  threads: { type: 'string' },
  'no-t5': { type: 'boolean', default: false },
  'gpu-memory': { type: 'string' },
  'max-buffer-mb': { type: 'string' },
  concurrency: { type: 'string', default: String(DEFAULT_MAX_ACTIVE) },
  'max-batch': { type: 'string' },
  'cache-dir': { type: 'string' },
  'no-cache': { type: 'boolean', default: false },
  help: { type: 'boolean', default: false },
} as const satisfies Options;

/** A flag's value as a number: absent stays absent, an empty string is NaN (refused by the checks). */
export const numberFlag = (v: string | undefined) => (v === undefined ? undefined : v.trim() === '' ? NaN : Number(v));

/** Prints `error: --flag: expected …, got …` and gives the exit code for bad flags. */
export function flagError(flag: string, allowed: string, got: string | undefined): 2 {
  console.error(`error: ${flag}: expected ${allowed}, got ${got}`);
  return 2;
}

/** What parseArgs gives for ENGINE_FLAGS with a command's own flags over them. */
type FlagValues<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; options: Omit<typeof ENGINE_FLAGS, keyof O> & O; strict: true }>>['values'];

/** Parses argv against ENGINE_FLAGS plus a command's own; an exit code when it should stop (bad flags: 2, --help: 0). */
export function readFlags<O extends Options>(argv: string[], own: O, usage: string): FlagValues<O> | 0 | 2 {
  let values: FlagValues<O>;
  try {
    values = parseArgs({ args: argv, options: { ...ENGINE_FLAGS, ...own } as Omit<typeof ENGINE_FLAGS, keyof O> & O, strict: true }).values;
  } catch (e) {
    console.error(`error: ${(e as Error).message}\n${usage}`);
    return 2;
  }
  if ((values as { help?: boolean }).help) {
    console.log(usage);
    return 0;
  }
  return values;
}

export interface EngineFlags {
  backend: BackendChoice;
  /** CPU (native) or wasm threads; absent: every core natively, one on wasm. */
  threads?: number;
  concurrency: number;
  maxBatch?: number;
  gpuMemoryBytes?: number;
  maxBufferBytes?: number;
  /** --gpu-memory and --max-buffer-mb as the engine's device fit (each absent when not given). */
  deviceFit: { memoryBytes?: number; maxBufferBytes?: number };
  /** Where URL and Hub models are cached; absent with --no-cache. */
  fileCache?: ReturnType<typeof nodeFileCache>;
}

type EngineFlagValues = { backend?: string; threads?: string; concurrency?: string; 'max-batch'?: string; 'gpu-memory'?: string; 'max-buffer-mb'?: string; 'cache-dir'?: string; 'no-cache'?: boolean };

/** Checks the engine's flags; 2 (after naming the flag) when one is out of range. */
export function engineFlags(args: EngineFlagValues): EngineFlags | 2 {
  const backend = (args.backend ?? 'auto') as BackendChoice;
  if (!BACKEND_CHOICES.includes(backend)) return flagError('--backend', BACKEND_CHOICES.join(', '), args.backend);
  const threads = numberFlag(args.threads);
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1 || threads > 256)) return flagError('--threads', 'an integer in 1..256', args.threads);
  const concurrency = numberFlag(args.concurrency) ?? DEFAULT_MAX_ACTIVE;
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 256) return flagError('--concurrency', 'an integer in 1..256', args.concurrency);
  const maxBatch = numberFlag(args['max-batch']);
  if (maxBatch !== undefined && (!Number.isInteger(maxBatch) || maxBatch < 1 || maxBatch > 64)) return flagError('--max-batch', 'an integer in 1..64', args['max-batch']);
  const gb = numberFlag(args['gpu-memory']);
  if (gb !== undefined && !(gb > 0 && gb <= 1024)) return flagError('--gpu-memory', 'a number of GB in (0, 1024]', args['gpu-memory']);
  const bufferMb = numberFlag(args['max-buffer-mb']);
  if (bufferMb !== undefined && !(Number.isInteger(bufferMb) && bufferMb >= 1)) return flagError('--max-buffer-mb', 'an integer >= 1', args['max-buffer-mb']);
  const gpuMemoryBytes = gb !== undefined ? Math.round(gb * 1024 ** 3) : undefined;
  const maxBufferBytes = bufferMb !== undefined ? bufferMb * 1024 ** 2 : undefined;
  return {
    backend,
    ...(threads !== undefined ? { threads } : {}),
    concurrency,
    deviceFit: { ...(gpuMemoryBytes !== undefined ? { memoryBytes: gpuMemoryBytes } : {}), ...(maxBufferBytes !== undefined ? { maxBufferBytes } : {}) },
    ...(maxBatch !== undefined ? { maxBatch } : {}),
    ...(gpuMemoryBytes !== undefined ? { gpuMemoryBytes } : {}),
    ...(maxBufferBytes !== undefined ? { maxBufferBytes } : {}),
    ...(args['no-cache'] ? {} : { fileCache: nodeFileCache(args['cache-dir'] ?? defaultNodeCacheFolder()) }),
  };
}

/**
 * The engine on the backend the flags ask for ('auto': the fastest this machine runs), its choice said first
 * (and why each faster backend was not used); null (after the error) when the named backend cannot run here.
 */
export async function engineFromFlags(flags: EngineFlags, options: NodeEngineOptions = {}): Promise<Engine | null> {
  let runtime;
  try {
    runtime = await nodeRuntime(flags.backend, { threads: flags.threads });
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    return null;
  }
  console.error(describeRuntime(runtime.status));
  return createNodeEngine({ maxActive: flags.concurrency, maxBatch: flags.maxBatch, fileCache: flags.fileCache, deviceFit: flags.deviceFit, ...options, runtime });
}

/** Loads the model, naming each file as it arrives and the model when it is ready; false (after the error) when it fails. */
export async function loadWithLog(engine: Engine, source: ModelSourceSpec, skipT5: boolean): Promise<boolean> {
  let lastFile = '';
  const info = await engine
    .load(source, (e) => {
      if (e.status === 'done' && e.file !== lastFile) console.error(`loaded ${(lastFile = e.file ?? '')}${e.cached ? ' (cached)' : ''}`);
    }, { skipT5 })
    .catch((e: Error) => {
      // the budget was the person's own setting: say which
      const setting = e instanceof ModelTooLargeError && engine.options.deviceFit?.memoryBytes !== undefined ? ` (the GPU memory is set by --gpu-memory)` : '';
      console.error(`error: ${e.message}${setting}`);
      return null;
    });
  if (info) console.error(`model ${info.id} (${info.family}) on ${info.backend}; defaults ${info.defaults.steps} steps, guidance ${info.defaults.guidance}, ${info.defaults.width}x${info.defaults.height}`);
  return !!info;
}
