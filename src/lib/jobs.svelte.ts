// The grid's jobs: one per submitted request, updated live from progress
// events. Their state is the contract's JobState, as the engine reports it.
import type { GenerateRequest, ImageMetadata, JobState, ProgressEvent } from '../../workers/engine/api/types.ts';

export type { JobState };

export class Job {
  state = $state<JobState>('queued');
  step = $state(0);
  total = $state(0);
  preview = $state<ImageData | null>(null);
  imageUrl = $state<string | null>(null);
  metadata = $state<ImageMetadata | null>(null);
  error = $state<string | null>(null);
  png = $state<Blob | null>(null);
  /** Its image was deleted from the gallery (the cell stays, without a viewer). */
  deleted = $state(false);
  /** Accepted before a reload or an engine restart, and run again from its seed. */
  resumed = $state(false);
  /** Made, but storage refused it (full): shown and downloadable here; the worker stores it when room returns. */
  unsaved = $state(false);
  /** Milliseconds left, from the pace of the steps so far; null before two steps. */
  etaMs = $state<number | null>(null);
  private firstStep: { step: number; at: number } | null = null;

  constructor(
    readonly id: string,
    readonly prompt: string,
    /** What was asked (absent for a request resumed after a reload). */
    readonly request?: GenerateRequest,
  ) {}

  get active(): boolean {
    return this.state !== 'done' && this.state !== 'cancelled' && this.state !== 'failed';
  }

  onProgress(e: ProgressEvent): void {
    if (e.state) this.state = e.state;
    if (e.status === 'step') {
      this.step = e.loaded;
      this.total = e.total;
      const now = performance.now();
      if (!this.firstStep) this.firstStep = { step: e.loaded, at: now };
      else if (e.loaded > this.firstStep.step) this.etaMs = ((now - this.firstStep.at) / (e.loaded - this.firstStep.step)) * (e.total - e.loaded);
      if (e.preview) this.preview = new ImageData(new Uint8ClampedArray(e.preview.rgba), e.preview.width, e.preview.height);
    }
    if (e.status === 'queued') this.total = e.total;
  }
}

export const newRequestId = () => crypto.randomUUID();
