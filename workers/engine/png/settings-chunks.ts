// Generation settings inside the PNG, as the tools people already use write
// them: AUTOMATIC1111's `parameters` text chunk (prompt, "Negative prompt: …",
// then "Steps: N, Sampler: …, CFG scale: G, Seed: S, Size: WxH, Model: NAME"),
// and our full metadata as JSON in an iTXt chunk. Chunks are read and written
// with png-chunks-extract/-encode (they keep the CRCs); only the text payloads
// are laid out here. Pure TypeScript: the engine, the worker and the page use it.
// A PNG to read comes from anyone: the page hands it to the worker, each text
// chunk is capped at MAX_TEXT_BYTES (inflated by steps, stopped at the cap, so a
// zip bomb costs a millisecond), and the A1111 text is parsed in linear time.
import extractChunks from 'png-chunks-extract';
import encodeChunks from 'png-chunks-encode';
import * as tEXt from 'png-chunk-text';
import { Unzlib } from 'fflate';
import type { GenerateRequest, ImageMetadata } from '../api/types.ts';
import { EngineError } from '../errors.ts';

/** The keyword of our JSON chunk (iTXt: UTF-8). */
export const JSON_KEYWORD = 'sd3-webgpu';
/** A1111's keyword; ComfyUI's `prompt` / `workflow` are graphs, not settings we can use. */
export const PARAMETERS_KEYWORD = 'parameters';
export const SAMPLER_NAME = 'Euler (flow match)';

/** What a PNG's settings can fill in the form, and the model the image was made with, as its tool names it. */
export type PngSettings = Partial<Omit<GenerateRequest, 'id'>> & { model?: string };

export interface ReadSettings {
  /** Which chunk the settings came from; null when the PNG carries none. */
  source: 'sd3-webgpu' | 'a1111' | null;
  settings: PngSettings;
  /** Settings present in the file that this app cannot use, as "Name: value (why)". */
  unused: string[];
  /** Our JSON chunk, whole, when present. */
  json?: Record<string, unknown>;
}

/** The settings of one image, as the engine records them. */
export type SettingsSource = Pick<ImageMetadata, 'prompt' | 'negativePrompt' | 'seed' | 'steps' | 'guidance' | 'width' | 'height' | 'modelId'> & Partial<Pick<ImageMetadata, 'strength'>>;

/** A1111 quotes a value that holds a comma, a colon or a line break (as JSON). */
const quote = (v: string) => (/[,:\n]/.test(v) ? JSON.stringify(v) : v);

/** The A1111 `parameters` text for these settings; `extra` adds "Name: value" pairs to the last line. */
export function a1111Parameters(s: SettingsSource, extra: Record<string, string> = {}): string {
  const fields: Record<string, string> = {
    Steps: String(s.steps),
    Sampler: SAMPLER_NAME,
    'CFG scale': String(s.guidance),
    Seed: String(s.seed),
    Size: `${s.width}x${s.height}`,
    Model: s.modelId,
    // image to image and inpainting, as A1111 writes it
    ...(s.strength !== undefined ? { 'Denoising strength': String(s.strength) } : {}),
    ...extra,
  };
  const line = Object.entries(fields)
    .map(([k, v]) => `${k}: ${quote(v)}`)
    .join(', ');
  return [s.prompt, ...(s.negativePrompt ? [`Negative prompt: ${s.negativePrompt}`] : []), line].join('\n');
}

// A1111's own pattern for "Name: value" pairs (modules/infotext_utils.py) is
//   /\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g
// Run by a backtracking engine it is quadratic on a long line (every start
// rescans the run after it), so `a1111Pairs` finds exactly its matches in one pass,
// from tables of where each run ends, built right to left.
const isSpace = (c: string) => /\s/.test(c);
const isWord = (c: string) => /\w/.test(c);
const isKeyChar = (c: string) => /[\w \-/]/.test(c);
/** `.` in a pattern without the s flag: anything but a line terminator. */
const isDot = (c: string) => !/[\n\r\u2028\u2029]/.test(c);

