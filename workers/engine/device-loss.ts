// The one subscription to a GPU device's loss. A `device.lost.then(...)` made
// by each denoiser or engine lasts until the device is lost, usually never, and
// its callback keeps whatever it names reachable: old models stayed in memory
// after a switch. Here the device's `lost` promise is subscribed once, and the
// parts that care add a listener and remove it when they are done.

/** The part of a GPUDevice this module reads (the engine core runs where GPUDevice is not a global). */
export interface LosableDevice {
  readonly lost: Promise<{ message?: string; reason?: string }>;
}

export type LossListener = (reason: string) => void;

/**
 * How long a failed GPU call waits for the browser to report a device loss.
 * The report comes from the GPU process after the call that met the loss,
 * later still on a loaded machine; the wait holds up only the requests of
 * that call (the interleaver's fail()).
 */
export const LOSS_REPORT_MS = 10_000;

/**
 * Could this error be a device loss not reported yet? Not an error of ours
 * (the engine's typed errors) nor a bug in JavaScript (TypeError and its
 * kin): those are the request's own at once. Anything else from a GPU call,
 * onnxruntime's failures included, may be a loss.
 */
export function lossPossible(e: unknown): boolean {
  if (!(e instanceof Error)) return true;
  if (e instanceof TypeError || e instanceof RangeError || e instanceof ReferenceError || e instanceof SyntaxError) return false;
  const code = (e as { code?: unknown }).code;
  return typeof code !== 'string' || code === 'device_lost';
}

export class DeviceLoss {
  /** Why the device was lost; null while it lives. */
  reason: string | null = null;
  private readonly listeners = new Set<LossListener>();

  constructor(device: LosableDevice) {
    void device.lost.then((info) => {
      this.reason = info.message || info.reason || 'unknown';
      for (const listener of [...this.listeners]) listener(this.reason);
      this.listeners.clear();
    });
  }

  /** Calls `listener` once when the device is lost (at once when it already is); returns the call that removes it. */
  listen(listener: LossListener): () => void {
    if (this.reason !== null) {
      listener(this.reason);
      return () => undefined;
    }
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /** Listeners registered now: what the loss still keeps reachable. */
  get listenerCount(): number {
    return this.listeners.size;
  }

  /** Resolves when the device is lost or `ms` have passed, whichever is first, leaving no listener behind. */
  async within(ms: number): Promise<string | null> {
    if (this.reason !== null) return this.reason;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let stop = (): void => undefined;
    await new Promise<void>((resolve) => {
      timer = setTimeout(resolve, ms);
      stop = this.listen(() => resolve());
    });
    clearTimeout(timer);
    stop();
    return this.reason;
  }
}

const watched = new WeakMap<LosableDevice, DeviceLoss>();

/** The device's one loss watcher, made on first use. */
export function deviceLoss(device: LosableDevice): DeviceLoss {
  let loss = watched.get(device);
  if (!loss) {
    loss = new DeviceLoss(device);
    watched.set(device, loss);
  }
  return loss;
}
