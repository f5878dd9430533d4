import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import type uPlot from 'uplot';
import { formatAxisTicks, formatMetric } from '../lib/format';

export interface ChartSeries {
  label: string;
  values: (number | null)[];
  color: string;
  dash?: number[];
}

export interface MetricChartProps {
  id: string;
  title: string;
  yLabel: string;
  steps: number[];
  series: ChartSeries[];
  emptyText: string;
  /** A fixed y range (accuracy is 0–1); otherwise uPlot fits the data. */
  yRange?: [number, number];
}

const HEIGHT = 240;
const STEP_INCREMENTS = [
  1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6,
];

let uPlotLoading: Promise<typeof uPlot> | null = null;
const loadUPlot = () => (uPlotLoading ??= import('./uplot-chunk').then((m) => m.default));

function latest(series: ChartSeries, steps: number[]): string | null {
  for (let i = series.values.length - 1; i >= 0; i -= 1) {
    const value = series.values[i];
    if (value !== null) return `${series.label} ${formatMetric(value)} at step ${steps[i]}`;
  }
  return null;
}

/**
 * A uPlot line chart with the step on the x-axis. The plot is created once per series layout
 * and fed new data with setData (no re-creation per poll), and follows its container's width.
 */
export function MetricChart({
  id,
  title,
  yLabel,
  steps,
  series,
  emptyText,
  yRange,
}: MetricChartProps) {
  const containerRef = useRef<HTMLDivElement>(null);
  const plotRef = useRef<uPlot | null>(null);
  const layout = series.map((s) => `${s.label}|${s.color}`).join(',');
  const columns = [steps, ...series.map((s) => s.values)];
  // Same arrays → same data: the clock-driven re-renders of the page do not redraw the plot.
  const data = useMemo((): uPlot.AlignedData => [steps, ...series.map((s) => s.values)], columns);

  const dataRef = useRef(data);
  dataRef.current = data;
  const [loadError, setLoadError] = useState<string | null>(null);

  useEffect(() => {
    const container = containerRef.current;
    if (!container) return undefined;
    let disposed = false;
    let cleanup: () => void = () => undefined;
    loadUPlot()
      .then((UPlot) => {
        if (disposed) return;
        cleanup = mount(UPlot, container);
      })
      .catch((error: unknown) =>
        setLoadError(error instanceof Error ? error.message : String(error)),
      );
    return () => {
      disposed = true;
      cleanup();
    };
    // Re-create only when the series layout changes; data flows through setData below.
  }, [layout, yLabel]);

  const mount = (UPlot: typeof uPlot, container: HTMLDivElement) => {
    const width = Math.max(240, container.clientWidth);
    const plot = new UPlot(
      {
        width,
        height: HEIGHT,
        scales: { x: { time: false }, y: yRange ? { range: yRange } : {} },
        cursor: { drag: { x: false, y: false } },
        legend: { show: true, live: true },
        axes: [
          {
            label: 'Step',
            stroke: '#374151',
            // Steps are whole numbers: never tick at 2.5.
            incrs: STEP_INCREMENTS,
            grid: { stroke: '#e5e7eb', width: 1 },
            ticks: { stroke: '#d1d5db', width: 1 },
          },
          {
            label: yLabel,
            stroke: '#374151',
            size: 60,
            grid: { stroke: '#e5e7eb', width: 1 },
            ticks: { stroke: '#d1d5db', width: 1 },
            values: (_u, splits) => formatAxisTicks(splits),
          },
        ],
        series: [
          { label: 'Step' },
          ...series.map((s): uPlot.Series => ({
            label: s.label,
            stroke: s.color,
            width: 2,
            dash: s.dash,
            spanGaps: true,
            points: { show: true, size: 5, fill: s.color },
            value: (_u, v) => (v === null || v === undefined ? '—' : formatMetric(v)),
          })),
        ],
      },
      dataRef.current,
      container,
    );
    plotRef.current = plot;
    const observer = new ResizeObserver(() => {
      const next = Math.max(240, container.clientWidth);
      if (Math.abs(next - plot.width) > 1) plot.setSize({ width: next, height: HEIGHT });
    });
    observer.observe(container);
    return () => {
      observer.disconnect();
      plot.destroy();
      plotRef.current = null;
    };
  };

  useEffect(() => {
    plotRef.current?.setData(data);
  }, [data]);

  const points = series.reduce((n, s) => n + s.values.filter((v) => v !== null).length, 0);
  const summary = series
    .map((s) => latest(s, steps))
    .filter(Boolean)
    .join('; ');
  return (
    <figure class="chart" aria-labelledby={`${id}-title`}>
      <figcaption id={`${id}-title`} class="chart-title">
        {title}
      </figcaption>
      <div
        ref={containerRef}
        class="chart-canvas"
        id={id}
        data-points={points}
        role="img"
        aria-label={points ? `${title}: ${summary}` : `${title}: ${emptyText}`}
      />
      <p class="chart-summary muted">{points ? `Latest: ${summary}.` : emptyText}</p>
      {loadError ? <p class="alert">The chart could not load: {loadError}</p> : null}
    </figure>
  );
}
