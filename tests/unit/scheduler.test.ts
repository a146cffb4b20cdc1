// Expected values come from the formulas in SD3-REFERENCE.md section 3,
// written out here independently of the implementation, in float64.
import { describe, expect, it } from 'vitest';
import { computeSchedule, dynamicShiftMu, FlowMatchEulerScheduler, parseSchedulerConfig } from '../../workers/engine/scheduler/flow-match-euler.ts';

function referenceStatic(shift: number, N: number) {
  const sigma = (s: number) => (shift * s) / (1 + (shift - 1) * s);
  const sigmaMax = sigma(1);
  const sigmaMin = sigma(0.001);
  const t = Array.from({ length: N }, (_, i) => sigmaMax * 1000 + ((sigmaMin * 1000 - sigmaMax * 1000) * i) / (N - 1));
  const sig = t.map((x) => sigma(x / 1000));
  return { timesteps: sig.map((x) => x * 1000), sigmas: [...sig, 0] };
}

function referenceDynamic(mu: number, N: number) {
  const t = Array.from({ length: N }, (_, i) => 1000 + ((1 - 1000) * i) / (N - 1));
  const sig = t.map((x) => Math.exp(mu) / (Math.exp(mu) + (1 / (x / 1000) - 1)));
  return { timesteps: sig.map((x) => x * 1000), sigmas: [...sig, 0] };
}

const close = (actual: ArrayLike<number>, expected: number[], tol: number) => {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) expect(Math.abs(actual[i] - expected[i])).toBeLessThan(tol * Math.max(1, Math.abs(expected[i])));
};

const sd3 = parseSchedulerConfig({ num_train_timesteps: 1000, shift: 3.0 });

describe('flow-match Euler schedule', () => {
  it('shift 3.0, 28 steps', () => {
    const s = computeSchedule(sd3, { steps: 28 });
    const ref = referenceStatic(3, 28);
    close(s.timesteps, ref.timesteps, 1e-6);
    close(s.sigmas, ref.sigmas, 1e-6);
    expect(s.sigmas[0]).toBeCloseTo(1, 6);
    expect(s.sigmas[27]).toBeCloseTo(0.00893, 4); // shift applied twice, as the reference notes
    expect(s.sigmas[28]).toBe(0);
  });

  it('shift 3.0, 4 steps', () => {
    const s = computeSchedule(sd3, { steps: 4 });
    const ref = referenceStatic(3, 4);
    close(s.timesteps, ref.timesteps, 1e-6);
    close(s.sigmas, ref.sigmas, 1e-6);
  });

  it('dynamic shifting with mu from the image token count', () => {
    const cfg = parseSchedulerConfig({ shift: 3.0, use_dynamic_shifting: true, base_shift: 0.5, max_shift: 1.15, base_image_seq_len: 256, max_image_seq_len: 4096 });
    const seq = 64 * 64; // 1024px image: 128x128 latents, patch 2
    const m = (1.15 - 0.5) / (4096 - 256);
    const mu = m * seq + (0.5 - m * 256);
    expect(dynamicShiftMu(cfg, seq)).toBeCloseTo(mu, 12);
    expect(mu).toBeCloseTo(1.15, 10);
    const s = new FlowMatchEulerScheduler(cfg).retrieveTimesteps({ steps: 28, imageSeqLen: seq });
    const ref = referenceDynamic(mu, 28);
    close(s.timesteps, ref.timesteps, 1e-6);
    close(s.sigmas, ref.sigmas, 1e-6);
  });

  it('custom sigmas and shift_terminal', () => {
    const cfg = parseSchedulerConfig({ shift: 3.0, shift_terminal: 0.02 });
    const custom = [1, 0.75, 0.5, 0.25];
    const s = computeSchedule(cfg, { sigmas: custom });
    const shifted = custom.map((x) => (3 * x) / (1 + 2 * x));
    const scale = (1 - shifted[3]) / (1 - 0.02);
    const stretched = shifted.map((x) => 1 - (1 - x) / scale);
    close(s.sigmas, [...stretched, 0], 1e-6);
    expect(s.sigmas[3]).toBeCloseTo(0.02, 6);
  });

  it('one Euler step is x + (sigma_next - sigma) v', () => {
    const sched = new FlowMatchEulerScheduler(sd3).cloneForRequest({ steps: 4 });
    const x = Float32Array.from([1, -2, 0.5]);
    const v = Float32Array.from([0.1, 0.2, -0.3]);
    const dt = sched.schedule.sigmas[1] - sched.schedule.sigmas[0];
    const expected = [1 + dt * 0.1, -2 + dt * 0.2, 0.5 - dt * 0.3];
    sched.step(x, v);
    close(x, expected, 1e-6);
    expect(sched.stepIndex).toBe(1);
  });

  it('never mutates the shared scheduler, whatever requests ask for', () => {
    const shared = new FlowMatchEulerScheduler(parseSchedulerConfig({ shift: 3.0, use_dynamic_shifting: true }));
    const before = JSON.stringify(shared.config);
    const states = [];
    for (let i = 1; i <= 60; i++) {
      const st = shared.cloneForRequest({ steps: (i % 50) + 1, imageSeqLen: 16 * i });
      st.step(new Float32Array(4), new Float32Array(4).fill(1));
      states.push(st);
    }
    expect(JSON.stringify(shared.config)).toBe(before);
    expect(Object.isFrozen(shared)).toBe(true);
    expect(Object.isFrozen(shared.config)).toBe(true);
    // and the states are independent of one another
    expect(new Set(states.map((s) => s.schedule)).size).toBe(60);
    expect(states.every((s) => s.stepIndex === 1)).toBe(true);
  });

  it('rejects a bad config field by name', () => {
    expect(() => parseSchedulerConfig({ shift: 'three' })).toThrow(/shift/);
  });
});
