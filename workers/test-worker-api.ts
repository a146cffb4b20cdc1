// The worker's API with fault injection, for the browser tests only: the
// production worker (engine.worker.ts) has no way to crash itself or destroy
// its device. Reached through test.html, which `npm run build` never builds.
import { loseGpuDevice } from './browser-engine.ts';
import { WorkerApi } from './worker-api.ts';

export class TestWorkerApi extends WorkerApi {
  /** Destroys the GPU device, as a driver reset would. */
  async simulateDeviceLoss(): Promise<boolean> {
    return loseGpuDevice();
  }

  /** The worker dies as if it crashed. */
  simulateCrash(): void {
    setTimeout(() => {
      self.close();
      throw new Error('simulated worker crash');
    });
  }
}
