// Deleting from the gallery can be undone for a few seconds: the images leave
// the view at once and leave storage only when the toast times out. Undo
// brings them back untouched (nothing was deleted yet). A newer delete commits
// the older one first, so one toast speaks for one delete.

/** How long a delete can be undone. */
export const UNDO_MS = 6000;

export class PendingDeletes {
  /** Ids out of the view, waiting to be deleted. */
  hidden = $state<ReadonlySet<string>>(new Set());
  /** The delete the toast offers to undo; it stays until storage has it (committing: too late to undo). */
  toast = $state<{ ids: string[]; text: string; committing: boolean } | null>(null);
  private timer: ReturnType<typeof setTimeout> | null = null;

  constructor(
    /** The real delete (the client's removeMany). */
    private readonly commit: (ids: string[]) => Promise<void>,
    private readonly delayMs = UNDO_MS,
  ) {}

  /** Hides the images now; deletes them when the toast times out. */
  delete(ids: string[], text = ids.length === 1 ? 'Image deleted.' : `${ids.length} images deleted.`): void {
    if (!ids.length) return;
    void this.flush();
    this.hidden = new Set([...this.hidden, ...ids]);
    this.toast = { ids, text, committing: false };
    this.timer = setTimeout(() => void this.flush(), this.delayMs);
  }

  /** Brings the last delete back. */
  undo(): void {
    if (!this.toast || this.toast.committing) return;
    this.clearTimer();
    const back = new Set(this.toast.ids);
    this.hidden = new Set([...this.hidden].filter((id) => !back.has(id)));
    this.toast = null;
  }

  /** Deletes what the toast holds now (its timeout, a newer delete, the page going away). */
  async flush(): Promise<void> {
    const toast = this.toast;
    if (!toast || toast.committing) return;
    this.clearTimer();
    toast.committing = true;
    try {
      await this.commit(toast.ids);
    } finally {
      const gone = new Set(toast.ids);
      this.hidden = new Set([...this.hidden].filter((id) => !gone.has(id)));
      if (this.toast === toast) this.toast = null;
    }
  }

  private clearTimer(): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
  }
}
