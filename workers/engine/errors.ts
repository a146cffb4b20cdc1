// Typed, actionable errors. Each says what happened and what to do next;
// `code` survives structured cloning across the worker boundary. Messages
// are read by people: they name models by name and never carry request ids.
import { modelName } from './model-name.ts';

export type ErrorCode =
  | 'invalid_request'
  | 'model_load'
  | 'model_not_loaded'
  | 'not_found'
  | 'cancelled'
  | 'too_large'
  | 'model_too_large'
  | 'inference'
  | 'busy'
  | 'storage'
  | 'device_lost'
  | 'model_switch'
  | 'load_aborted'
  | 'attempts_exhausted';

export class EngineError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }

  /** Plain-object form that crosses postMessage intact. */
  toJSON() {
    return { name: this.name, code: this.code, message: this.message, ...this.details() };
  }

  protected details(): Record<string, unknown> {
    return {};
  }
}

/** A request field is missing, of the wrong type, or out of range. */
export class InvalidRequestError extends EngineError {
  constructor(
    readonly field: string,
    readonly allowed: string,
    received: unknown,
  ) {
    super('invalid_request', `${field}: expected ${allowed}, got ${describe(received)}`);
  }

  protected override details() {
    return { field: this.field, allowed: this.allowed };
  }
}

/** Why a source refused a model, where it said: a gated repo, a refused token, nothing at that name, no answer at all. */
export type SourceFailure = 'gated' | 'unauthorized' | 'not_found' | 'unreachable';

/** A model file could not be fetched or parsed; `file` names it, `failure` says how the source refused it (when it did). */
export class ModelLoadError extends EngineError {
  constructor(
    readonly file: string,
    reason: string,
    readonly failure?: SourceFailure,
  ) {
    super('model_load', `could not load ${file}: ${reason}`);
  }

  protected override details() {
    return { file: this.file, ...(this.failure ? { failure: this.failure } : {}) };
  }
}

export class ModelNotLoadedError extends EngineError {
  constructor() {
    super('model_not_loaded', 'no model is loaded: call load() with a model folder, URL or Hub repo first');
  }
}

export class NotFoundError extends EngineError {
  constructor(what: string, id: string) {
    super('not_found', `${what} ${JSON.stringify(id)} not found`);
  }
}

export class CancelledError extends EngineError {
  constructor(readonly requestId: string) {
    super('cancelled', 'the request was cancelled');
  }
}

/** A request can never fit this device (memory beside the weights, or the largest buffer), whatever else is running. */
export class TooLargeError extends EngineError {
  constructor(
    readonly neededBytes: number,
    readonly limitBytes: number,
    /** What does not fit and what would. */
    message: string,
    /** The largest size of the same shape that fits, when one does. */
    readonly largestFitting: { width: number; height: number } | null,
  ) {
    super('too_large', message);
  }

  protected override details() {
    return { neededBytes: this.neededBytes, limitBytes: this.limitBytes, largestFitting: this.largestFitting };
  }
}

/** A model cannot fit this device: refused before its weights are downloaded. */
export class ModelTooLargeError extends EngineError {
  constructor(
    readonly neededBytes: number,
    readonly availableBytes: number,
    detail: string,
    hint: string,
  ) {
    super('model_too_large', `this model needs ~${formatBytes(neededBytes)} of GPU memory (${detail}); this adapter offers ${formatBytes(availableBytes)}. ${hint}`);
  }

  protected override details() {
    return { neededBytes: this.neededBytes, availableBytes: this.availableBytes };
  }
}

/** A model run failed for one request (for example non-finite latents); others carry on. */
export class InferenceError extends EngineError {
  constructor(message: string) {
    super('inference', message);
  }
}

/** The GPU device is gone (driver reset, another tab, device.destroy()). The
 * request did not fail on its own: it is replayed from its seed on a new device. */
export class DeviceLostError extends EngineError {
  constructor(readonly reason: string) {
    super('device_lost', `the GPU device was lost (${reason}); the engine restarts on a new device and replays unfinished requests from their seeds`);
  }
}

/** A request was running on a model that a new load replaced: it ends here, with this reason, and may be run again. */
export class ModelSwitchError extends EngineError {
  constructor(
    readonly requestId: string,
    readonly from: string,
    readonly to: string,
  ) {
    super('model_switch', `this request was stopped: the engine switched from model ${modelName(from)} to ${modelName(to)} while it ran; run it again to get its image from ${modelName(to)}`);
  }

  protected override details() {
    return { from: this.from, to: this.to };
  }
}

/** A model load was aborted (by its caller, or replaced by a newer load); the loaded model keeps serving. */
export class LoadAbortedError extends EngineError {
  constructor(reason: string) {
    super('load_aborted', `the model load was aborted: ${reason}; the loaded model keeps serving`);
  }
}

/** The engine cannot do this now. */
export class BusyError extends EngineError {
  constructor(message: string) {
    super('busy', message);
  }
}

/** Binary units, as memory settings and adapters count them: GB with two decimals (8.00 GB), smaller units with one. */
export function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${n} B`;
}

function describe(v: unknown): string {
  if (typeof v === 'string') return v.length > 40 ? `a string of ${v.length} characters` : JSON.stringify(v);
  if (typeof v === 'number') return String(v);
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  return typeof v === 'object' ? 'an object' : String(v);
}

/** A request whose every run ended with the engine gone (a crash, a lost GPU device): not run again, so it cannot take the app down forever. */
export class AttemptsExhaustedError extends EngineError {
  constructor(readonly attempts: number) {
    super('attempts_exhausted', `stopped after ${attempts} attempts: each time it ran, the engine crashed or lost the GPU device before it finished. Try a smaller size or fewer steps, or Retry once the GPU is stable`);
  }
}
