// IEEE 754 half precision at the engine's edges. fp16 exports take and return
// float16 tensors; the engine's latents, scheduler math and RNG stay float32.
// onnxruntime-web accepts float16 data as Uint16Array bits everywhere, and
// returns Float16Array where the runtime has it (Chrome), else Uint16Array
// bits (Node 20): both are handled here.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** One float32 to float16 bits, rounding to nearest even (as Float16Array and hardware do). */
export function toHalfBits(value: number): number {
  f32[0] = value;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 | (mant >>> 13) : 0); // inf, NaN (quiet, payload kept)
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow: inf
  if (e <= 0) {
    // subnormal half (or zero): shift the mantissa with its implicit 1 into place
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rest > mid || (rest === mid && half & 1) ? 1 : 0));
  }
  const half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  // a carry out of the mantissa rolls into the exponent, up to inf: still correct
  return sign | (half + (rest > 0x1000 || (rest === 0x1000 && half & 1) ? 1 : 0));
}

/** float16 bits to the float32 value they hold (exact). */
export function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

type Float16ArrayCtor = new (src: ArrayLike<number> | ArrayBufferLike, byteOffset?: number, length?: number) => ArrayLike<number> & { buffer: ArrayBufferLike; byteOffset: number; length: number };
const NativeFloat16 = (globalThis as { Float16Array?: Float16ArrayCtor }).Float16Array;

/** float32 values to float16 bits (native Float16Array rounding where the runtime has it). */
export function toHalf(values: Float32Array): Uint16Array {
  if (NativeFloat16) {
    const h = new NativeFloat16(values);
    return new Uint16Array(h.buffer, h.byteOffset, h.length);
  }
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = toHalfBits(values[i]);
  return out;
}

/** float16 data as onnxruntime returns it (bits, or a native Float16Array) to float32. */
export function fromHalf(data: ArrayLike<number>): Float32Array {
  if (data instanceof Uint16Array) {
    const out = new Float32Array(data.length);
    for (let i = 0; i < data.length; i++) out[i] = fromHalfBits(data[i]);
    return out;
  }
  return Float32Array.from(data);
}
