// Prompt tokenization with Tokenizers.js (@huggingface/tokenizers: the pure
// JS tokenizers transformers.js itself is built on), from the model's own
// tokenizer.json / tokenizer_config.json. It brings no model runtime of its
// own, so the worker bundles one onnxruntime and no more.
import { Tokenizer } from '@huggingface/tokenizers';

export interface TokenizedBatch {
  /** Row-major [batch, maxLength] token ids. */
  ids: number[];
  /** Which rows were cut to maxLength. */
  truncated: boolean[];
}

/** A special token as tokenizer_config.json writes it: a string, or an AddedToken-like object. */
const tokenText = (t: unknown): string | undefined => (typeof t === 'string' ? t : typeof t === 'object' && t !== null && 'content' in t ? String((t as { content: unknown }).content) : undefined);

export class PromptTokenizer {
  private readonly tokenizer: Tokenizer;
  readonly padTokenId: number;

  constructor(json: object, config: Record<string, unknown>) {
    this.tokenizer = new Tokenizer(json, config);
    const pad = tokenText(config.pad_token);
    this.padTokenId = (pad !== undefined ? this.tokenizer.token_to_id(pad) : undefined) ?? 0;
  }

  /**
   * Pads every text to `maxLength` ids. Too-long texts keep their final special
   * token (CLIP's EOS, T5's </s>), as Python tokenizers truncate before adding it.
   */
  encode(texts: readonly string[], maxLength: number): TokenizedBatch {
    const ids: number[] = [];
    const truncated: boolean[] = [];
    for (const text of texts) {
      let row = this.tokenizer.encode(text, { add_special_tokens: true }).ids;
      truncated.push(row.length > maxLength);
      if (row.length > maxLength) row = [...row.slice(0, maxLength - 1), row[row.length - 1]];
      ids.push(...row, ...new Array(maxLength - row.length).fill(this.padTokenId));
    }
    return { ids, truncated };
  }
}
