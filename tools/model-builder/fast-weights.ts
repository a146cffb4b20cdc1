// Random weights at disk speed, for benchmarks that time a full-size model
// (npm run bench -- --gpu): a speed run does not care what the weights are,
// only that they are finite, about the right size, and there are gigabytes of
// them. seededNormals (Box-Muller over mulberry32, then a float16 conversion)
// makes ~30 M values/s; this writes the float bits straight from xorshift32
// words, several hundred million values a second:
//   sign and mantissa random, exponent fixed so |w| lies in [a, 2a) with
//   a = 2^round(log2(scale / 1.53)) (the rms of that uniform band is 1.53a),
// so each weight's rms is within ~1.4x of the scale the builder asks for.
// Deterministic per seed, like the normal weights.

/** Floats bits for n weights of about `scale` rms, from `seed`: fp16 (2 bytes each) or fp32. */
export function fastWeightBytes(seed: number, n: number, scale: number, half: boolean): Uint8Array {
  const bytes = new Uint8Array(half ? 2 * n : 4 * n);
  if (!(scale > 0) || n === 0) return bytes; // zeros
  const e = Math.round(Math.log2(scale / 1.53));
  let s = seed | 0 || 0x9e3779b9 | 0; // xorshift32 must not start at 0; an int32 throughout keeps the loops fast
  if (half) {
    // fp16 exponent field: 1..30 (no subnormals, no infinities)
    const exp = Math.min(30, Math.max(1, e + 15));
    const fixed = (exp << 10) | (exp << 26);
    // two halves per 32-bit word; a trailing odd half comes from one more word
    const words = new Int32Array(bytes.buffer, 0, n >>> 1);
    for (let i = 0; i < words.length; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      words[i] = (s & (0x83ff83ff | 0)) | fixed;
    }
    if (n & 1) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      const h = ((s & 0x83ff) | (exp << 10)) >>> 0;
      bytes[2 * n - 2] = h & 0xff;
      bytes[2 * n - 1] = h >>> 8;
    }
    return bytes;
  }
  const exp = Math.min(254, Math.max(1, e + 127));
  const fixed = exp << 23;
  const words = new Int32Array(bytes.buffer, 0, n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    words[i] = (s & (0x807fffff | 0)) | fixed;
  }
  return bytes;
}
