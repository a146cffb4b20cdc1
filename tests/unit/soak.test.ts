// 100 mixed requests through one engine at once (see bench/soak.ts): every one
// finishes or is cancelled as asked, each image matches its own request, a
// sample re-run alone gives identical pixels, and the engine's per-request
// memory returns to zero. RSS against its baseline is in `npm run bench`.
import { describe, expect, it } from 'vitest';
import { runSoak, sample, soakRequests } from '../../bench/soak.ts';
import { maxPixelDiff, newTinyEngine } from '../helpers/tiny-engine.ts';

describe('soak', () => {
  it('100 mixed requests: right outcomes, no swapped images, memory back to zero', async () => {
    const engine = await newTinyEngine({ maxActive: 32 });
    const report = await runSoak(engine, soakRequests(100));
    expect(report.wrongOutcome).toEqual([]);
    expect(report.mismatched).toEqual([]);
    expect(report.failed).toBe(0);
    expect(report.completed + report.cancelled).toBe(100);
    expect(report.cancelled).toBeGreaterThanOrEqual(15);
    const s = engine.status();
    expect([s.requestsActive, s.requestsQueued, s.requestBytes, s.admittedBytes]).toEqual([0, 0, 0, 0]);
    expect(s.peakAdmittedBytes).toBeLessThanOrEqual(s.requestBudgetBytes);

    const alone = await newTinyEngine();
    const picked = sample(report, 8);
    expect(picked.length).toBeGreaterThanOrEqual(10);
    for (const o of picked) {
      const { cancel: _, id: __, ...req } = o.request;
      const again = await alone.generate(req);
      expect(maxPixelDiff(again.rgba, o.result!.rgba), o.request.id).toBe(0);
    }
    await Promise.all([engine.unload(), alone.unload()]);
  });
});
