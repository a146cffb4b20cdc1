// diffusers' VaeImageProcessor (src/diffusers/image_processor.py) as SD3's
// image-to-image and inpainting pipelines use it: the init image to [-1, 1],
// the mask to 0/1 and to latent size, padding_mask_crop's crop region, and
// the overlay of the generated crop back onto the original. Each step keeps
// diffusers' order and Pillow's integer arithmetic so the engine's tensors
// equal the reference pipeline's bit for bit.
import { InvalidRequestError } from '../errors.ts';
import { resize } from './lanczos.ts';
import { blank, crop as cropPixels, paste, toGrayscale, toRgb, type Pixels, type Region } from './pixels.ts';

export type { Region } from './pixels.ts';

export type ResizeMode = 'default' | 'fill' | 'crop';

export interface PreprocessOptions {
  /** 'default' stretches to the size; 'fill' fits inside it and stretches the edges into the rest; 'crop' covers it and cuts the overflow. */
  resizeMode?: ResizeMode;
  /** cut this region out first (padding_mask_crop's crops_coords) */
  crop?: Region;
}

/**
 * The image processor's preprocess: crop, resize, then RGB, /255, *2-1 as
 * float32 CHW [3, height, width]. `width` and `height` are used as given
 * (diffusers first rounds them down to a multiple of the VAE's scale factor).
 */
export function preprocessImage(img: Pixels, width: number, height: number, opts: PreprocessOptions = {}): Float32Array {
  const rgb = toRgb(cropAndResize(img, width, height, opts));
  const plane = width * height;
  const out = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    for (let c = 0; c < 3; c++) {
      // numpy's float32 x / 255.0, then torch's float32 2.0 * x - 1.0 (2x is exact, so one rounding)
      out[c * plane + i] = 2 * Math.fround(rgb.data[i * 3 + c] / 255) - 1;
    }
  }
  return out;
}

/**
 * The mask processor's preprocess (do_normalize=False, do_binarize=True,
 * do_convert_grayscale=True): crop, resize (an RGB mask is resized in RGB,
 * and fill/crop paint it on an RGB canvas), then L, /255 and < 0.5 -> 0, else 1.
 * Returns [height * width] of 0 and 1.
 */
export function preprocessMask(mask: Pixels, width: number, height: number, opts: PreprocessOptions = {}): Float32Array {
  const gray = toGrayscale(cropAndResize(mask, width, height, opts));
  const out = new Float32Array(width * height);
  for (let i = 0; i < out.length; i++) out[i] = Math.fround(gray.data[i] / 255) < 0.5 ? 0 : 1;
  return out;
}

/**
 * torch.nn.functional.interpolate(mask, size=(latentH, latentW)), mode
 * 'nearest': source index floor(dst * (float)(in / out)) in float32, clamped
 * (the CPU kernel's shortcuts for the same size and for twice it give the same indices).
 */
export function maskToLatent(mask01: Float32Array, width: number, height: number, latentW: number, latentH: number): Float32Array {
  const out = new Float32Array(latentW * latentH);
  for (let y = 0; y < latentH; y++) {
    const sy = nearestIndex(y, height, latentH);
    for (let x = 0; x < latentW; x++) out[y * latentW + x] = mask01[sy * width + nearestIndex(x, width, latentW)];
  }
  return out;
}

function nearestIndex(dst: number, inSize: number, outSize: number): number {
  const scale = Math.fround(inSize / outSize);
  return Math.min(Math.floor(Math.fround(dst * scale)), inSize - 1);
}

/**
 * get_crop_region: the box around every non-zero pixel of the mask (as L),
 * grown by `pad`, then widened or heightened to width:height's aspect and
 * shifted back inside the mask. An all-black mask has no such box (diffusers
 * returns a meaningless region there), so it is refused.
 */
