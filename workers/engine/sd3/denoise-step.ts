// One transformer run over a set of rows: each row is one branch of one
// request (unconditional or conditional with guidance, or its only branch),
// at its own timestep. Rows of a request may land in different runs when
// memory is short; the interleaver combines a request's branches once both
// are back.
import type { Ort } from '../model/component-session.ts';
import type { LoadedModel } from '../model/load-model.ts';
import type { PromptEmbedding } from './encode-prompt.ts';

export interface StepRow {
  latents: Float32Array;
  timestep: number;
  embedding: PromptEmbedding;
}

/** v = v_u + g (v_c - v_u), in place into `out`. */
export function combineGuidance(uncond: Float32Array, cond: Float32Array, guidance: number, out: Float32Array): Float32Array {
  for (let i = 0; i < out.length; i++) out[i] = uncond[i] + guidance * (cond[i] - uncond[i]);
  return out;
}

/** Runs the transformer once for all rows (one image size); returns each row's velocity. */
export async function predictRows(model: LoadedModel, ort: Ort, rows: readonly StepRow[], latentShape: readonly [number, number, number]): Promise<Float32Array[]> {
  const [C, h, w] = latentShape;
  const per = C * h * w;
  const n = rows.length;
  const seqJoint = rows[0].embedding.embeds.length;
  const pooledDim = rows[0].embedding.pooled.length;
  const hidden = new Float32Array(n * per);
  const text = new Float32Array(n * seqJoint);
  const pooled = new Float32Array(n * pooledDim);
  const timestep = new Float32Array(n);
  rows.forEach((row, r) => {
    hidden.set(row.latents, r * per);
    text.set(row.embedding.embeds, r * seqJoint);
    pooled.set(row.embedding.pooled, r * pooledDim);
    timestep[r] = row.timestep;
  });
  const joint = model.transformerConfig.jointAttentionDim;
  const out = await model.transformer.run({
    hidden_states: new ort.Tensor('float32', hidden, [n, C, h, w]),
    encoder_hidden_states: new ort.Tensor('float32', text, [n, seqJoint / joint, joint]),
    pooled_projections: new ort.Tensor('float32', pooled, [n, pooledDim]),
    timestep: new ort.Tensor('float32', timestep, [n]),
  });
  const v = out.out_hidden_states.data as Float32Array;
  const velocities = rows.map((_, r) => v.slice(r * per, (r + 1) * per));
  for (const t of Object.values(out)) t.dispose();
  return velocities;
}
