/**
 * A small seeded PRNG (mulberry32) for weight init. tfjs's own random ops are seeded too,
 * but their streams are an implementation detail of tfjs; owning the generator keeps an
 * adapter's initial values identical across tfjs versions and backends, which the
 * checkpoint/resume guarantee (DESIGN §2) relies on.
 */
export class SeededRandom {
  private state: number;

  constructor(seed: number) {
    // Fold any JS number (including non-integers and negatives) into 32 bits.
    this.state = (Math.floor(seed) ^ 0x9e3779b9) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.state = (this.state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Fills a new array with U(low, high). */
  uniform(count: number, low: number, high: number): Float32Array {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = low + (high - low) * this.next();
    return out;
  }

  /** Fills a new array with N(0, std²) via Box–Muller. */
  normal(count: number, std: number): Float32Array {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i += 2) {
      const u1 = 1 - this.next(); // (0, 1]: keeps log finite
      const u2 = this.next();
      const radius = Math.sqrt(-2 * Math.log(u1)) * std;
      out[i] = radius * Math.cos(2 * Math.PI * u2);
      if (i + 1 < count) out[i + 1] = radius * Math.sin(2 * Math.PI * u2);
    }
    return out;
  }
}

/** Derives an independent 32-bit seed for a named stream, e.g. one per LoRA module. */
export function deriveSeed(seed: number, label: string): number {
  // FNV-1a over the label, mixed with the seed.
  let h = (0x811c9dc5 ^ Math.floor(seed)) >>> 0;
  for (let i = 0; i < label.length; i++) {
    h ^= label.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