/** The "Name: value" pairs of a line, as A1111's pattern matches them (key and value as matched, untrimmed). */
export function a1111Pairs(line: string): [string, string][] {
  const n = line.length;
  // spaceEnd[i] / keyEnd[i]: the first index at or after i that is not whitespace / not a key character
  const spaceEnd = new Int32Array(n + 2).fill(n);
  const keyEnd = new Int32Array(n + 2).fill(n);
  // quoteEnd[i]: inside a quoted value from i, the index of its closing quote, or -1
  const quoteEnd = new Int32Array(n + 2).fill(-1);
  for (let i = n - 1; i >= 0; i--) {
    const c = line[i];
    spaceEnd[i] = isSpace(c) ? spaceEnd[i + 1] : i;
    keyEnd[i] = isKeyChar(c) ? keyEnd[i + 1] : i;
    quoteEnd[i] = c === '"' ? i : c === '\\' ? (i + 1 < n && isDot(line[i + 1]) ? quoteEnd[i + 2] : -1) : quoteEnd[i + 1];
  }
  const out: [string, string][] = [];
  let at = 0;
  while (at < n) {
    // \s*(\w[\w \-/]+): at `at`, or try the next index, as the regex engine does
    const start = spaceEnd[at];
    const colon = start < n && isWord(line[start]) ? keyEnd[start + 1] : -1;
    if (colon <= start + 1 || line[colon] !== ':') {
      at++;
      continue;
    }
    const valueStart = spaceEnd[colon + 1];
    let valueEnd = -1;
    // "(?:\\.|[^\\"])+" when a comma or the end follows its closing quote, else [^,]*
    if (line[valueStart] === '"' && line[valueStart + 1] !== '"') {
      const close = quoteEnd[valueStart + 1];
      if (close > 0 && (close + 1 === n || line[close + 1] === ',')) valueEnd = close + 1;
    }
    if (valueEnd < 0) {
      const comma = line.indexOf(',', valueStart);
      valueEnd = comma < 0 ? n : comma;
    }
    out.push([line.slice(start, colon), line.slice(valueStart, valueEnd)]);
    at = valueEnd < n ? valueEnd + 1 : n; // past the comma
  }
  return out;
}

function params(line: string): [string, string][] {
  return a1111Pairs(line).map(([key, written]) => {
    const raw = written.trim();
    let value = raw;
    if (raw.startsWith('"')) {
      try {
        value = JSON.parse(raw) as string;
      } catch {
        /* kept as written */
      }
    }
    return [key.trim(), value];
  });
}

const SAMPLERS = new Set([SAMPLER_NAME.toLowerCase(), 'euler', 'flowmatcheulerdiscretescheduler', 'euler (flowmatch)']);

/** Parses an A1111 `parameters` text into what the form can use, naming what it cannot. */
export function parseA1111(text: string): { settings: PngSettings; unused: string[] } {
  const lines = text.replace(/\r\n?/g, '\n').trim().split('\n');
  const last = lines.at(-1) ?? '';
  const pairs = params(last);
  // A1111: a last line with fewer than three pairs is part of the prompt
  if (pairs.length >= 3) lines.pop();
  const settings: PngSettings = {};
  const unused: string[] = [];
  const prompt: string[] = [];
  const negative: string[] = [];
  let inNegative = false;
  for (const raw of lines) {
    let line = raw.trim();
    if (line.startsWith('Negative prompt:')) {
      inNegative = true;
      line = line.slice('Negative prompt:'.length).trim();
    }
    (inNegative ? negative : prompt).push(line);
  }
  settings.prompt = prompt.join('\n');
  settings.negativePrompt = negative.join('\n');
  if (pairs.length < 3) return { settings, unused };
  const int = (name: string, v: string, set: (n: number) => void) => {
    if (/^-?\d+$/.test(v)) set(Number(v));
    else unused.push(`${name}: ${v} (not a whole number)`);
  };
  for (const [name, v] of pairs) {
    switch (name) {
      case 'Steps':
        int(name, v, (n) => (settings.steps = n));
        break;
      case 'Seed':
        int(name, v, (n) => (settings.seed = n));
        break;
      case 'CFG scale':
        if (Number.isFinite(Number(v)) && v !== '') settings.guidance = Number(v);
        else unused.push(`${name}: ${v} (not a number)`);
        break;
      case 'Size': {
        const m = /^(\d+)\s*x\s*(\d+)$/.exec(v);
        if (m) [settings.width, settings.height] = [Number(m[1]), Number(m[2])];
        else unused.push(`${name}: ${v} (expected WxH)`);
        break;
      }
      case 'Sampler':
        if (!SAMPLERS.has(v.toLowerCase())) unused.push(`Sampler: ${v} (this app samples with ${SAMPLER_NAME})`);
        break;
      case 'Model':
        settings.model = v;
        break;
      case 'Denoising strength':
        // an img2img image: its strength (the init image itself is not in the file)
        if (v !== '' && Number.isFinite(Number(v))) settings.strength = Number(v);
        else unused.push(`${name}: ${v} (not a number)`);
        break;
      default:
        unused.push(`${name}: ${v}`);
    }
  }
  return { settings, unused };
}

