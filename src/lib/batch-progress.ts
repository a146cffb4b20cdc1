// The overall bar, its text and the tab title: how far the current batch is,
// with failed and cancelled images counted as such (never as done), and the
// time left from the batch's own pace. The pace is steps per second over all
// of the batch's images, so adding work mid-batch adds its steps to what is
// left without changing the pace: the time left grows by the new work's share
// and never resets or jumps back to "unknown". Every cell still shows its own
// time left from its own steps (jobs.svelte.ts).

/** What the batch reads of a grid job (Job satisfies it). */
export interface BatchJob {
  readonly state: string;
  readonly step: number;
  readonly total: number;
  readonly request?: { steps?: number };
  readonly active: boolean;
  /** Made but not yet stored: it counts as made. */
  readonly unsaved?: boolean;
}

export interface BatchView {
  jobs: number;
  /** Images made (done, or made and waiting to be stored). */
  made: number;
  failed: number;
  cancelled: number;
  running: number;
  steps: number;
  totalSteps: number;
  active: boolean;
  /** Milliseconds left at the batch's pace; null until the pace is known. */
  etaMs: number | null;
}

/** How far back the pace looks: long enough to smooth the interleaving, short enough to follow a model's real speed. */
export const PACE_WINDOW_MS = 20_000;

export class BatchProgress {
  /** The batch's jobs, kept even when the grid clears them (its counts never go back). */
  private members: BatchJob[] = [];
  private known = new WeakSet<BatchJob>();
  private lastStep = new WeakMap<BatchJob, number>();
  /** Steps done by the whole batch so far, sampled over time. */
  private progressed = 0;
  private samples: { at: number; steps: number }[] = [];

  /** Takes in the grid's jobs as they are now; jobs sent while none runs start a new batch. */
  update(jobs: readonly BatchJob[], now: number): BatchView {
    const shown = new Set(jobs);
    // a job taken out while it was still active never ran (refused input); an emptied grid ends the batch
    this.members = this.members.some((j) => shown.has(j)) ? this.members.filter((j) => shown.has(j) || !j.active) : [];
    const fresh = jobs.filter((j) => !this.known.has(j));
    if (fresh.length && !this.members.some((j) => j.active)) {
      this.members = [];
      this.progressed = 0;
      this.samples = [];
    }
    for (const j of fresh) {
      this.known.add(j);
      this.members.push(j);
      this.lastStep.set(j, j.step);
    }
    let steps = 0;
    let totalSteps = 0;
    let left = 0;
    const counts = { made: 0, failed: 0, cancelled: 0, running: 0 };
    for (const j of this.members) {
      const total = j.total || j.request?.steps || 1;
      const step = Math.min(j.step, total);
      // a step counts once; a replayed request starting over is not progress backwards
      const before = this.lastStep.get(j) ?? 0;
      if (step > before) this.progressed += step - before;
      this.lastStep.set(j, step);
      totalSteps += total;
      if (j.active) {
        steps += step;
        left += total - step;
        counts.running++;
      } else {
        steps += total;
        if (j.state === 'done' || j.unsaved) counts.made++;
        else if (j.state === 'failed') counts.failed++;
        else if (j.state === 'cancelled') counts.cancelled++;
      }
    }
    if (!counts.running) this.samples = [];
    else if (this.samples.at(-1)?.steps !== this.progressed) {
      this.samples.push({ at: now, steps: this.progressed });
      while (this.samples.length > 2 && now - this.samples[1].at > PACE_WINDOW_MS) this.samples.shift();
    }
    const first = this.samples[0];
    const last = this.samples.at(-1);
    const pace = first && last && last.at > first.at ? (last.steps - first.steps) / (last.at - first.at) : 0;
    return { jobs: this.members.length, ...counts, steps, totalSteps, active: counts.running > 0, etaMs: pace > 0 ? left / pace : null };
  }
}

const failures = (v: BatchView) => `${v.failed ? ` · ${v.failed} failed` : ''}${v.cancelled ? ` · ${v.cancelled} cancelled` : ''}`;

/** "5/9 images · 3 failed · 1 cancelled"; "· done" only when every image was made. */
export function batchText(v: BatchView): string {
  return `${v.made}/${v.jobs} images${failures(v)}${!v.active && v.made === v.jobs ? ' · done' : ''}`;
}

/** The tab: "3/8 · SD3 WebGPU" while it runs, failures named until the next batch. */
export function batchTitle(v: BatchView): string {
  if (!v.jobs || (!v.active && !v.failed)) return 'SD3 WebGPU';
  return `${v.made}/${v.jobs}${failures(v)} · SD3 WebGPU`;
}

export function formatEta(ms: number): string {
  if (ms < 1000) return '<1 s left';
  const s = Math.round(ms / 1000);
  return s < 90 ? `${s} s left` : `${Math.round(s / 60)} min left`;
}
