/**
 * Number formatting that reproduces Python's format specs exactly, so printed figures match
 * what PEFT prints for the same model.
 */

/**
 * Python `f"{n:,d}"`: thousands separated by commas. The digits come from BigInt, which
 * writes any integer in full, where `Number#toString` switches to `4.722366509258088e+21`
 * from 10^21 on.
 */
export function formatThousands(n: number | bigint): string {
  if (typeof n === 'number' && !Number.isFinite(n)) return String(n);
  const whole = typeof n === 'bigint' ? n : BigInt(Math.trunc(n));
  const digits = (whole < 0n ? -whole : whole).toString();
  const grouped = digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  return whole < 0n ? `-${grouped}` : grouped;
}

/**
 * Python `f"{x:.{digits}f}"`. Python rounds the exact binary value half-to-even, whereas
 * `Number.prototype.toFixed` rounds exact ties upwards (0.03125 → "0.0313" in JS,
 * "0.0312" in Python). Every double is a dyadic rational m·2^e, so ties are detected
 * exactly with BigInt arithmetic.
 */
export function formatFixedLikePython(x: number, digits: number): string {
  if (!Number.isFinite(x)) return Number.isNaN(x) ? 'nan' : x > 0 ? 'inf' : '-inf';
  const negative = x < 0 || Object.is(x, -0);
  const { mantissa, exponent } = decompose(Math.abs(x));
  // value = mantissa · 2^exponent; scaled = value · 10^digits = num / den exactly.
  let num = mantissa * 10n ** BigInt(digits);
  let den = 1n;
  if (exponent >= 0) num <<= BigInt(exponent);
  else den <<= BigInt(-exponent);
  let q = num / den;
  const twiceRemainder = (num % den) * 2n;
  if (twiceRemainder > den || (twiceRemainder === den && q % 2n === 1n)) q += 1n;
  let text = q.toString().padStart(digits + 1, '0');
  if (digits > 0) text = `${text.slice(0, -digits)}.${text.slice(-digits)}`;
  return negative ? `-${text}` : text;
}

function decompose(x: number): { mantissa: bigint; exponent: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  if (biased === 0) return { mantissa: fraction, exponent: -1074 };
  return { mantissa: fraction | (1n << 52n), exponent: biased - 1075 };
}
