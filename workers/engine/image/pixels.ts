// 8-bit pixels as Pillow holds them after Image.open(png).convert('L' | 'RGB'),
// which is what diffusers' load_image hands its pipelines. Image-to-image and
// inpainting reproduce diffusers' VaeImageProcessor bit for bit, so decoding
// has to land on Pillow's exact 8-bit values (its 16-bit, palette and
// sub-byte rules included) before any resizing starts. Pure TypeScript: it
// runs in the engine's Web Worker and in Node alike.
import { decode } from 'fast-png';
import { InvalidRequestError } from '../errors.ts';

/** Row-major, interleaved 8-bit samples: 1 channel is Pillow's 'L', 3 its 'RGB'. */
export interface Pixels {
  width: number;
  height: number;
  channels: 1 | 3;
  data: Uint8Array;
}

/** [x1, y1, x2, y2], as PIL's crop boxes and diffusers' crop regions: x2 and y2 exclusive. */
export type Region = [number, number, number, number];

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
// PNG color types (IHDR) this file tells apart; fast-png refuses unknown ones.
const GRAY = 0;
const PALETTE = 3;
const GRAY_ALPHA = 4;

/**
 * Decodes a PNG into Pillow's 8-bit samples: grayscale (with or without alpha)
 * to 1 channel, color and palette to 3, alpha dropped as convert('L'/'RGB') drops it.
 * Anything that is not a whole PNG throws InvalidRequestError naming `field`.
 */
export function decodeImageFile(bytes: Uint8Array, field: string): Pixels {
  if (bytes.length < SIGNATURE.length || SIGNATURE.some((b, i) => bytes[i] !== b)) {
    throw new InvalidRequestError(field, 'a PNG image', `<${bytes.length} bytes, not a PNG>`);
  }
  // IHDR comes first (bit depth at byte 24, color type 25, interlace 28).
  // fast-png's Adam7 path handles whole bytes per pixel only: sub-byte
  // interlaced images would come out scrambled, so refuse them rather than guess.
  if (bytes[28] === 1 && bytes[24] < 8) {
    throw new InvalidRequestError(field, 'a PNG image that is not interlaced at under 8 bits per sample', `<an interlaced ${bytes[24]}-bit PNG>`);
  }
  let png: ReturnType<typeof decode>;
  try {
    png = decode(bytes);
  } catch {
    // fast-png reads chunk after chunk until IEND, so a cut-off file fails here
    throw new InvalidRequestError(field, 'a PNG image', `<${bytes.length} bytes, a broken PNG>`);
  }
  const { width, height, depth } = png;
  const colorType = bytes[25];
  const n = width * height;
  const samples = png.data;

  if (depth < 8) {
    // Only grayscale and palette images come in 1, 2 or 4 bits, one sample a pixel, rows padded to a byte.
    const stride = Math.ceil((width * depth) / 8);
    const max = (1 << depth) - 1;
    const unpacked = new Uint8Array(n);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        const bit = x * depth;
        unpacked[y * width + x] = (samples[y * stride + (bit >> 3)] >> (8 - depth - (bit & 7))) & max;
      }
    }
    if (colorType === PALETTE) return expandPalette(unpacked, png.palette, width, height);
    // Pillow unpacks L;2 and L;4 as v * 255 / max (85, 17 a step) and mode '1' to 0 or 255: the same scaling.
    for (let i = 0; i < n; i++) unpacked[i] = (unpacked[i] * 255) / max;
    return { width, height, channels: 1, data: unpacked };
  }

  if (colorType === PALETTE) return expandPalette(samples as Uint8Array, png.palette, width, height);

  const inChannels = png.channels;
  const outChannels: 1 | 3 = colorType === GRAY || colorType === GRAY_ALPHA ? 1 : 3;
  const data = new Uint8Array(n * outChannels);
  // 16-bit samples, as Pillow reads them: plain grayscale opens as 'I;16' and
  // its convert('L') clips (above 255 is 255); every other 16-bit layout
  // opens through an 8-bit unpacker (RGB;16B, LA;16B, RGBA;16B) that keeps the high byte.
  const to8 = depth === 8 ? (v: number) => v : colorType === GRAY ? (v: number) => Math.min(v, 255) : (v: number) => v >> 8;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < outChannels; c++) data[i * outChannels + c] = to8(samples[i * inChannels + c]);
  }
  return { width, height, channels: outChannels, data };
}

