// Pillow's Image.resize for 8-bit L and RGB images, integer for integer: the
// init image and mask that diffusers feeds SD3 go through PIL's Lanczos, and
// its fill mode stretches edge rows with PIL's default bicubic, so matching
// the reference latents means matching libImaging/Resample.c exactly (its
// fixed-point coefficients, its rounding, which passes it runs and in what
// order). Read from Pillow 12.3.0: src/PIL/Image.py (resize),
// src/_imaging.c (_resize) and src/libImaging/Resample.c.
import { crop, type Pixels } from './pixels.ts';

export type ResampleFilter = 'lanczos' | 'bicubic';

interface Filter {
  fn: (x: number) => number;
  support: number;
}

function sinc(x: number): number {
  if (x === 0) return 1;
  x = x * Math.PI;
  return Math.sin(x) / x;
}

const FILTERS: Record<ResampleFilter, Filter> = {
  lanczos: { fn: (x) => (-3 <= x && x < 3 ? sinc(x) * sinc(x / 3) : 0), support: 3 },
  // Resample.c's bicubic_filter with a = -0.5, its operations in its order
  bicubic: {
    fn: (x) => {
      if (x < 0) x = -x;
      if (x < 1) return (1.5 * x - 2.5) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * -0.5;
      return 0;
    },
    support: 2,
  },
};

/** 8 bits of result and 2 of headroom for the filter's negative lobes: Resample.c's PRECISION_BITS. */
const PRECISION_BITS = 32 - 8 - 2;

/**
 * PIL Image.resize((width, height), filter, box): Lanczos unless told, `box`
 * the source rectangle (fractional, and possibly of zero width or height,
 * which stretches one edge of the source), the whole image by default.
 */
export function resize(src: Pixels, width: number, height: number, box?: [number, number, number, number], filter: ResampleFilter = 'lanczos'): Pixels {
  const b = box ?? [0, 0, src.width, src.height];
  if (width === src.width && height === src.height && b[0] === 0 && b[1] === 0 && b[2] === src.width && b[3] === src.height) {
    return { ...src, data: src.data.slice() };
  }
  // Image.resize sends very tall images through two one-pass resizes, vertical first
  if (src.height > src.width * 100 && height < src.height) {
    const tall = resizeCore(src, src.width, height, [0, b[1], src.width, b[3]], FILTERS[filter]);
    return resizeCore(tall, width, height, [b[0], 0, b[2], height], FILTERS[filter]);
  }
  return resizeCore(src, width, height, b, FILTERS[filter]);
}

/** _imaging.c's _resize: the box as C floats, its checks, and a plain crop when the box is whole pixels of the output's size. */
function resizeCore(src: Pixels, width: number, height: number, box: number[], filter: Filter): Pixels {
  const [x0, y0, x1, y1] = box.map(Math.fround);
  if (width < 1 || height < 1) throw new RangeError('resize: height and width must be > 0');
  if (x0 < 0 || y0 < 0) throw new RangeError("resize: box offset can't be negative");
  if (x1 > src.width || y1 > src.height) throw new RangeError("resize: box can't exceed original image size");
  if (x1 - x0 < 0 || y1 - y0 < 0) throw new RangeError("resize: box can't be empty");
  if (Number.isInteger(x0) && Math.fround(x1 - x0) === width && Number.isInteger(y0) && Math.fround(y1 - y0) === height) {
    return crop(src, [x0, y0, x1, y1]);
  }
  return resample(src, width, height, [x0, y0, x1, y1], filter);
}

/** ImagingResampleInner: horizontal pass, then vertical, each only where its size or box changes something. */
function resample(src: Pixels, width: number, height: number, box: number[], filter: Filter): Pixels {
  const needHorizontal = width !== src.width || box[0] !== 0 || box[2] !== width;
  const needVertical = height !== src.height || box[1] !== 0 || box[3] !== height;
  const vert = coefficients(src.height, box[1], box[3], height, filter);

  let im = src;
  if (needHorizontal) {
    // only the source rows the vertical pass will read
    const first = vert.bounds[0];
    const last = vert.bounds[(height - 1) * 2] + vert.bounds[(height - 1) * 2 + 1];
    for (let i = 0; i < height; i++) vert.bounds[i * 2] -= first;
    im = horizontal(src, coefficients(src.width, box[0], box[2], width, filter), first, last - first);
  }
  if (needVertical) im = vertical(im, vert, height);
  return im === src ? { ...src, data: src.data.slice() } : im;
}

interface Coefficients {
  /** per output pixel: first source index, then how many */
  bounds: Int32Array;
  /** per output pixel, ksize fixed-point weights */
  k: Int32Array;
  ksize: number;
}

/** precompute_coeffs then normalize_coeffs_8bpc: doubles from a float box, then weights scaled to 2^PRECISION_BITS, rounded away from zero. */
function coefficients(inSize: number, in0: number, in1: number, outSize: number, filter: Filter): Coefficients {
  // in1 - in0 is a float subtraction in C, widened to double afterwards
  const scale = Math.fround(in1 - in0) / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const k = new Int32Array(outSize * ksize);
  const weights = new Float64Array(ksize);
  const invFilterscale = 1 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    // (int) casts: truncation toward zero
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = filter.fn((x + xmin - center + 0.5) * invFilterscale);
      weights[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0 ? weights[x] / ww : weights[x];
      k[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * (1 << PRECISION_BITS)) : Math.trunc(0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { bounds, k, ksize };
}

/** clip8: the sum shifted out of fixed point, clamped to a byte (Resample.c's lookup table, without the table). */
function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** ImagingResampleHorizontal_8bpc over `rows` source rows from `offset`. */
function horizontal(src: Pixels, { bounds, k, ksize }: Coefficients, offset: number, rows: number): Pixels {
  const c = src.channels;
  const width = bounds.length / 2;
  const out = new Uint8Array(width * rows * c);
  for (let yy = 0; yy < rows; yy++) {
    const line = (yy + offset) * src.width * c;
    for (let xx = 0; xx < width; xx++) {
      const xmin = bounds[xx * 2];
      const xmax = bounds[xx * 2 + 1];
      for (let ch = 0; ch < c; ch++) {
        let ss = 1 << (PRECISION_BITS - 1);
        for (let x = 0; x < xmax; x++) ss += src.data[line + (x + xmin) * c + ch] * k[xx * ksize + x];
        out[(yy * width + xx) * c + ch] = clip8(ss);
      }
    }
  }
  return { width, height: rows, channels: c, data: out };
}

/** ImagingResampleVertical_8bpc. */
function vertical(src: Pixels, { bounds, k, ksize }: Coefficients, height: number): Pixels {
  const c = src.channels;
  const rowLen = src.width * c;
  const out = new Uint8Array(rowLen * height);
  for (let yy = 0; yy < height; yy++) {
    const ymin = bounds[yy * 2];
    const ymax = bounds[yy * 2 + 1];
    for (let i = 0; i < rowLen; i++) {
      let ss = 1 << (PRECISION_BITS - 1);
      for (let y = 0; y < ymax; y++) ss += src.data[(y + ymin) * rowLen + i] * k[yy * ksize + y];
      out[yy * rowLen + i] = clip8(ss);
    }
  }
  return { width: src.width, height, channels: c, data: out };
}
