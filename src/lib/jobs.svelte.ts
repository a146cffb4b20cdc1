// The grid's jobs: one per submitted request, updated live from progress events.
import type { ImageMetadata, ProgressEvent } from '../../workers/engine/api/types.ts';

export type JobState = 'queued' | 'encoding' | 'running' | 'decoding' | 'done' | 'cancelled' | 'failed';

export class Job {
  state = $state<JobState>('queued');
  step = $state(0);
  total = $state(0);
  preview = $state<ImageData | null>(null);
  imageUrl = $state<string | null>(null);
  metadata = $state<ImageMetadata | null>(null);
  error = $state<string | null>(null);

  constructor(
    readonly id: string,
    readonly prompt: string,
  ) {}

  get active(): boolean {
    return this.state === 'queued' || this.state === 'encoding' || this.state === 'running' || this.state === 'decoding';
  }

  onProgress(e: ProgressEvent): void {
    if (e.status === 'encoding') this.state = 'encoding';
    if (e.status === 'step') {
      this.state = 'running';
      this.step = e.loaded;
      this.total = e.total;
      if (e.preview) this.preview = new ImageData(new Uint8ClampedArray(e.preview.rgba), e.preview.width, e.preview.height);
    }
    if (e.status === 'decoding') this.state = 'decoding';
    if (e.status === 'queued') this.total = e.total;
  }
}

export const newRequestId = () => crypto.randomUUID();
