// A request's own random stream: Philox4x32-10 (Salmon et al., "Parallel random
// numbers: as easy as 1, 2, 3", 2011) keyed by the 32-bit seed, plus Box-Muller.
// Integer-only counter arithmetic makes the uniform stream identical on every
// platform; Box-Muller uses Math.log/cos/sin in float64 then rounds to float32.

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/** High and low 32 bits of the 64-bit product of two uint32s. */
function mulhilo(a: number, b: number): [number, number] {
  const lo = Math.imul(a, b) >>> 0;
  const aH = a >>> 16;
  const aL = a & 0xffff;
  const bH = b >>> 16;
  const bL = b & 0xffff;
  const mid1 = aH * bL;
  const mid2 = aL * bH;
  const carry = ((aL * bL) / 0x10000 + (mid1 & 0xffff) + (mid2 & 0xffff)) / 0x10000;
  const hi = (aH * bH + Math.floor(mid1 / 0x10000) + Math.floor(mid2 / 0x10000) + Math.floor(carry)) >>> 0;
  return [hi, lo];
}

/** One Philox4x32-10 block: 4 uint32 outputs for a 128-bit counter and 64-bit key. */
export function philox4x32(counter: readonly number[], key: readonly number[]): number[] {
  let [c0, c1, c2, c3] = counter;
  let [k0, k1] = key;
  for (let round = 0; round < 10; round++) {
    const [hi0, lo0] = mulhilo(M0, c0);
    const [hi1, lo1] = mulhilo(M1, c2);
    [c0, c1, c2, c3] = [(hi1 ^ c1 ^ k0) >>> 0, lo1, (hi0 ^ c3 ^ k1) >>> 0, lo0];
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  return [c0, c1, c2, c3];
}

/** Seeded generator owned by one request; never shared. */
export class RequestRng {
  private counter = 0;

  constructor(readonly seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new RangeError(`seed must be an integer in 0..4294967295, got ${seed}`);
  }

  /** 4 uniforms in (0, 1): 32-bit integers mapped to the centres of 2^32 bins. */
  private block(): number[] {
    const out = philox4x32([this.counter >>> 0, Math.floor(this.counter / 0x100000000) >>> 0, 0, 0], [this.seed, 0]);
    this.counter++;
    return out.map((u) => (u + 0.5) / 4294967296);
  }

  /** `n` standard normal floats (Box-Muller, two per uniform pair). */
  normal(n: number): Float32Array {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 4) {
      const [u1, u2, u3, u4] = this.block();
      const r1 = Math.sqrt(-2 * Math.log(u1));
      const r2 = Math.sqrt(-2 * Math.log(u3));
      const v = [r1 * Math.cos(2 * Math.PI * u2), r1 * Math.sin(2 * Math.PI * u2), r2 * Math.cos(2 * Math.PI * u4), r2 * Math.sin(2 * Math.PI * u4)];
      for (let j = 0; j < 4 && i + j < n; j++) out[i + j] = v[j];
    }
    return out;
  }
}