export function cropRegion(mask: Pixels, width: number, height: number, pad: number): Region {
  const m = toGrayscale(mask);
  const w = m.width;
  const h = m.height;
  let left = w;
  let right = -1;
  let top = h;
  let bottom = -1;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      if (m.data[y * w + x] === 0) continue;
      if (x < left) left = x;
      if (x > right) right = x;
      if (y < top) top = y;
      if (y > bottom) bottom = y;
    }
  }
  if (right < 0) throw new InvalidRequestError('mask', 'a mask with some non-black pixels to crop around', 'an all-black mask');

  let x1 = Math.max(left - pad, 0);
  let y1 = Math.max(top - pad, 0);
  let x2 = Math.min(right + 1 + pad, w);
  let y2 = Math.min(bottom + 1 + pad, h);

  // Python floats and ints: int() truncates, // floors
  const ratioProcessing = width / height;
  if ((x2 - x1) / (y2 - y1) > ratioProcessing) {
    const diff = Math.trunc((x2 - x1) / ratioProcessing - (y2 - y1));
    y1 -= Math.floor(diff / 2);
    y2 += diff - Math.floor(diff / 2);
    if (y2 >= h) {
      const over = y2 - h;
      y2 -= over;
      y1 -= over;
    }
    if (y1 < 0) {
      y2 -= y1;
      y1 = 0;
    }
    if (y2 >= h) y2 = h;
  } else {
    const diff = Math.trunc((y2 - y1) * ratioProcessing - (x2 - x1));
    x1 -= Math.floor(diff / 2);
    x2 += diff - Math.floor(diff / 2);
    if (x2 >= w) {
      const over = x2 - w;
      x2 -= over;
      x1 -= over;
    }
    if (x1 < 0) {
      x2 -= x1;
      x1 = 0;
    }
    if (x2 >= w) x2 = w;
  }
  return [x1, y1, x2, y2];
}

/**
 * apply_overlay: the original image wherever the mask is not white, over the
 * generated one (with `crop`, the generated image resized in 'crop' mode into
 * that region of a black canvas of the original's size). Pillow's route is
 * kept step by step, its rounding with it: the original premultiplied
 * (RGBA -> RGBa), pasted through the inverted L mask onto a transparent
 * canvas, un-premultiplied (RGBa -> RGBA), then alpha_composite over the
 * generated image. Returns RGB at the original's size.
 */
export function applyOverlay(mask: Pixels, init: Pixels, image: Pixels, crop?: Region): Pixels {
  const { width, height } = init;
  if (mask.width !== width || mask.height !== height) throw new RangeError(`applyOverlay: the ${mask.width}x${mask.height} mask does not match the ${width}x${height} image`);
  let generated = toRgb(image);
  if (crop) {
    const [x, y, x2, y2] = crop;
    const canvas = blank(width, height, 3);
    paste(canvas, resizeAndCrop(generated, x2 - x, y2 - y), x, y);
    generated = canvas;
  }
  if (generated.width !== width || generated.height !== height) throw new RangeError(`applyOverlay: the ${generated.width}x${generated.height} image does not match the ${width}x${height} original`);

  const original = toRgb(init).data;
  const m = toGrayscale(mask).data;
  const out = new Uint8Array(width * height * 3);
  const px = new Uint8Array(4);
  for (let i = 0; i < width * height; i++) {
    const keep = 255 - m[i]; // ImageOps.invert
    // RGB -> RGBA (alpha 255) -> RGBa, then Paste.c's paste_mask_L onto zeros: BLEND(keep, 0, v)
    for (let c = 0; c < 3; c++) px[c] = div255(muldiv255(original[i * 3 + c], 255) * keep);
    px[3] = div255(255 * keep);
    // RGBa -> RGBA (Convert.c's rgba2rgbA)
    const a = px[3];
    if (a !== 0 && a !== 255) for (let c = 0; c < 3; c++) px[c] = Math.min(Math.floor((255 * px[c]) / a), 255);
    for (let c = 0; c < 3; c++) out[i * 3 + c] = alphaCompositeChannel(px[c], a, generated.data[i * 3 + c]);
  }
  return { width, height, channels: 3, data: out };
}

