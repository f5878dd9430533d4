/**
 * WCAG AA colour contrast of the palette in styles.css (4.5:1 for text). The browser suite
 * also measures the rendered pages; this catches a bad palette edit in milliseconds.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

const css = readFileSync(path.join(__dirname, 'styles.css'), 'utf8');
const vars = new Map(
  [...css.matchAll(/--([\w-]+):\s*(#[0-9a-fA-F]{6})\s*;/g)].map((m) => [m[1], m[2]]),
);

function luminance(hex: string): number {
  const channel = (i: number) => {
    const c = parseInt(hex.slice(i, i + 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
}

function contrast(a: string, b: string): number {
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

const color = (name: string) => {
  const value = name.startsWith('#') ? name : vars.get(name);
  if (!value) throw new Error(`styles.css defines no --${name}`);
  return value;
};

/** [foreground, background] as used together in styles.css. */
const TEXT_PAIRS: [string, string][] = [
  ['text', 'bg'],
  ['text', 'surface'],
  ['muted', 'bg'],
  ['muted', 'surface'],
  ['muted', '#f8fafc'], // table headers, stat labels
  ['primary', 'surface'],
  ['primary', 'bg'],
  ['primary-hover', 'surface'],
  ['on-primary', 'primary'],
  ['on-primary', 'primary-hover'],
  ['on-danger', 'danger'],
  ['danger', 'surface'],
  ['alert-text', 'alert-bg'],
  ['notice-text', 'notice-bg'],
  ['success-text', 'surface'],
  ...['validating', 'queued', 'running', 'paused', 'succeeded', 'failed', 'cancelled'].map(
    (s): [string, string] => [`badge-${s}-fg`, `badge-${s}-bg`],
  ),
  ['#ffffff', '#7f1d1d'], // connection banner
  ['#7f1d1d', '#ffffff'], // its button
  ['#e5e7eb', '#111827'], // nav links
  ['#ffffff', '#374151'], // current nav link
  ['#1e40af', 'surface'], // event levels
  ['#92400e', 'surface'],
  ['#991b1b', 'surface'],
];

describe('palette contrast (WCAG AA)', () => {
  it('computes the WCAG ratio', () => {
    expect(contrast('#000000', '#ffffff')).toBeCloseTo(21, 5);
    expect(contrast('#777777', '#ffffff')).toBeCloseTo(4.48, 2);
  });

  it.each(TEXT_PAIRS)('%s on %s is at least 4.5:1', (fg, bg) => {
    expect(contrast(color(fg), color(bg))).toBeGreaterThanOrEqual(4.5);
  });

  it('progress fill and focus ring stand out 3:1 from their surroundings (non-text contrast)', () => {
    expect(contrast(color('fill'), color('track'))).toBeGreaterThanOrEqual(3);
    expect(contrast(color('fill-done'), color('track'))).toBeGreaterThanOrEqual(3);
    expect(contrast(color('focus'), color('surface'))).toBeGreaterThanOrEqual(3);
    expect(contrast(color('focus'), color('bg'))).toBeGreaterThanOrEqual(3);
  });
});
