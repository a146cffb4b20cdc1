// A request's own view over the shared model: its scheduler state, its seeded
// RNG, its latents and prompt embeddings. Nothing here is shared, and release()
// drops every per-request tensor the moment the request ends.
import type { GenerateResult, JobState, ProgressCallback } from '../api/types.ts';
import type { NormalizedRequest } from '../api/validate.ts';
import { RequestRng } from '../rng.ts';
import type { RequestSchedulerState } from '../scheduler/flow-match-euler.ts';
import type { RequestFootprint, RequestInput } from '../memory/footprint.ts';
import { newTransfers, type RequestTensors, type RequestTransfers } from '../denoise/denoiser.ts';
import type { ImageInput } from '../sd3/image-to-image.ts';

export class RequestScope {
  readonly rng: RequestRng;
  /** Where the request stands (the contract's JobState). */
  phase: JobState = 'queued';
  /** Latents, prompt embeddings and this step's velocities, on the host or the device (the denoiser's choice); null until encoded and once ended. */
  tensors: RequestTensors | null = null;
  /** Bytes this request moved between host and device. */
  readonly transfers: RequestTransfers = newTransfers();
  /** Denoising steps taken (transfers per step are counted over these). */
  steps = 0;
  readonly warnings: string[] = [];
  readonly times = { submitted: 0, admitted: 0, denoiseStart: 0, finished: 0, encodeMs: 0 };
  /** Interleaver cycle at which the request was admitted and finished (fairness tests read these). */
  admittedCycle = -1;
  finishedCycle = -1;
  readonly result: Promise<GenerateResult>;
  private settle!: { resolve: (r: GenerateResult) => void; reject: (e: unknown) => void };

  constructor(
    readonly request: NormalizedRequest,
    readonly scheduler: RequestSchedulerState,
    readonly footprint: RequestFootprint,
    /** Latent grid [channels, h, w]. */
    readonly latentShape: readonly [number, number, number],
    readonly onProgress: ProgressCallback | undefined,
    readonly wantsPreview: boolean,
    now: number,
    /** Image to image and inpainting: the prepared image (and mask); null for text to image. */
    readonly input: ImageInput | null = null,
  ) {
    this.rng = new RequestRng(request.seed);
    this.times.submitted = now;
    this.result = new Promise<GenerateResult>((resolve, reject) => (this.settle = { resolve, reject }));
    // callers may drop the promise after cancelling; never an unhandled rejection
    this.result.catch(() => undefined);
  }

  get id(): string {
    return this.request.id;
  }

  /** Classifier-free guidance runs two rows (unconditional first); guidance <= 1 runs one. */
  get guided(): boolean {
    return this.request.guidance > 1;
  }

  /** Requests of different sizes never share a transformer run. */
  get sizeKey(): string {
    return `${this.request.width}x${this.request.height}`;
  }

  /** What it starts from, for the memory budget. */
  get inputKind(): RequestInput {
    return !this.input ? 'text' : this.input.latentMask ? 'inpaint' : 'image';
  }

  /** Bytes of per-request tensors held right now. */
  get heldBytes(): number {
    return this.tensors?.bytes ?? 0;
  }

  release(): void {
    this.tensors?.release();
    this.tensors = null;
    if (this.input) this.input.pixels = null;
  }

  resolve(result: GenerateResult): void {
    this.phase = 'done';
    this.release();
    this.settle.resolve(result);
  }

  reject(error: unknown): void {
    this.phase = (error as { code?: string }).code === 'cancelled' ? 'cancelled' : 'failed';
    this.release();
    this.settle.reject(error);
  }
}
