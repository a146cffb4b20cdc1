// Small tokenizers in the Hugging Face tokenizer.json format, shaped like the
// real ones: CLIP's byte-level BPE with `</w>` word ends, and T5's Unigram with
// Metaspace. A fixed word list drives the merges, so the files are deterministic.

const WORDS = `a an the of and with in on at by for to from under over near into
photo painting drawing portrait landscape render sketch illustration picture
cat dog bird horse fox owl fish dragon robot astronaut knight wizard city forest
mountain river ocean lake sky cloud sun moon star tree flower garden house castle
street car train ship boat space planet galaxy desert snow rain storm night day
red blue green yellow orange purple black white golden silver bright dark soft
sharp detailed beautiful tiny huge old new happy cute epic cinematic realistic
lighting light shadow color style art oil watercolor digital neon glowing misty
sunset sunrise morning evening winter summer autumn spring field sea beach hill
wearing holding sitting standing flying running reading playing eating looking
highly quality high resolution background foreground close up wide view`.split(/\s+/).filter(Boolean);

/** GPT-2's bytes_to_unicode: a printable character for every byte. */
function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  const table: string[] = new Array(256);
  bs.forEach((b, i) => (table[b] = String.fromCharCode(cs[i])));
  return table;
}

const special = (id: number, content: string, normalized: boolean) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized, special: true });

export interface TokenizerFiles {
  tokenizer: object;
  config: object;
}

/** CLIP byte-level BPE. `padToken` differs between CLIP-L (`<|endoftext|>`) and CLIP-G (`!`). */
export function clipTokenizer(padToken: string): TokenizerFiles & { vocabSize: number; eosId: number } {
  const bytes = bytesToUnicode();
  // CLIP orders the byte alphabet by bytes_to_unicode's list, then the same with `</w>`
  const alphabet: string[] = [];
  for (let b = 33; b <= 126; b++) alphabet.push(bytes[b]);
  for (let b = 161; b <= 172; b++) alphabet.push(bytes[b]);
  for (let b = 174; b <= 255; b++) alphabet.push(bytes[b]);
  for (let b = 0; b < 256; b++) if (!alphabet.includes(bytes[b])) alphabet.push(bytes[b]);
  const vocab: Record<string, number> = {};
  const add = (tok: string) => {
    if (!(tok in vocab)) vocab[tok] = Object.keys(vocab).length;
  };
  alphabet.forEach(add);
  alphabet.forEach((c) => add(`${c}</w>`));
  const merges: string[] = [];
  for (const word of WORDS) {
    const symbols = [...word];
    symbols[symbols.length - 1] += '</w>';
    while (symbols.length > 1) {
      const merged = symbols[0] + symbols[1];
      const rule = `${symbols[0]} ${symbols[1]}`;
      if (!merges.includes(rule)) {
        merges.push(rule);
        add(merged);
      }
      symbols.splice(0, 2, merged);
    }
  }
  const bos = Object.keys(vocab).length;
  add('<|startoftext|>');
  add('<|endoftext|>');
  const eos = bos + 1;
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(bos, '<|startoftext|>', true), special(eos, '<|endoftext|>', false)],
    normalizer: {
      type: 'Sequence',
      normalizers: [{ type: 'NFC' }, { type: 'Replace', pattern: { Regex: '\\s+' }, content: ' ' }, { type: 'Lowercase' }],
    },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        {
          type: 'Split',
          pattern: { Regex: "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+" },
          behavior: 'Removed',
          invert: true,
        },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
    post_processor: { type: 'RobertaProcessing', sep: ['<|endoftext|>', eos], cls: ['<|startoftext|>', bos], trim_offsets: false, add_prefix_space: false },
    decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<|endoftext|>',
      continuing_subword_prefix: '',
      end_of_word_suffix: '</w>',
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
  const config = {
    tokenizer_class: 'CLIPTokenizer',
    model_max_length: 77,
    bos_token: '<|startoftext|>',
    eos_token: '<|endoftext|>',
    unk_token: '<|endoftext|>',
    pad_token: padToken,
    do_lower_case: true,
    add_prefix_space: false,
    errors: 'replace',
    clean_up_tokenization_spaces: true,
  };
  return { tokenizer, config, vocabSize: Object.keys(vocab).length, eosId: eos };
}

/** T5 Unigram with Metaspace; `</s>` appended by the post-processor. */
export function t5Tokenizer(): TokenizerFiles & { vocabSize: number } {
  const pieces: [string, number][] = [
    ['<pad>', 0],
    ['</s>', 0],
    ['<unk>', 0],
    ['▁', -2],
  ];
  for (const c of 'abcdefghijklmnopqrstuvwxyz0123456789.,!?\'-') pieces.push([c, -8], [`▁${c}`, -9]);
  WORDS.forEach((w, i) => pieces.push([`▁${w}`, -3 - i / WORDS.length]));
  const tokenizer = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [special(0, '<pad>', false), special(1, '</s>', false), special(2, '<unk>', false)],
    normalizer: { type: 'Sequence', normalizers: [{ type: 'NFKC' }, { type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' }] },
    pre_tokenizer: { type: 'Sequence', pretokenizers: [{ type: 'WhitespaceSplit' }, { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true }] },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      pair: [{ Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }, { Sequence: { id: 'B', type_id: 0 } }, { SpecialToken: { id: '</s>', type_id: 0 } }],
      special_tokens: { '</s>': { id: '</s>', ids: [1], tokens: ['</s>'] } },
    },
    decoder: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true },
    model: { type: 'Unigram', unk_id: 2, vocab: pieces, byte_fallback: false },
  };
  const config = {
    tokenizer_class: 'T5Tokenizer',
    model_max_length: 512,
    eos_token: '</s>',
    pad_token: '<pad>',
    unk_token: '<unk>',
    extra_ids: 0,
    clean_up_tokenization_spaces: true,
  };
  return { tokenizer, config, vocabSize: pieces.length };
}
