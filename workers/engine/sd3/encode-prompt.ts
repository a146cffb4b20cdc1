// SD3 prompt encoding: CLIP-L and CLIP-G penultimate states side by side,
// zero-padded to the joint dimension, followed by T5's states (or zeros);
// pooled = CLIP-L pooled ‖ CLIP-G pooled.
import type { Ort, Tensor } from '../model/component-session.ts';
import type { LoadedModel, TextEncoder } from '../model/load-model.ts';
import { CLIP_LENGTH } from '../model/model-config.ts';

export interface PromptEmbedding {
  /** [CLIP_LENGTH + t5Length, jointDim] */
  embeds: Float32Array;
  /** [pooledDim] */
  pooled: Float32Array;
  /** The text was longer than a tokenizer's limit and was cut. */
  truncated: boolean;
}

function idsTensor(ort: Ort, enc: TextEncoder, ids: number[], rows: number, length: number): Tensor {
  const type = enc.session.inputType('input_ids');
  if (type === 'int32') return new ort.Tensor('int32', Int32Array.from(ids), [rows, length]);
  if (type === 'int64') return new ort.Tensor('int64', BigInt64Array.from(ids, (v) => BigInt(v)), [rows, length]);
  throw new Error(`${enc.session.name}: unsupported input_ids type ${type}`);
}

async function runEncoder(ort: Ort, enc: TextEncoder, texts: readonly string[], length: number, outputs: string[]) {
  const tok = enc.tokenizer.encode(texts, length);
  const result = await enc.session.run({ input_ids: idsTensor(ort, enc, tok.ids, texts.length, length) }, outputs);
  const data = outputs.map((name) => Float32Array.from(result[name].data as Float32Array));
  for (const t of Object.values(result)) t.dispose();
  return { data, truncated: tok.truncated };
}

/** Encodes distinct texts in one batch per encoder; returns one embedding per input text. */
export async function encodePrompts(model: LoadedModel, ort: Ort, texts: readonly string[]): Promise<PromptEmbedding[]> {
  const unique = [...new Set(texts)];
  const joint = model.transformerConfig.jointAttentionDim;
  const t5Len = model.t5MaxLength;
  const seq = CLIP_LENGTH + t5Len;
  const { clipL, clipG, t5 } = model;

  const l = await runEncoder(ort, clipL, unique, CLIP_LENGTH, [clipL.hiddenOutput, 'text_embeds']);
  const g = await runEncoder(ort, clipG, unique, CLIP_LENGTH, [clipG.hiddenOutput, 'text_embeds']);
  const t = t5 ? await runEncoder(ort, t5, unique, t5Len, [t5.hiddenOutput]) : null;

  const HL = clipL.hiddenSize;
  const HG = clipG.hiddenSize;
  if (HL + HG > joint) throw new Error(`CLIP widths ${HL}+${HG} exceed the transformer's joint_attention_dim ${joint}`);
  const byText = new Map<string, PromptEmbedding>();
  unique.forEach((text, b) => {
    const embeds = new Float32Array(seq * joint); // zero padding is the fill value
    for (let tok = 0; tok < CLIP_LENGTH; tok++) {
      embeds.set(l.data[0].subarray((b * CLIP_LENGTH + tok) * HL, (b * CLIP_LENGTH + tok + 1) * HL), tok * joint);
      embeds.set(g.data[0].subarray((b * CLIP_LENGTH + tok) * HG, (b * CLIP_LENGTH + tok + 1) * HG), tok * joint + HL);
    }
    if (t) embeds.set(t.data[0].subarray(b * t5Len * joint, (b + 1) * t5Len * joint), CLIP_LENGTH * joint);
    const PL = clipL.projectionSize;
    const PG = clipG.projectionSize;
    const pooled = new Float32Array(PL + PG);
    pooled.set(l.data[1].subarray(b * PL, (b + 1) * PL), 0);
    pooled.set(g.data[1].subarray(b * PG, (b + 1) * PG), PL);
    byText.set(text, { embeds, pooled, truncated: l.truncated[b] || g.truncated[b] || (t?.truncated[b] ?? false) });
  });
  return texts.map((text) => byText.get(text)!);
}
