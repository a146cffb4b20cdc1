// Typed, actionable errors. Each says what happened and what to do next;
// `code` survives structured cloning across the worker boundary, and code
// branches on `code` (or the class), never on the message. Messages are read
// by people beside the request they concern: they carry no request ids (an
// error that concerns one request names it in `requestId`). `cause` keeps the
// error underneath (onnxruntime's own, with its stack).

export type ErrorCode =
  | 'invalid_request'
  | 'model_load'
  | 'model_not_loaded'
  | 'not_found'
  | 'cancelled'
  | 'too_large'
  | 'model_too_large'
  | 'inference'
  | 'storage'
  | 'device_lost'
  | 'load_aborted'
  | 'attempts_exhausted';

export class EngineError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }

  /** Plain-object form that crosses postMessage intact (the cause as its message: a stack is no use to a page). */
  toJSON() {
    const cause = this.cause === undefined ? {} : { cause: this.cause instanceof Error ? this.cause.message : String(this.cause) };
    return { name: this.name, code: this.code, message: this.message, ...cause, ...this.details() };
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

  /** The model refused, once a caller that knows it has named it (the plan does not). */
  modelId?: string;

  /** Names the model in the message, once: `id: this model needs …`, and what else the person should know. */
  nameModel(id: string, after = ''): void {
    if (this.modelId !== undefined) return;
    this.modelId = id;
    this.message = `${id}: ${this.message}${after}`;
  }

  protected override details() {
    return { neededBytes: this.neededBytes, availableBytes: this.availableBytes, ...(this.modelId === undefined ? {} : { modelId: this.modelId }) };
  }
}

/** A model run failed for one request (for example non-finite latents); others carry on. */
export class InferenceError extends EngineError {
  /** The request it concerns, where only one did (a run shared by several fails each of them alike). */
  readonly requestId?: string;

  constructor(message: string, options: { requestId?: string; cause?: unknown } = {}) {
    super('inference', message, { cause: options.cause });
    if (options.requestId !== undefined) this.requestId = options.requestId;
  }

  protected override details() {
    return this.requestId === undefined ? {} : { requestId: this.requestId };
  }
}

/** The GPU device is gone (driver reset, another tab, device.destroy()). The
 * request did not fail on its own: it is replayed from its seed on a new device. */
export class DeviceLostError extends EngineError {
  constructor(readonly reason: string) {
    super('device_lost', `the GPU device was lost (${reason}); the engine restarts on a new device and replays unfinished requests from their seeds`);
  }
}

/** A model load was aborted (by its caller, or replaced by a newer load); the loaded model keeps serving. */
export class LoadAbortedError extends EngineError {
  constructor(reason: string) {
    super('load_aborted', `the model load was aborted: ${reason}; the loaded model keeps serving`);
  }
}

/** An error's message, or the thrown value as text. */
export const messageOf = (e: unknown): string => (e instanceof Error ? e.message : String(e));

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