const latin1 = (s: string) => /^[\x01-\xff]*$/.test(s);
const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** An iTXt chunk, uncompressed: keyword, 0, flag 0, method 0, no language, no translation, UTF-8 text. */
function iTXt(keyword: string, text: string): { name: string; data: Uint8Array } {
  const kw = Uint8Array.from(keyword, (c) => c.charCodeAt(0));
  const body = utf8.encode(text);
  const data = new Uint8Array(kw.length + 5 + body.length);
  data.set(kw, 0);
  data.set(body, kw.length + 5); // the five bytes between are zeros: end of keyword, flag, method, language, translation
  return { name: 'iTXt', data };
}

/** The most text one chunk may hold, in bytes once inflated: settings are a few KB, more is a mistake or an attack. */
export const MAX_TEXT_BYTES = 1 << 20;
/** Compressed bytes inflated per step: deflate expands at most ~1032×, so a step passes the cap by at most ~1 MB. */
const INFLATE_STEP = 1024;

/** A settings chunk over MAX_TEXT_BYTES, in a PNG that has no other settings. */
export class SettingsTooLargeError extends EngineError {
  constructor(readonly keywords: string[]) {
    super('too_large', `its ${keywords.map((k) => `"${k}"`).join(' and ')} settings text is over ${MAX_TEXT_BYTES / 2 ** 20} MB (the most this app reads), so it was ignored`);
  }

  protected override details() {
    return { keywords: this.keywords };
  }
}

/**
 * zlib data inflated step by step, stopping once the output passes `cap`: the
 * bytes, or null when they would be more; `inflated` says how much was made.
 */
export function inflateCapped(zlib: Uint8Array, cap = MAX_TEXT_BYTES): { bytes: Uint8Array | null; inflated: number } {
  const parts: Uint8Array[] = [];
  let inflated = 0;
  const stream = new Unzlib((part) => {
    parts.push(part);
    inflated += part.length;
  });
  for (let at = 0; at < zlib.length && inflated <= cap; at += INFLATE_STEP) {
    const end = Math.min(at + INFLATE_STEP, zlib.length);
    stream.push(zlib.subarray(at, end), end === zlib.length);
  }
  if (inflated > cap) return { bytes: null, inflated };
  const bytes = new Uint8Array(inflated);
  let at = 0;
  for (const part of parts) {
    bytes.set(part, at);
    at += part.length;
  }
  return { bytes, inflated };
}

const PNG_SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/**
 * The tEXt and iTXt chunks of a PNG, as views into it. Other chunks are
 * skipped, not copied, and a length past the end of the file is refused (a
 * generic chunk reader allocates whatever the length field says). CRCs are not
 * checked: a damaged text chunk fails to inflate or to parse.
 */
function textChunkData(png: Uint8Array): { name: 'tEXt' | 'iTXt'; data: Uint8Array }[] {
  if (png.length < 8 || PNG_SIGNATURE.some((b, i) => png[i] !== b)) throw new Error('Invalid .png file header');
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const out: { name: 'tEXt' | 'iTXt'; data: Uint8Array }[] = [];
  for (let at = 8; at + 8 <= png.length; ) {
    const length = view.getUint32(at);
    const name = String.fromCharCode(png[at + 4], png[at + 5], png[at + 6], png[at + 7]);
    if (at === 8 && name !== 'IHDR') throw new Error('IHDR header missing');
    if (name === 'IEND') return out;
    const start = at + 8;
    if (start + length + 4 > png.length) throw new Error(`its ${name} chunk runs past the end of the file`);
    if (name === 'tEXt' || name === 'iTXt') out.push({ name, data: png.subarray(start, start + length) });
    at = start + length + 4;
  }
  throw new Error('.png file ended prematurely: no IEND header was found');
}

/** A chunk's keyword (1–79 Latin-1 bytes, then 0) and where it ends; null when it has none. */
function keywordOf(data: Uint8Array): { keyword: string; end: number } | null {
  const end = data.subarray(0, 80).indexOf(0);
  return end < 1 ? null : { keyword: String.fromCharCode(...data.subarray(0, end)), end };
}

/** An iTXt chunk's keyword and text (null when over the cap); null when it is malformed. */
function readITXt(data: Uint8Array): { keyword: string; text: string | null } | null {
  const k = keywordOf(data);
  if (!k) return null;
  const compressed = data[k.end + 1] === 1;
  const lang = data.indexOf(0, k.end + 3);
  const translated = lang < 0 ? -1 : data.indexOf(0, lang + 1);
  if (translated < 0) return null;
  const body = data.subarray(translated + 1);
  const bytes = compressed ? inflateCapped(body).bytes : body.length <= MAX_TEXT_BYTES ? body : null;
  return { keyword: k.keyword, text: bytes && utf8Decoder.decode(bytes) };
}

