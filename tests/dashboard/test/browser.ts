/**
 * Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core) and page audits
 * shared by the browser tests: WCAG AA text contrast, horizontal overflow, screenshots.
 */
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';
import { REPO_ROOT } from '@lorafleet/testing';

export const CHROMIUM_PATH = process.env.LORAFLEET_CHROMIUM ?? '/usr/bin/chromium';

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

/**
 * Where screenshots go: test artifacts under tmp/ (git-ignored) by default;
 * LORAFLEET_SCREENSHOTS_DIR=docs/images refreshes the ones docs/dashboard.md shows.
 */
export const SCREENSHOTS_DIR = path.resolve(
  REPO_ROOT,
  process.env.LORAFLEET_SCREENSHOTS_DIR ?? 'tmp/dashboard-screenshots',
);

export async function screenshot(page: Page, name: string, fullPage = true): Promise<string> {
  mkdirSync(SCREENSHOTS_DIR, { recursive: true });
  const file = path.join(SCREENSHOTS_DIR, `dashboard-${name}.png`);
  // Freeze the clock-driven bits (caret, transitions) so images are stable.
  await page.addStyleTag({
    content: '*{transition:none!important;caret-color:transparent!important}',
  });
  await page.screenshot({ path: file, fullPage });
  return file;
}

export interface ContrastFailure {
  text: string;
  ratio: number;
  required: number;
  color: string;
  background: string;
}

/**
 * Every visible text node's contrast against its effective background (ancestors' colours
 * composited), as WCAG 2.x computes it: 4.5:1, or 3:1 for large text (≥ 24 px, or ≥ 18.66 px
 * bold). Disabled controls are exempt (WCAG 1.4.3). Canvas content is not text.
 */
export function auditContrast(page: Page): Promise<ContrastFailure[]> {
  return page.evaluate(() => {
    type Rgba = [number, number, number, number];
    const parse = (value: string): Rgba => {
      const m = /rgba?\(([^)]+)\)/.exec(value);
      if (!m) return [0, 0, 0, 0];
      const parts = m[1]
        .split(/[\s,/]+/)
        .filter(Boolean)
        .map(Number);
      return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
    };
    const over = (top: Rgba, bottom: Rgba): Rgba => {
      const a = top[3] + bottom[3] * (1 - top[3]);
      if (a === 0) return [0, 0, 0, 0];
      const mix = (i: number) => (top[i] * top[3] + bottom[i] * bottom[3] * (1 - top[3])) / a;
      return [mix(0), mix(1), mix(2), a];
    };
    const background = (element: Element | null): Rgba => {
      const layers: Rgba[] = [];
      for (let e = element; e; e = e.parentElement) {
        const bg = parse(getComputedStyle(e).backgroundColor);
        if (bg[3] > 0) layers.push(bg);
        if (bg[3] >= 1) break;
      }
      let result: Rgba = [255, 255, 255, 1];
      for (const layer of layers.reverse()) result = over(layer, result);
      return result;
    };
    const luminance = ([r, g, b]: Rgba) => {
      const c = (v: number) => {
        const s = v / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * c(r) + 0.7152 * c(g) + 0.0722 * c(b);
    };
    const ratio = (a: Rgba, b: Rgba) => {
      const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
      return (hi + 0.05) / (lo + 0.05);
    };
    const failures: ContrastFailure[] = [];
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      const text = node.textContent?.trim();
      const element = node.parentElement;
      if (!text || !element) continue;
      if (element.closest('[disabled], [aria-disabled="true"], .visually-hidden, noscript, option'))
        continue;
      const style = getComputedStyle(element);
      const rect = element.getBoundingClientRect();
      if (
        style.visibility === 'hidden' ||
        style.display === 'none' ||
        rect.width === 0 ||
        rect.height === 0
      )
        continue;
      if (Number(style.opacity) === 0) continue;
      const bg = background(element);
      const fg = over(parse(style.color), bg);
      const size = parseFloat(style.fontSize);
      const bold = Number(style.fontWeight) >= 700;
      const required = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
      const value = ratio(fg, bg);
      if (value < required) {
        failures.push({
          text: text.slice(0, 60),
          ratio: Math.round(value * 100) / 100,
          required,
          color: style.color,
          background: `rgb(${bg.slice(0, 3).map(Math.round).join(', ')})`,
        });
      }
    }
    return failures;
  });
}

/** Wider than the viewport means sideways scrolling on a phone. */
export function horizontalOverflow(page: Page): Promise<number> {
  return page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
}

/** Pixels of the canvas inside `selector` within `tolerance` of the RGB colour. */
export function countCanvasPixels(
  page: Page,
  selector: string,
  rgb: [number, number, number],
  tolerance = 40,
): Promise<number> {
  return page.evaluate(
    ({ selector, rgb, tolerance }) => {
      const canvas = document.querySelector<HTMLCanvasElement>(`${selector} canvas`);
      if (!canvas) return -1;
      const context = canvas.getContext('2d');
      if (!context) return -1;
      const { data } = context.getImageData(0, 0, canvas.width, canvas.height);
      let count = 0;
      for (let i = 0; i < data.length; i += 4) {
        if (
          data[i + 3] > 200 &&
          Math.abs(data[i] - rgb[0]) <= tolerance &&
          Math.abs(data[i + 1] - rgb[1]) <= tolerance &&
          Math.abs(data[i + 2] - rgb[2]) <= tolerance
        ) {
          count += 1;
        }
      }
      return count;
    },
    { selector, rgb, tolerance },
  );
}
