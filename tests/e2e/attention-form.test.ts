// The form attention runs in, in Chromium on WebGPU (SwiftShader): the loaded model's
// status names the form chosen for this adapter and why (no `subgroups` here: the
// measured default; SwiftShader's subgroups are 4 wide, below the 16 onnxruntime's
// FlashAttention is written for), and a form forced by the load option is the one that runs.
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { ModelInfo } from '../../workers/engine/api/types.ts';
import { NO_SUBGROUPS_FORM } from '../../workers/engine/model/device-fit.ts';
import type { WorkerStatus } from '../../workers/worker-api.ts';
import { openApp, type BrowserSession } from './chromium.ts';

describe('attention form (webgpu)', () => {
  let b: BrowserSession;
  beforeAll(async () => {
    b = await openApp(inject('baseUrl'), 'webgpu');
  });
  afterAll(async () => b?.close());

  const status = () => b.page.evaluate(() => (window as unknown as { __engine: { status(): Promise<WorkerStatus> } }).__engine.status());

  it('status shows the form chosen for this adapter, and a forced one once loaded', async () => {
    const s = await status();
    expect(s.gpu?.backend).toBe('webgpu');
    // SwiftShader's adapter offers subgroups; the worker's device is made without them, so no flash path
    const attention = s.model!.attention!;
    if (/runs FlashAttention/.test(attention.reason)) expect(attention).toMatchObject({ form: 'fused', chunks: 1 });
    else expect(attention).toMatchObject({ form: NO_SUBGROUPS_FORM, reason: expect.stringMatching(s.gpu!.features.includes('subgroups') ? /offers subgroups but the device .* made without them|subgroups are \d+ wide, below the 16/ : /has no subgroups/) });
    // SwiftShader's subgroups are 4 wide: not the flash path
    if (/swiftshader/i.test(s.gpu!.adapter)) expect(attention.form).toBe(NO_SUBGROUPS_FORM);
    const forced = await b.page.evaluate(async () => {
      const api = (window as unknown as { __engine: { loadModel(s: object, p: undefined, o: object): Promise<ModelInfo>; generate(r: object): Promise<{ metadata: { width: number } }> } }).__engine;
      const info = await api.loadModel({ kind: 'url', url: new URL('models/tiny-sd3/', location.href).href }, undefined, { fit: { attention: 'decomposed-chunked' } });
      const r = await api.generate({ prompt: 'forced form', seed: 2, steps: 1, width: 64, height: 64 });
      return { info, width: r.metadata.width };
    });
    expect(forced.info.attention).toMatchObject({ form: 'decomposed-chunked', reason: expect.stringMatching(/^forced by the load option/) });
    expect(forced.width).toBe(64);
    expect((await status()).model!.attention!.form).toBe('decomposed-chunked');
  });
});
