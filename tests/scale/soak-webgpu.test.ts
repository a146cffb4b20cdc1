// The 100-request soak on WebGPU (npm run test:scale): the whole mix of
// bench/soak.ts through the worker on the webgpu backend, every request
// accounted for and the device's buffer meter back to its baseline. About 35
// minutes on SwiftShader (~20 s a request), so `npm test` runs the mix's first 8,
// which take every path (tests/e2e/soak.test.ts); this is the same check at length.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { build, preview, type PreviewServer } from 'vite';
import { SOAK_WARM_UP, soakRequests } from '../../bench/soak.ts';
import { openApp, type BrowserSession } from '../e2e/chromium.ts';
import { expectGpuMemoryBackToBaseline, expectSoakAccountedFor, generateIn, gpuMemoryIn, resetGpuPeakIn, soakInPage } from '../e2e/page-images.ts';

describe('soak in the page on webgpu, 100 requests (npm run test:scale)', () => {
  let server: PreviewServer;
  let b: BrowserSession;
  beforeAll(async () => {
    await build({ mode: 'test', logLevel: 'warn' });
    server = await preview({ mode: 'test', preview: { port: 4176, strictPort: false, host: '127.0.0.1' }, logLevel: 'warn' });
    b = await openApp(`${server.resolvedUrls!.local[0]}test.html`, 'webgpu');
  });
  afterAll(async () => {
    await b?.close();
    await server?.close();
  });

  it('100 mixed requests: every one accounted for, GPU buffers back to the baseline', async () => {
    const requests = soakRequests(100, 'scale-webgpu');
    const warmUp = { ...SOAK_WARM_UP, id: 'warm-up-scale' };
    await generateIn(b.page, warmUp);
    const baseline = (await gpuMemoryIn(b.page))!;
    expect(baseline).not.toBeNull();
    await resetGpuPeakIn(b.page);
    const soak = await soakInPage(b.page, requests);
    console.log(`webgpu soak: ${soak.report.completed} done, ${soak.report.cancelled} cancelled in ${soak.report.wallMs} ms`);
    await expectSoakAccountedFor(b.page, requests, soak);
    const { after, diff } = await expectGpuMemoryBackToBaseline(b.page, baseline, warmUp);
    const mb = (x: number) => `${(x / 1024 ** 2).toFixed(1)} MB`;
    console.log(`GPU buffers: baseline ${mb(baseline.liveBytes)} in ${baseline.buffers}, after ${mb(after.liveBytes)} (onnxruntime's cache +${mb(diff.ortCache.bytes)}), peak ${mb(after.peakBytes)}`);
  });
});
