// The soak in the browser: the Node soak's mix (bench/soak.ts) through the
// worker, with its IndexedDB storage, on each backend. Each request finishes or
// is cancelled as asked, each stored image carries its own request's settings, a
// sample matches the Node engine's image for the same seed, the durable queue is
// empty and the engine's memory is back to zero. On WebGPU, the device's own
// buffer meter (workers/gpu-memory.ts) is back to its baseline too.
//
// wasm runs the whole 100-request mix. WebGPU on this machine's SwiftShader
// takes about 20 s a request (8 requests: ~100 s; 20: ~430 s), so here it runs
// the mix's first 8 (SOAK_EVERY_PATH: every size, guided and unguided, 1 to 8
// steps, a cancel before and one mid-run, two requests of one shape to batch);
// the 100-request WebGPU soak is tests/scale/soak-webgpu.test.ts (npm run test:scale).
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { SOAK_EVERY_PATH, SOAK_WARM_UP, soakRequests } from '../../bench/soak.ts';
import { openApp, type BrowserSession } from './chromium.ts';
import { expectGpuMemoryBackToBaseline, expectSoakAccountedFor, generateIn, gpuMemoryIn, resetGpuPeakIn, soakInPage } from './page-images.ts';

describe.each([
  { backend: 'wasm' as const, n: 100 },
  { backend: 'webgpu' as const, n: SOAK_EVERY_PATH },
])('soak in the page on $backend', ({ backend, n }) => {
  let b: BrowserSession;
  beforeAll(async () => {
    b = await openApp(inject('baseUrl'), backend);
  });
  afterAll(async () => b?.close());

  it(`${n} mixed requests through the worker: right outcomes, stored with their own settings, nothing left behind`, async () => {
    const requests = soakRequests(n, `page-${backend}`);
    // the baseline: the model loaded and one request run (shaders compiled, onnxruntime's cache holding what a run takes)
    await generateIn(b.page, { ...SOAK_WARM_UP, id: `warm-up-${backend}` });
    // on wasm the device may still exist (detected, metered) but no session uses it: nothing to check there
    const baseline = backend === 'webgpu' ? await gpuMemoryIn(b.page) : null;
    if (backend === 'webgpu') expect(baseline).not.toBeNull();
    if (baseline) await resetGpuPeakIn(b.page);

    const soak = await soakInPage(b.page, requests);
    console.log(`browser soak on ${backend}: ${soak.report.completed} done, ${soak.report.cancelled} cancelled in ${soak.report.wallMs} ms`);
    // every WebGPU image (a few) and a sample of the wasm ones equal the Node engine's within 3 levels
    await expectSoakAccountedFor(b.page, requests, soak, { sampleEvery: backend === 'wasm' ? 8 : 1 });

    if (baseline) {
      const { after, diff } = await expectGpuMemoryBackToBaseline(b.page, baseline, { ...SOAK_WARM_UP, id: `warm-up-${backend}` });
      const mb = (x: number) => `${(x / 1024 ** 2).toFixed(1)} MB`;
      console.log(
        `GPU buffers: baseline ${mb(baseline.liveBytes)} in ${baseline.buffers}, after ${mb(after.liveBytes)} in ${after.buffers} ` +
          `(onnxruntime's cache +${mb(diff.ortCache.bytes)} in ${diff.ortCache.buffers}), peak ${mb(after.peakBytes)}, largest ${mb(after.largestBufferBytes)}`,
      );
    }
    // ~2.5 min on WebGPU here when the machine is otherwise idle (warm-up with its shader compiles ~30 s, the 8 requests ~100 s)
  }, 480_000);
});
