// The bytes each request moves between host and device, on the host path
// (wasm in Node: every step uploads each row whole and reads its velocity
// back). The per-request counts add up exactly to what the transformer
// session itself saw cross, and status reports the totals. The device path's
// counts are checked in the page (tests/e2e/gpu-resident.test.ts).
import { describe, expect, it } from 'vitest';
import { newTinyEngine } from '../helpers/tiny-engine.ts';

describe('transfer counts (host path)', () => {
  it('a guided request moves both rows up and both velocities back each step; the requests add up to the session', async () => {
    const engine = await newTinyEngine();
    const m = engine.model!;
    const requests = [
      { prompt: 'a lighthouse', seed: 1, steps: 3, guidance: 4.5, width: 64, height: 64 },
      { prompt: 'a red fox', seed: 2, steps: 2, guidance: 1, width: 64, height: 64 },
      { prompt: 'a harbour', seed: 3, steps: 2, guidance: 4.5, width: 128, height: 64 },
    ];
    const results = await Promise.all(requests.map((r) => engine.generate(r)));
    const { jointAttentionDim, pooledProjectionDim } = m.transformerConfig;
    const seq = 77 + 256; // CLIP tokens then T5 tokens, as the transformer takes them
    for (const [i, r] of requests.entries()) {
      const t = results[i].metadata.transfers!;
      const rows = r.guidance > 1 ? 2 : 1;
      const latent = 16 * (r.width / 8) * (r.height / 8) * 4;
      const row = latent + seq * jointAttentionDim * 4 + pooledProjectionDim * 4 + 4; // latents, embeddings, pooled, timestep
      expect(t).toEqual({ residency: 'host', steps: r.steps, beginUploadBytes: 0, stepUploadBytes: rows * row * r.steps, stepDownloadBytes: rows * latent * r.steps, previewBytes: 0 });
    }
    // every byte the transformer took and gave belongs to one request's step
    const sum = (k: 'stepUploadBytes' | 'stepDownloadBytes') => results.reduce((n, r) => n + r.metadata.transfers![k], 0);
    expect(m.transformer.transfers).toEqual({ uploadBytes: sum('stepUploadBytes'), downloadBytes: sum('stepDownloadBytes') });
    const s = engine.status().denoise!;
    expect([s.residency, s.liveDeviceTensors]).toEqual(['host', 0]);
    const sessions = [m.clipL.session, m.clipG.session, m.t5?.session, m.transformer, m.vaeDecoder].filter((x) => x !== undefined);
    expect(s.uploadBytes).toBe(sessions.reduce((n, x) => n + x.transfers.uploadBytes, 0));
    expect(s.downloadBytes).toBe(sessions.reduce((n, x) => n + x.transfers.downloadBytes, 0));
    await engine.unload();
  });
});