/** Indices through the PLTE colors; an index past the palette's end is black, as in Pillow (its palette is zero-filled to 256). */
function expandPalette(indices: Uint8Array, palette: number[][] | undefined, width: number, height: number): Pixels {
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < indices.length; i++) {
    const color = palette?.[indices[i]];
    if (color) {
      data[i * 3] = color[0];
      data[i * 3 + 1] = color[1];
      data[i * 3 + 2] = color[2];
    }
  }
  return { width, height, channels: 3, data };
}

/** PIL convert('L'): ITU-R 601-2 luma in Pillow's 16-bit fixed point (Convert.c's L24, rounded by 0x8000). */
export function toGrayscale(p: Pixels): Pixels {
  if (p.channels === 1) return { ...p, data: p.data.slice() };
  const n = p.width * p.height;
  const data = new Uint8Array(n);
  const d = p.data;
  for (let i = 0; i < n; i++) data[i] = (d[i * 3] * 19595 + d[i * 3 + 1] * 38470 + d[i * 3 + 2] * 7471 + 0x8000) >> 16;
  return { width: p.width, height: p.height, channels: 1, data };
}

/** PIL convert('RGB'): a gray value repeated in each channel. */
export function toRgb(p: Pixels): Pixels {
  if (p.channels === 3) return { ...p, data: p.data.slice() };
  const n = p.width * p.height;
  const data = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) data[i * 3] = data[i * 3 + 1] = data[i * 3 + 2] = p.data[i];
  return { width: p.width, height: p.height, channels: 3, data };
}

/** A black image, as PIL's Image.new(mode, size). */
export function blank(width: number, height: number, channels: 1 | 3): Pixels {
  return { width, height, channels, data: new Uint8Array(width * height * channels) };
}

/** PIL Image.crop with integer coordinates: whatever falls outside the source is black. */
export function crop(src: Pixels, [x1, y1, x2, y2]: Region): Pixels {
  const out = blank(Math.max(x2 - x1, 0), Math.max(y2 - y1, 0), src.channels);
  paste(out, src, -x1, -y1);
  return out;
}

/**
 * PIL Image.paste(im, (x, y)) without a mask, in place: clipped to `dst`. Like
 * Pillow's paste into an RGB image, a grayscale source is converted to RGB first.
 */
export function paste(dst: Pixels, src: Pixels, x: number, y: number): void {
  const from = src.channels === dst.channels ? src : toRgb(src);
  if (from.channels !== dst.channels) throw new Error('paste: an RGB image cannot go into a grayscale one');
  const c = dst.channels;
  const x0 = Math.max(x, 0);
  const x1 = Math.min(x + from.width, dst.width);
  if (x1 <= x0) return;
  for (let row = Math.max(y, 0); row < Math.min(y + from.height, dst.height); row++) {
    const srcStart = ((row - y) * from.width + (x0 - x)) * c;
    dst.data.set(from.data.subarray(srcStart, srcStart + (x1 - x0) * c), (row * dst.width + x0) * c);
  }
}

/** The decoder's RGBA (alpha 255) as RGB pixels. */
export function rgbaToPixels(rgba: Uint8ClampedArray, width: number, height: number): Pixels {
  const n = width * height;
  const data = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    data[i * 3] = rgba[i * 4];
    data[i * 3 + 1] = rgba[i * 4 + 1];
    data[i * 3 + 2] = rgba[i * 4 + 2];
  }
  return { width, height, channels: 3, data };
}

/** Pixels as opaque RGBA, for the PNG encoder and the page's canvas. */
export function pixelsToRgba(p: Pixels): Uint8ClampedArray<ArrayBuffer> {
  const rgb = toRgb(p);
  const n = p.width * p.height;
  const out = new Uint8ClampedArray(n * 4);
  for (let i = 0; i < n; i++) {
    out[i * 4] = rgb.data[i * 3];
    out[i * 4 + 1] = rgb.data[i * 3 + 1];
    out[i * 4 + 2] = rgb.data[i * 3 + 2];
    out[i * 4 + 3] = 255;
  }
  return out;
}
