// Generation settings inside the PNG, as the tools people already use write
// them: AUTOMATIC1111's `parameters` text chunk (prompt, "Negative prompt: …",
// then "Steps: N, Sampler: …, CFG scale: G, Seed: S, Size: WxH, Model: NAME"),
// and our full metadata as JSON in an iTXt chunk. Chunks are read and written
// with png-chunks-extract/-encode (they keep the CRCs); only the text payloads
// are laid out here. Pure TypeScript: the engine, the worker and the page use it.
import extractChunks from 'png-chunks-extract';
import encodeChunks from 'png-chunks-encode';
import * as tEXt from 'png-chunk-text';
import { unzlibSync } from 'fflate';
import type { GenerateRequest, ImageMetadata } from '../api/types.ts';

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
export type SettingsSource = Pick<ImageMetadata, 'prompt' | 'negativePrompt' | 'seed' | 'steps' | 'guidance' | 'width' | 'height' | 'modelId'>;

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
    ...extra,
  };
  const line = Object.entries(fields)
    .map(([k, v]) => `${k}: ${quote(v)}`)
    .join(', ');
  return [s.prompt, ...(s.negativePrompt ? [`Negative prompt: ${s.negativePrompt}`] : []), line].join('\n');
}

// A1111's own pattern for "Name: value" pairs (modules/infotext_utils.py)
const PARAM = /\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)/g;

function params(line: string): [string, string][] {
  return [...line.matchAll(PARAM)].map((m) => {
    const raw = m[2].trim();
    let value = raw;
    if (raw.startsWith('"')) {
      try {
        value = JSON.parse(raw) as string;
      } catch {
        /* kept as written */
      }
    }
    return [m[1].trim(), value];
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

function readITXt(data: Uint8Array): { keyword: string; text: string } {
  const end = data.indexOf(0);
  const keyword = String.fromCharCode(...data.subarray(0, end));
  const compressed = data[end + 1] === 1;
  const lang = data.indexOf(0, end + 3);
  const translated = data.indexOf(0, lang + 1);
  const body = data.subarray(translated + 1);
  return { keyword, text: utf8Decoder.decode(compressed ? unzlibSync(body) : body) };
}

/** Text chunks of a PNG by keyword (tEXt as Latin-1, iTXt as UTF-8, compressed or not). */
export function pngTextChunks(png: Uint8Array): Map<string, string> {
  const out = new Map<string, string>();
  for (const c of extractChunks(png)) {
    if (c.name === 'tEXt') {
      const { keyword, text } = tEXt.decode(c.data);
      out.set(keyword, text);
    } else if (c.name === 'iTXt') {
      const { keyword, text } = readITXt(c.data);
      out.set(keyword, text);
    }
  }
  return out;
}

/**
 * The PNG with its settings written in: `parameters` (tEXt, or iTXt where the
 * text is not Latin-1, as PIL does) and our JSON (iTXt), after IHDR so readers
 * find them before the pixels. Earlier chunks of the same keywords are replaced.
 */
export function withSettingsChunks(png: Uint8Array, parameters: string, json: unknown): Uint8Array {
  const keep = extractChunks(png).filter((c) => {
    if (c.name === 'tEXt') return ![PARAMETERS_KEYWORD, JSON_KEYWORD].includes(tEXt.decode(c.data).keyword);
    if (c.name === 'iTXt') return ![PARAMETERS_KEYWORD, JSON_KEYWORD].includes(readITXt(c.data).keyword);
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

/** Settings from a PNG: our JSON chunk when present (exact), else an A1111 `parameters` chunk. */
export function readPngSettings(png: Uint8Array): ReadSettings {
  const chunks = pngTextChunks(png);
  const json = chunks.get(JSON_KEYWORD);
  if (json !== undefined) {
    try {
      const m = JSON.parse(json) as Record<string, unknown>;
      const settings: PngSettings = {};
      for (const k of ['prompt', 'negativePrompt'] as const) if (typeof m[k] === 'string') settings[k] = m[k] as string;
      for (const k of ['seed', 'steps', 'guidance', 'width', 'height'] as const) if (typeof m[k] === 'number') settings[k] = m[k] as number;
      if (typeof m.modelId === 'string') settings.model = m.modelId;
      return { source: 'sd3-webgpu', settings, unused: [], json: m };
    } catch {
      /* a damaged JSON chunk: fall back to parameters */
    }
  }
  const parameters = chunks.get(PARAMETERS_KEYWORD);
  if (parameters !== undefined) return { source: 'a1111', ...parseA1111(parameters) };
  return { source: null, settings: {}, unused: [] };
}
