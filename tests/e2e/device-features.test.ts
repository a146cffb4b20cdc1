// The engine's GPU device, in Chromium on WebGPU (SwiftShader here): it is
// asked for every feature onnxruntime's WebGPU provider can use that the
// adapter offers, subgroups among them unless they are narrower than
// onnxruntime's subgroup kernels are written for (SwiftShader's are 4 wide:
// with them, the fused-attention exports' images left diffusers' by 3 to 8
// levels in real-exports.test.ts), at the adapter's own limits, and the
// status (and the page's status panel) reports what was granted. A request
// then shows its per-stage times in status: wall time for every stage, GPU
// time for the guidance/Euler pass where timestamp-query is granted, and the
// transformer's FLOPs.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ImageMetadata } from '../../workers/engine/api/types.ts';
import type { WorkerStatus } from '../../workers/worker-api.ts';
import { MIN_SUBGROUP_SIZE, ORT_FEATURES, subgroupsWithheld } from '../../workers/browser-engine.ts';
import { openApp, STATE_WAIT_MS, type BrowserSession } from './chromium.ts';

describe('the engine device (webgpu)', () => {
  let b: BrowserSession;
  beforeAll(async () => {
    b = await openApp(inject('baseUrl'), 'webgpu');
  });
  afterAll(async () => b?.close());

  it('withholds subgroups only where they are narrower than onnxruntime writes for', () => {
    expect(subgroupsWithheld(undefined)).toBeNull();
    expect(subgroupsWithheld(MIN_SUBGROUP_SIZE)).toBeNull();
    expect(subgroupsWithheld(32)).toBeNull();
    expect(subgroupsWithheld(4)).toMatch(/subgroups are 4 wide, below the 16/);
  });

  it("carries every onnxruntime feature the adapter offers (subgroups where wide enough), at the adapter's limits; status and the panel say so", async () => {
    const { adapter, status } = await b.page.evaluate(async () => {
      const a = (await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' }))!;
      const api = (window as unknown as { __engine: { status(): Promise<unknown> } }).__engine;
      return {
        adapter: { features: [...a.features], subgroupMinSize: (a.info as GPUAdapterInfo & { subgroupMinSize?: number }).subgroupMinSize, maxBufferSize: a.limits.maxBufferSize, maxStorageBufferBindingSize: a.limits.maxStorageBufferBindingSize, maxComputeWorkgroupStorageSize: a.limits.maxComputeWorkgroupStorageSize },
        status: (await api.status()) as WorkerStatus,
      };
    });
    const gpu = status.gpu!;
    expect(gpu.backend).toBe('webgpu');
    console.log('adapter features', adapter.features.sort().join(', '));
    console.log('device features (granted)', gpu.features.join(', '), '; requested', gpu.requestedFeatures?.join(', '));
    // every feature onnxruntime can use is on the device exactly where the adapter offers it
    const withheld = subgroupsWithheld(adapter.subgroupMinSize);
    const subgroupFeatures = ['subgroups', 'subgroup-size-control', 'chromium-experimental-subgroup-matrix'];
    for (const f of ORT_FEATURES) expect(gpu.features.includes(f), f).toBe(adapter.features.includes(f) && !(withheld && subgroupFeatures.includes(f)));
    // an adapter offering subgroups: the device has them where they are wide enough, else status says why not
    if (adapter.features.includes('subgroups')) {
      if (withheld) expect(gpu.withheldFeatures).toBe(withheld);
      else expect(gpu.features).toContain('subgroups');
    }
    expect(gpu.reducedRequest).toBeUndefined();
    // the device's limits are the adapter's, not the defaults
    expect(gpu.limits.maxBufferSize).toBe(adapter.maxBufferSize);
    expect(gpu.limits.maxStorageBufferBindingSize).toBe(adapter.maxStorageBufferBindingSize);
    expect(gpu.limits.maxComputeWorkgroupStorageSize).toBe(adapter.maxComputeWorkgroupStorageSize);
    // the page shows the granted features
    const panel = b.page.getByTestId('status-features');
    await panel.waitFor({ timeout: STATE_WAIT_MS });
    const text = await panel.innerText();
    for (const f of gpu.features) expect(text).toContain(f);
    if (gpu.withheldFeatures) expect(text).toContain(gpu.withheldFeatures);
  });

  it('a request gives per-stage times in status, the panel and its metadata; the guidance pass has GPU time where timestamp-query is granted', async () => {
    const { status, metadata } = await b.page.evaluate(async () => {
      type Api = { loadModel(s: object, p: undefined, o: object): Promise<unknown>; generate(r: object): Promise<{ metadata: ImageMetadata }>; status(): Promise<unknown> };
      const api = (window as unknown as { __engine: Api }).__engine;
      await api.loadModel({ kind: 'url', url: new URL('models/tiny-sd3/', location.href).href }, undefined, { denoiseOnDevice: true });
      const r = await api.generate({ prompt: 'a lighthouse at dawn', seed: 7, steps: 2, guidance: 4.5, width: 64, height: 64 });
      return { status: (await api.status()) as WorkerStatus, metadata: r.metadata };
    });
    const st = status.stages!;
    console.log('stages', JSON.stringify(st));
    for (const k of ['textEncoders', 'transformer', 'guidance', 'vaeDecode'] as const) {
      expect(st.stages[k]?.runs, k).toBeGreaterThan(0);
      expect(st.stages[k]!.wallMeanMs, k).toBeGreaterThan(0);
    }
    const timestamps = status.gpu!.features.includes('timestamp-query');
    expect(st.gpuTimestamps).toBe(timestamps);
    if (timestamps) expect(st.stages.guidance!.gpu!.runs).toBeGreaterThan(0);
    // onnxruntime's runs are wall time only
    expect(st.stages.transformer!.gpu).toBeUndefined();
    expect(st.transformer!.flopsPerRowStep).toBeGreaterThan(0);
    expect(st.transformer!.achievedFlopsPerSecond).toBeGreaterThan(0);
    // SwiftShader is not in the peak table: no fraction
    expect(st.transformer!.peak).toBeUndefined();
    // the request's own share
    const own = metadata.timings.stages!;
    expect(own.transformerRuns).toBe(2);
    expect(own.transformerMs).toBeGreaterThan(0);
    expect(own.guidanceMs).toBeGreaterThan(0);
    // and the page shows them
    const panel = b.page.getByTestId('status-stages');
    await panel.locator('[data-stage="transformer"]').waitFor({ timeout: STATE_WAIT_MS });
    await b.page.getByTestId('status-flops').filter({ hasText: /FLOP per row per step/ }).waitFor({ timeout: STATE_WAIT_MS });
    if (timestamps) await panel.locator('[data-stage="guidance"]').filter({ hasText: /ms GPU/ }).waitFor({ timeout: STATE_WAIT_MS });
  });
});