/** Pillow's SHIFTFORDIV255 family (ImagingUtils.h): a / 255 and a * b / 255, rounded, in shifts. */
function div255(a: number): number {
  const t = a + 128;
  return ((t >> 8) + t) >> 8;
}
function muldiv255(a: number, b: number): number {
  return div255(a * b);
}

/**
 * AlphaComposite.c for one channel, `src` (the original, alpha srcA) over an
 * opaque destination: the generated image, RGB -> RGBA, has alpha 255.
 */
function alphaCompositeChannel(src: number, srcA: number, dst: number): number {
  if (srcA === 0) return dst;
  const PRECISION_BITS = 7;
  const dstA = 255;
  const outa255 = srcA * 255 + dstA * (255 - srcA);
  const coef1 = Math.floor((srcA * 255 * 255 * (1 << PRECISION_BITS)) / outa255);
  const coef2 = 255 * (1 << PRECISION_BITS) - coef1;
  const t = src * coef1 + dst * coef2 + (0x80 << PRECISION_BITS);
  return (((t >> 8) + t) >> 8) >> PRECISION_BITS;
}

/** preprocess's first steps: the crop, then the resize mode's resize. */
function cropAndResize(img: Pixels, width: number, height: number, { resizeMode = 'default', crop }: PreprocessOptions): Pixels {
  const cropped = crop ? cropPixels(img, crop) : img;
  if (resizeMode === 'fill') return resizeAndFill(cropped, width, height);
  if (resizeMode === 'crop') return resizeAndCrop(cropped, width, height);
  return resize(cropped, width, height);
}

/**
 * _resize_and_fill: fit inside width x height keeping the aspect, centred on
 * a black RGB canvas, and the gaps on the long sides filled by stretching the
 * resized image's first and last row (or column): a resize of a zero-height
 * (or zero-width) box, with PIL's default filter, bicubic, not Lanczos.
 */
function resizeAndFill(image: Pixels, width: number, height: number): Pixels {
  const ratio = width / height;
  const srcRatio = image.width / image.height;
  const srcW = ratio < srcRatio ? width : Math.floor((image.width * height) / image.height);
  const srcH = ratio >= srcRatio ? height : Math.floor((image.height * width) / image.width);
  const resized = resize(image, srcW, srcH);
  const res = blank(width, height, 3);
  paste(res, resized, Math.floor(width / 2) - Math.floor(srcW / 2), Math.floor(height / 2) - Math.floor(srcH / 2));
  if (ratio < srcRatio) {
    const fill = Math.floor(height / 2) - Math.floor(srcH / 2);
    if (fill > 0) {
      paste(res, resize(resized, width, fill, [0, 0, width, 0], 'bicubic'), 0, 0);
      paste(res, resize(resized, width, fill, [0, resized.height, width, resized.height], 'bicubic'), 0, fill + srcH);
    }
  } else if (ratio > srcRatio) {
    const fill = Math.floor(width / 2) - Math.floor(srcW / 2);
    if (fill > 0) {
      paste(res, resize(resized, fill, height, [0, 0, 0, height], 'bicubic'), 0, 0);
      paste(res, resize(resized, fill, height, [resized.width, 0, resized.width, height], 'bicubic'), fill + srcW, 0);
    }
  }
  return res;
}

/** _resize_and_crop: cover width x height keeping the aspect, centred on a black RGB canvas, the overflow cut off. */
function resizeAndCrop(image: Pixels, width: number, height: number): Pixels {
  const ratio = width / height;
  const srcRatio = image.width / image.height;
  const srcW = ratio > srcRatio ? width : Math.floor((image.width * height) / image.height);
  const srcH = ratio <= srcRatio ? height : Math.floor((image.height * width) / image.width);
  const res = blank(width, height, 3);
  paste(res, resize(image, srcW, srcH), Math.floor(width / 2) - Math.floor(srcW / 2), Math.floor(height / 2) - Math.floor(srcH / 2));
  return res;
}
