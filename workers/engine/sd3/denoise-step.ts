// One transformer run for a StepBatch: requests of one size, each at its own
// timestep, with or without guidance, stacked row-wise. The rows of a guided
// request are [unconditional, conditional], as diffusers orders them.
import type { Ort } from '../model/component-session.ts';
import type { LoadedModel } from '../model/load-model.ts';
import type { PromptEmbedding } from './encode-prompt.ts';

export interface StepItem {
  latents: Float32Array;
  timestep: number;
  guidance: number;
  /** Present when guidance > 1. */
  uncond: PromptEmbedding | null;
  cond: PromptEmbedding;
}

/** v = v_u + g (v_c - v_u), in place into `out`. */
export function combineGuidance(uncond: Float32Array, cond: Float32Array, guidance: number, out: Float32Array): Float32Array {
  for (let i = 0; i < out.length; i++) out[i] = uncond[i] + guidance * (cond[i] - uncond[i]);
  return out;
}

/** Runs the transformer once for all items; returns each item's velocity (guidance applied). */
export async function predictVelocities(model: LoadedModel, ort: Ort, items: readonly StepItem[], latentShape: readonly [number, number, number]): Promise<Float32Array[]> {
  const [C, h, w] = latentShape;
  const per = C * h * w;
  const rows = items.reduce((n, it) => n + (it.uncond ? 2 : 1), 0);
  const seqJoint = items[0].cond.embeds.length;
  const pooledDim = items[0].cond.pooled.length;
  const hidden = new Float32Array(rows * per);
  const text = new Float32Array(rows * seqJoint);
  const pooled = new Float32Array(rows * pooledDim);
  const timestep = new Float32Array(rows);
  let r = 0;
  for (const it of items) {
    for (const emb of it.uncond ? [it.uncond, it.cond] : [it.cond]) {
      hidden.set(it.latents, r * per);
      text.set(emb.embeds, r * seqJoint);
      pooled.set(emb.pooled, r * pooledDim);
      timestep[r] = it.timestep;
      r++;
    }
  }
  const out = await model.transformer.run({
    hidden_states: new ort.Tensor('float32', hidden, [rows, C, h, w]),
    encoder_hidden_states: new ort.Tensor('float32', text, [rows, seqJoint / model.transformerConfig.jointAttentionDim, model.transformerConfig.jointAttentionDim]),
    pooled_projections: new ort.Tensor('float32', pooled, [rows, pooledDim]),
    timestep: new ort.Tensor('float32', timestep, [rows]),
  });
  const v = out.out_hidden_states.data as Float32Array;
  const velocities: Float32Array[] = [];
  r = 0;
  for (const it of items) {
    if (it.uncond) {
      velocities.push(combineGuidance(v.subarray(r * per, (r + 1) * per), v.subarray((r + 1) * per, (r + 2) * per), it.guidance, new Float32Array(per)));
      r += 2;
    } else {
      velocities.push(v.slice(r * per, (r + 1) * per));
      r += 1;
    }
  }
  for (const t of Object.values(out)) t.dispose();
  return velocities;
}
