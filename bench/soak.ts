// The soak: 100 requests of mixed sizes, step counts and guidance through one
// engine at once, some cancelled before they start and some mid-run. Shared
// by the unit test (correctness, accounting back to zero), the browser test
// (the same mix through the worker) and `npm run bench` (RSS against its
// baseline). Engine-agnostic: it only needs generate / cancel / status.
import type { GenerateOptions } from '../workers/engine/engine.ts';
import type { EngineStatus, GenerateRequest, GenerateResult } from '../workers/engine/api/types.ts';

export interface SoakRequest extends GenerateRequest {
  id: string;
  seed: number;
  steps: number;
  guidance: number;
  width: number;
  height: number;
  /** 'before': cancelled as soon as submitted; 'mid': at its first step; undefined: runs to the end. */
  cancel?: 'before' | 'mid';
}

const SIZES = [32, 48, 64, 96, 128];
const GUIDANCE = [0, 1, 3, 4.5, 7];

/** A deterministic mix: every 10th request cancelled before it starts, every 10th (offset) mid-run. */
export function soakRequests(n = 100, tag = 'soak'): SoakRequest[] {
  return Array.from({ length: n }, (_, i) => ({
    id: `${tag}-${i}`,
    prompt: `${tag} request ${i}: ${['a lighthouse', 'a red fox', 'a city at night', 'a bowl of fruit'][i % 4]}`,
    seed: 10_000 + i * 7,
    steps: 1 + ((i * 5) % 8),
    guidance: GUIDANCE[(i * 3) % GUIDANCE.length],
    width: SIZES[i % SIZES.length],
    height: SIZES[(i * 2 + 1) % SIZES.length],
    cancel: i % 10 === 3 ? 'before' : i % 10 === 7 ? 'mid' : undefined,
  }));
}

/**
 * The mix's first 8 already take every path: all five sizes (and so several
 * latent shapes), guided and unguided, 1 to 8 steps, a cancel before the start
 * (#3) and one mid-run (#7), and two requests of one shape (#0 and #5, 32×48)
 * that can share a batch. The browser's WebGPU soak runs these where 100 would
 * take too long (SwiftShader, ~20 s a request).
 */
export const SOAK_EVERY_PATH = 8;

/** The request a soak's baseline is taken after: one short guided run (shaders compiled, the runtime's buffers made). */
export const SOAK_WARM_UP: GenerateRequest & { seed: number } = { prompt: 'warm-up: a lighthouse', seed: 1, steps: 2, guidance: 4.5, width: 32, height: 32 };

export interface SoakEngine {
  generate(request: GenerateRequest, opts?: GenerateOptions): Promise<GenerateResult>;
  cancel(id: string): boolean;
  status(): EngineStatus;
}

export interface SoakOutcome {
  request: SoakRequest;
  /** For cancels: whether the engine still had the request when the cancel arrived. */
  cancelAccepted?: boolean;
  result?: GenerateResult;
  error?: { code?: string; message: string };
}

export interface SoakReport {
  requests: number;
  completed: number;
  cancelled: number;
  failed: number;
  /** Requests whose outcome differs from what was asked (finished when it should be cancelled, or the reverse). */
  wrongOutcome: string[];
  /** Completed images whose metadata does not match their request. */
  mismatched: string[];
  wallMs: number;
  outcomes: SoakOutcome[];
}

const METADATA_FIELDS = ['prompt', 'seed', 'steps', 'guidance', 'width', 'height'] as const;

/** Runs the whole mix at once and checks every outcome against its request. */
export async function runSoak(engine: SoakEngine, requests = soakRequests()): Promise<SoakReport> {
  const started = performance.now();
  const outcomes = await Promise.all(
    requests.map((request) => {
      const { cancel, ...req } = request;
      let asked = false;
      let cancelAccepted: boolean | undefined;
      const p = engine.generate(req, {
        onProgress: (e) => {
          if (cancel === 'mid' && e.status === 'step' && !asked) {
            asked = true;
            cancelAccepted = engine.cancel(request.id);
          }
        },
      });
      if (cancel === 'before') cancelAccepted = engine.cancel(request.id);
      return p.then(
        (result): SoakOutcome => ({ request, result, cancelAccepted }),
        (e: { code?: string; message: string }): SoakOutcome => ({ request, error: { code: e.code, message: e.message }, cancelAccepted }),
      );
    }),
  );
  return summarize(outcomes, performance.now() - started);
}

export function summarize(outcomes: SoakOutcome[], wallMs: number): SoakReport {
  const wrongOutcome: string[] = [];
  const mismatched: string[] = [];
  for (const o of outcomes) {
    // a cancel sent while the request runs may arrive after it finished (the
    // engine says so by refusing it): only an accepted cancel must end it
    const wantCancel = o.request.cancel === 'before' || (o.request.cancel === 'mid' && o.cancelAccepted !== false);
    const gotCancel = o.error?.code === 'cancelled';
    if (wantCancel !== gotCancel) wrongOutcome.push(`${o.request.id}: ${o.error ? o.error.message : 'finished'}${o.cancelAccepted === false ? ' (cancel refused)' : ''}`);
    if (o.result) {
      const m = o.result.metadata as unknown as Record<string, unknown>;
      const bad = METADATA_FIELDS.filter((f) => m[f] !== o.request[f]);
      if (o.result.metadata.id !== o.request.id) bad.push('id' as never);
      if (o.result.width !== o.request.width || o.result.height !== o.request.height || o.result.rgba.length !== o.request.width * o.request.height * 4) bad.push('pixels' as never);
      if (bad.length) mismatched.push(`${o.request.id}: ${bad.join(', ')}`);
    }
  }
  return {
    requests: outcomes.length,
    completed: outcomes.filter((o) => o.result).length,
    cancelled: outcomes.filter((o) => o.error?.code === 'cancelled').length,
    failed: outcomes.filter((o) => o.error && o.error.code !== 'cancelled').length,
    wrongOutcome,
    mismatched,
    wallMs,
    outcomes,
  };
}

/** Every k-th completed request, to re-run alone and compare pixels. */
export function sample(report: SoakReport, k = 10): SoakOutcome[] {
  return report.outcomes.filter((o) => o.result).filter((_, i) => i % k === 0);
}
