// The memory plan for one model and one request size, as `npm run generate --
// --plan` prints it: what the weights take, what a request needs, the largest
// single buffer, how many such requests run at once, and a verdict with its
// reason. Computed from configs, small graphs and file sizes alone.
import { formatBytes, ModelTooLargeError } from '../errors.ts';
import type { ModelPlan } from '../model/load-model.ts';
import { availableBytes, fitRequest, largestFittingSize, planRequest, refusal, type RequestPlan } from './budget.ts';

export interface PlanReport {
  model: string;
  family: string;
  /** Where the model was found (variant folder, transformer folder) and where each config came from. */
  layout: { summary: string; root: string; variant: string | null; variants: string[]; transformerFolder: string; discovery: string; shapeFamily: string | null; configSources: Record<string, string> };
  backend: string;
  device: { memoryBytes: number; maxBufferBytes: number; features: readonly string[] };
  /** The form attention runs in on this adapter, its query chunks and why (device-fit.ts chooseAttentionForm). */
  attention: { form: string; chunks: number; reason: string };
  weights: {
    bytes: number;
    components: Record<string, { bytes: number; dtype: 'fp16' | 'fp32'; attentionSites: number; attentionChunks: number; attentionFused: boolean; lowered: Record<string, number> }>;
  };
  request: RequestPlan;
  /** Requests of this size admitted at once (at most maxActive). */
  fitsAtOnce: number;
  /** The largest square side that fits at this guidance, 0 if none. */
  largestSize: number;
  verdict: 'fits' | 'refused';
  reason: string;
}

export function planReport(plan: ModelPlan, width: number, height: number, guidance: number, maxActive: number): PlanReport {
  const { budget, dims } = plan;
  const components: PlanReport['weights']['components'] = {};
  for (const [name, c] of plan.components) {
    components[name] = { bytes: c.graphSize + c.data.reduce((a, d) => a + d.size, 0), dtype: c.summary?.halfPrecision ? 'fp16' : 'fp32', attentionSites: c.attentionSites, attentionChunks: c.chunks, attentionFused: c.fuse ?? false, lowered: c.lowered };
  }
  const request = planRequest(budget, dims, width, height, guidance, maxActive);
  const no = refusal(budget, fitRequest(budget, dims, width, height, guidance));
  const largest = largestFittingSize(budget, dims, plan.limits, 1, 1, guidance);
  const size = `${width}×${height}${guidance > 1 ? ' with guidance' : ''}`;
  let reason: string;
  if (!no) {
    const how = [
      request.rowsPerRun < request.rows ? `its ${request.rows} transformer rows run one per run` : `${request.rows} transformer row${request.rows > 1 ? 's' : ''} per run`,
      request.decodeTile ? `the VAE decodes in ${request.decodeTile}-px tiles` : 'the VAE decodes the whole image',
    ].join(', ');
    reason = `${formatBytes(budget.weightBytes)} of weights + ${formatBytes(request.requestBytes)} for one ${size} request fit ${formatBytes(budget.memoryBytes)} (${how}); each further request holds ${formatBytes(request.stateBytes)}, so ${request.concurrent} run at once; the largest buffer is ${formatBytes(request.largestBufferBytes)} (limit ${formatBytes(budget.maxBufferBytes)})`;
  } else if (no.kind === 'buffer') {
    reason = `one buffer at ${size} would be ${formatBytes(no.neededBytes)}, over the largest buffer of ${formatBytes(no.limitBytes)}`;
  } else {
    reason = `one ${size} request needs ${formatBytes(no.neededBytes)} beside ${formatBytes(budget.weightBytes)} of weights, and ${formatBytes(Math.max(0, availableBytes(budget)))} of ${formatBytes(budget.memoryBytes)} is left`;
  }
  if (no) reason += largest ? `; the largest square size that fits is ${largest.width}×${largest.height}` : '; no size fits';
  return {
    model: plan.id,
    family: plan.family,
    layout: {
      summary: plan.layout.summary,
      root: plan.layout.root,
      variant: plan.layout.variant,
      variants: plan.layout.variants,
      transformerFolder: plan.layout.transformerFolder,
      discovery: plan.layout.discovery,
      shapeFamily: plan.layout.shapeFamily,
      configSources: plan.layout.configSources,
    },
    backend: plan.backend,
    device: { memoryBytes: budget.memoryBytes, maxBufferBytes: budget.maxBufferBytes, features: plan.fit.features ?? [] },
    attention: { form: plan.attention.form, chunks: plan.attention.chunks, reason: plan.attention.reason },
    weights: { bytes: budget.weightBytes, components },
    request,
    fitsAtOnce: request.concurrent,
    largestSize: largest?.width ?? 0,
    verdict: no ? 'refused' : 'fits',
    reason,
  };
}

/** A model refused before any request: the same report shape, from the refusal's numbers. */
export function refusedModelReport(id: string, backend: string, e: ModelTooLargeError): Pick<PlanReport, 'model' | 'backend' | 'verdict' | 'reason'> & { neededBytes: number; memoryBytes: number } {
  return { model: id, backend, verdict: 'refused', reason: e.message, neededBytes: e.neededBytes, memoryBytes: e.availableBytes };
}
