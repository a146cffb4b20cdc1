// Prompt tokenization through @huggingface/transformers' tokenizer classes,
// built from the model's own tokenizer.json / tokenizer_config.json.
import * as transformers from '@huggingface/transformers';

export interface TokenizedBatch {
  /** Row-major [batch, maxLength] token ids. */
  ids: number[];
  /** Which rows were cut to maxLength. */
  truncated: boolean[];
}

export class PromptTokenizer {
  private readonly tokenizer: transformers.PreTrainedTokenizer;

  constructor(json: object, config: Record<string, unknown>) {
    // the class AutoTokenizer would pick: tokenizer_config's tokenizer_class, "Fast" dropped
    const name = String(config.tokenizer_class ?? 'PreTrainedTokenizer').replace(/Fast$/, '');
    const Cls = ((transformers as Record<string, unknown>)[name] ?? transformers.PreTrainedTokenizer) as typeof transformers.PreTrainedTokenizer;
    this.tokenizer = new Cls(json, config);
  }

  get padTokenId(): number {
    return this.tokenizer.pad_token_id ?? 0;
  }

  /**
   * Pads every text to `maxLength` ids. Too-long texts keep their final special
   * token (CLIP's EOS, T5's </s>), as Python tokenizers truncate before adding it.
   */
  encode(texts: readonly string[], maxLength: number): TokenizedBatch {
    const ids: number[] = [];
    const truncated: boolean[] = [];
    for (const text of texts) {
      let row = (this.tokenizer(text, { add_special_tokens: true, return_tensor: false }) as { input_ids: number[] }).input_ids;
      truncated.push(row.length > maxLength);
      if (row.length > maxLength) row = [...row.slice(0, maxLength - 1), row[row.length - 1]];
      ids.push(...row, ...new Array(maxLength - row.length).fill(this.padTokenId));
    }
    return { ids, truncated };
  }
}
