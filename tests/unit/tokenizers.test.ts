// The tiny model's tokenizers load through @huggingface/transformers'
// AutoTokenizer from a local path and from a URL, and our PromptTokenizer
// pads / truncates exactly as the SD3 pipeline does.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AutoTokenizer, env } from '@huggingface/transformers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PromptTokenizer } from '../../workers/engine/model/tokenizers.ts';
import { startModelServer, type ModelServer } from '../helpers/model-server.ts';
import { TINY_MODEL_DIR } from '../helpers/tiny-engine.ts';

const readJson = (p: string) => JSON.parse(readFileSync(join(TINY_MODEL_DIR, p), 'utf8'));
const ours = (folder: string) => new PromptTokenizer(readJson(`${folder}/tokenizer.json`), readJson(`${folder}/tokenizer_config.json`));

describe('tokenizers', () => {
  let server: ModelServer;
  beforeAll(async () => {
    // transformers.js tokenizers ignore `subfolder`: each tokenizer folder is served as its own repo
    server = await startModelServer({ repos: ['tokenizer', 'tokenizer_2', 'tokenizer_3'].map((t) => ({ repo: `sd3-webgpu/tiny-${t}`, folder: join(TINY_MODEL_DIR, t) })) });
    env.useFSCache = false;
    env.useBrowserCache = false;
  });
  afterAll(async () => server?.close());

  it('AutoTokenizer loads all three from a local path', async () => {
    env.allowLocalModels = true;
    env.allowRemoteModels = false;
    env.localModelPath = TINY_MODEL_DIR;
    for (const folder of ['tokenizer', 'tokenizer_2', 'tokenizer_3']) {
      const tok = await AutoTokenizer.from_pretrained(folder);
      const ids = tok('a photo of a cat').input_ids;
      expect(ids.dims[1]).toBeGreaterThan(2);
    }
  });

  it('AutoTokenizer loads them from a URL in the Hub layout, and ids match ours', async () => {
    env.allowLocalModels = false;
    env.allowRemoteModels = true;
    env.remoteHost = `${server.url}/`;
    env.remotePathTemplate = '{model}/resolve/{revision}/';
    for (const folder of ['tokenizer', 'tokenizer_2', 'tokenizer_3']) {
      const t = await AutoTokenizer.from_pretrained(`sd3-webgpu/tiny-${folder}`);
      const text = 'a red fox in the snow';
      const theirs = Array.from(t(text).input_ids.data as BigInt64Array, Number);
      const mine = ours(folder).encode([text], 77).ids.slice(0, theirs.length);
      expect(mine).toEqual(theirs);
    }
    expect(server.requests.some((r) => r.path.endsWith('tokenizer.json'))).toBe(true);
  });

  it('gives the ids written down for one prompt: lower-casing, punctuation, start / end and padding', () => {
    // Literal ids, read off the tiny vocabularies by hand and agreed by Tokenizers.js and
    // transformers.js; the tiny BPE has few merges, so "photo" is "pho"+"to</w>".
    const text = 'A photo of a CAT, by the sea!';
    const clipIds = [1034, 320, 545, 527, 515, 320, 66, 523, 267, 524, 514, 936, 256, 1035];
    const clipVocab = readJson('tokenizer/tokenizer.json').model.vocab as Record<string, number>;
    expect(['a</w>', 'pho', 'to</w>', 'of</w>', 'a</w>', 'c', 'at</w>', ',</w>', 'by</w>', 'the</w>', 'sea</w>', '!</w>'].map((t) => clipVocab[t])).toEqual(clipIds.slice(1, -1));
    const clipL = ours('tokenizer').encode([text], 77);
    expect(clipL.ids).toEqual([...clipIds, ...new Array(77 - clipIds.length).fill(1035)]); // CLIP-L pads with <|endoftext|>
    const clipG = ours('tokenizer_2').encode([text], 77); // CLIP-G pads with "!" (id 0), as SD3's tokenizer_2 does
    expect(clipG.ids).toEqual([...clipIds, ...new Array(77 - clipIds.length).fill(0)]);
    // T5 keeps case: "▁", "A", … "CAT" are pieces of their own; then </s> (1) and <pad> (0)
    const t5Ids = [3, 2, 105, 91, 88, 3, 2, 78, 97, 90, 202, 80, 1];
    expect(ours('tokenizer_3').encode([text], 16).ids).toEqual([...t5Ids, 0, 0, 0]);
  });

  it('CLIP pads to 77 and keeps the end token when it truncates', () => {
    const clip = ours('tokenizer_2'); // pads with "!", so the end token stands apart
    const short = clip.encode(['a cat'], 77);
    expect(short.ids).toHaveLength(77);
    expect(short.truncated).toEqual([false]);
    const long = clip.encode(['cat '.repeat(200)], 77);
    expect(long.truncated).toEqual([true]);
    const eos = short.ids[short.ids.indexOf(clip.padTokenId) - 1];
    expect(long.ids[76]).toBe(eos);
  });

  it('T5 pads to the requested length', () => {
    const t5 = ours('tokenizer_3');
    const { ids, truncated } = t5.encode(['a cat', 'a dog on a log'], 256);
    expect(ids).toHaveLength(512);
    expect(truncated).toEqual([false, false]);
  });
});
