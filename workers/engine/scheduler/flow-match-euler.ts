// Flow-matching Euler (diffusers' FlowMatchEulerDiscreteScheduler) as pure
// functions over a frozen config. The shared scheduler only holds the config;
// every request gets its own schedule and step index from cloneForRequest().

export interface FlowMatchConfig {
  readonly numTrainTimesteps: number;
  readonly shift: number;
  readonly useDynamicShifting: boolean;
  readonly baseShift: number;
  readonly maxShift: number;
  readonly baseImageSeqLen: number;
  readonly maxImageSeqLen: number;
  readonly shiftTerminal: number | null;
  readonly invertSigmas: boolean;
}

/** Reads `scheduler_config.json`, with diffusers' defaults for absent fields. */
export function parseSchedulerConfig(json: Record<string, unknown>): FlowMatchConfig {
  const num = (key: string, fallback: number) => {
    const v = json[key];
    if (v === undefined || v === null) return fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new Error(`scheduler_config.json: ${key} must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  const terminal = json.shift_terminal;
  return Object.freeze({
    numTrainTimesteps: num('num_train_timesteps', 1000),
    shift: num('shift', 1.0),
    useDynamicShifting: json.use_dynamic_shifting === true,
    baseShift: num('base_shift', 0.5),
    maxShift: num('max_shift', 1.15),
    baseImageSeqLen: num('base_image_seq_len', 256),
    maxImageSeqLen: num('max_image_seq_len', 4096),
    shiftTerminal: typeof terminal === 'number' ? terminal : null,
    invertSigmas: json.invert_sigmas === true,
  });
}

export interface ScheduleOptions {
  /** Number of denoising steps (ignored when `sigmas` is given). */
  steps?: number;
  /** Custom sigmas, before shifting (diffusers' `sigmas=`). */
  sigmas?: readonly number[];
  /** Required with dynamic shifting: see dynamicShiftMu(). */
  mu?: number;
}

/** A request's timetable: timesteps[i] = sigmas[i] * 1000; sigmas has one trailing terminal value. */
export interface Schedule {
  readonly timesteps: Float32Array;
  readonly sigmas: Float32Array;
}

const staticShift = (shift: number, s: number) => (shift * s) / (1 + (shift - 1) * s);

/** mu for dynamic shifting, linear in the image's token count (latent h/patch * w/patch). */
export function dynamicShiftMu(config: FlowMatchConfig, imageSeqLen: number): number {
  const m = (config.maxShift - config.baseShift) / (config.maxImageSeqLen - config.baseImageSeqLen);
  const b = config.baseShift - m * config.baseImageSeqLen;
  return imageSeqLen * m + b;
}

/** set_timesteps() without the mutation: returns a new schedule. */
export function computeSchedule(config: FlowMatchConfig, opts: ScheduleOptions): Schedule {
  const N = config.numTrainTimesteps;
  let s: number[];
  if (opts.sigmas) {
    s = [...opts.sigmas];
  } else {
    const steps = opts.steps ?? 0;
    if (!Number.isInteger(steps) || steps < 1) throw new RangeError(`steps must be a positive integer, got ${steps}`);
    // training-time sigma range: statically shifted at construction unless shifting is dynamic
    const train = (k: number) => (config.useDynamicShifting ? k / N : staticShift(config.shift, k / N));
    const tMax = train(N) * N;
    const tMin = train(1) * N;
    s = Array.from({ length: steps }, (_, i) => (steps === 1 ? tMax : tMax + ((tMin - tMax) * i) / (steps - 1)) / N);
  }
  if (config.useDynamicShifting) {
    if (opts.mu === undefined || !Number.isFinite(opts.mu)) throw new Error('dynamic shifting needs mu (see dynamicShiftMu)');
    const eMu = Math.exp(opts.mu);
    s = s.map((x) => eMu / (eMu + (1 / x - 1)));
  } else {
    s = s.map((x) => staticShift(config.shift, x));
  }
  if (config.shiftTerminal !== null) {
    const scale = (1 - s[s.length - 1]) / (1 - config.shiftTerminal);
    s = s.map((x) => 1 - (1 - x) / scale);
  }
  const sigmas32 = Float32Array.from(s);
  let sigmas: Float32Array;
  let timesteps: Float32Array;
  if (config.invertSigmas) {
    const inv = sigmas32.map((x) => 1 - x);
    timesteps = inv.map((x) => x * N);
    sigmas = Float32Array.from([...inv, 1]);
  } else {
    timesteps = sigmas32.map((x) => x * N);
    sigmas = Float32Array.from([...sigmas32, 0]);
  }
  return Object.freeze({ timesteps, sigmas });
}

/** x_next = x + (sigma_{i+1} - sigma_i) * v, written into `out` (may alias `sample`). */
export function eulerStep(schedule: Schedule, i: number, sample: Float32Array, velocity: Float32Array, out: Float32Array = new Float32Array(sample.length)): Float32Array {
  const dt = Math.fround(schedule.sigmas[i + 1] - schedule.sigmas[i]);
  for (let j = 0; j < sample.length; j++) out[j] = sample[j] + dt * velocity[j];
  return out;
}

/** One request's scheduler: its own schedule and position, over the shared config. */
export class RequestSchedulerState {
  stepIndex = 0;

  constructor(readonly schedule: Schedule) {}

  get totalSteps(): number {
    return this.schedule.timesteps.length;
  }

  get done(): boolean {
    return this.stepIndex >= this.totalSteps;
  }

  /** The schedule from step `start` on (image to image: get_timesteps' t_start, with set_begin_index): a request that begins part-way down. */
  static startingAt(schedule: Schedule, start: number): RequestSchedulerState {
    if (!Number.isInteger(start) || start < 0 || start >= schedule.timesteps.length) throw new RangeError(`start must be a step in 0..${schedule.timesteps.length - 1}, got ${start}`);
    return new RequestSchedulerState(Object.freeze({ timesteps: schedule.timesteps.slice(start), sigmas: schedule.sigmas.slice(start) }));
  }

  /** sigma at the current position: before the first step the start's (scale_noise's), after a step the next one's (inpainting's blend), 0 at the end. */
  get sigma(): number {
    return this.schedule.sigmas[this.stepIndex];
  }

  /** sigma after this step (inpainting's blend, when the step is made elsewhere): 0 after the last. */
  get nextSigma(): number {
    return this.schedule.sigmas[this.stepIndex + 1];
  }

  /** The `timestep` model input for the current step (sigma * 1000). */
  get timestep(): number {
    return this.schedule.timesteps[this.stepIndex];
  }

  /** This step's sigma_{i+1} - sigma_i, as float32 (what eulerStep multiplies by): for an update made elsewhere (the GPU). */
  get dt(): number {
    return Math.fround(this.schedule.sigmas[this.stepIndex + 1] - this.schedule.sigmas[this.stepIndex]);
  }

  /** Advances past a step whose update was applied elsewhere (the GPU). */
  stepped(): void {
    this.stepIndex++;
  }

  /** Applies the Euler step in place and advances. */
  step(sample: Float32Array, velocity: Float32Array): void {
    eulerStep(this.schedule, this.stepIndex, sample, velocity, sample);
    this.stepIndex++;
  }
}

/** The shared scheduler: a frozen config and nothing mutable. */
export class FlowMatchEulerScheduler {
  constructor(readonly config: FlowMatchConfig) {
    Object.freeze(this);
  }

  /** A fresh per-request state (the seed's `clone_for_request`); never touches `this`. */
  cloneForRequest(opts: ScheduleOptions & { imageSeqLen?: number }): RequestSchedulerState {
    return new RequestSchedulerState(this.retrieveTimesteps(opts));
  }

  retrieveTimesteps(opts: ScheduleOptions & { imageSeqLen?: number }): Schedule {
    const mu = opts.mu ?? (this.config.useDynamicShifting && opts.imageSeqLen !== undefined ? dynamicShiftMu(this.config, opts.imageSeqLen) : undefined);
    return computeSchedule(this.config, { ...opts, mu });
  }
}