/** Text chunks by keyword (tEXt as Latin-1, iTXt as UTF-8, compressed or not), and the keywords of those over the cap. */
function readTextChunks(png: Uint8Array): { texts: Map<string, string>; oversize: string[] } {
  const texts = new Map<string, string>();
  const oversize: string[] = [];
  for (const c of textChunkData(png)) {
    if (c.name === 'tEXt') {
      const k = keywordOf(c.data);
      if (!k) continue;
      if (c.data.length - k.end - 1 > MAX_TEXT_BYTES) oversize.push(k.keyword);
      else texts.set(k.keyword, tEXt.decode(c.data).text);
    } else {
      const read = readITXt(c.data);
      if (!read) continue;
      if (read.text === null) oversize.push(read.keyword);
      else texts.set(read.keyword, read.text);
    }
  }
  return { texts, oversize };
}

/** Text chunks of a PNG by keyword (tEXt as Latin-1, iTXt as UTF-8, compressed or not); those over MAX_TEXT_BYTES are left out. */
export function pngTextChunks(png: Uint8Array): Map<string, string> {
  return readTextChunks(png).texts;
}

/**
 * The PNG with its settings written in: `parameters` (tEXt, or iTXt where the
 * text is not Latin-1, as PIL does) and our JSON (iTXt), after IHDR so readers
 * find them before the pixels. Earlier chunks of the same keywords are replaced.
 */
export function withSettingsChunks(png: Uint8Array, parameters: string, json: unknown): Uint8Array {
  const keep = extractChunks(png).filter((c) => {
    if (c.name === 'tEXt') return ![PARAMETERS_KEYWORD, JSON_KEYWORD].includes(tEXt.decode(c.data).keyword);
    if (c.name === 'iTXt') return ![PARAMETERS_KEYWORD, JSON_KEYWORD].includes(keywordOf(c.data)?.keyword ?? '');
    return true;
  });
  const text = [latin1(parameters) ? tEXt.encode(PARAMETERS_KEYWORD, parameters) : iTXt(PARAMETERS_KEYWORD, parameters), iTXt(JSON_KEYWORD, JSON.stringify(json))];
  return encodeChunks([keep[0], ...text, ...keep.slice(1)]);
}

/** The same, for a PNG Blob (what encoders and canvases hand back). */
export async function pngBlobWithSettings(png: Blob, parameters: string, json: unknown): Promise<Blob> {
  const bytes = withSettingsChunks(new Uint8Array(await png.arrayBuffer()), parameters, json);
  return new Blob([bytes as Uint8Array<ArrayBuffer>], { type: 'image/png' });
}

/**
 * Settings from a PNG: our JSON chunk when present (exact), else an A1111
 * `parameters` chunk. A settings chunk over MAX_TEXT_BYTES is ignored, and
 * named among the unused; with no other settings it is a SettingsTooLargeError.
 */
export function readPngSettings(png: Uint8Array): ReadSettings {
  const { texts: chunks, oversize } = readTextChunks(png);
  const ignored = oversize.filter((k) => k === JSON_KEYWORD || k === PARAMETERS_KEYWORD);
  const tooLarge = ignored.map((k) => `${k}: settings text over ${MAX_TEXT_BYTES / 2 ** 20} MB (ignored)`);
  const json = chunks.get(JSON_KEYWORD);
  if (json !== undefined) {
    try {
      const m = JSON.parse(json) as Record<string, unknown>;
      const settings: PngSettings = {};
      for (const k of ['prompt', 'negativePrompt'] as const) if (typeof m[k] === 'string') settings[k] = m[k] as string;
      for (const k of ['seed', 'steps', 'guidance', 'width', 'height', 'strength'] as const) if (typeof m[k] === 'number') settings[k] = m[k] as number;
      if (typeof m.modelId === 'string') settings.model = m.modelId;
      return { source: 'sd3-webgpu', settings, unused: tooLarge, json: m };
    } catch {
      /* a damaged JSON chunk: fall back to parameters */
    }
  }
  const parameters = chunks.get(PARAMETERS_KEYWORD);
  if (parameters !== undefined) {
    const { settings, unused } = parseA1111(parameters);
    return { source: 'a1111', settings, unused: [...unused, ...tooLarge] };
  }
  if (ignored.length) throw new SettingsTooLargeError(ignored);
  return { source: null, settings: {}, unused: [] };
}
