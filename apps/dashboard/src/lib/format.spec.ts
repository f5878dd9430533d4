import {
  describeBaseModel,
  formatBytes,
  formatDuration,
  formatEta,
  formatAxisTicks,
  formatMetric,
  formatParameterCount,
  formatPercent,
  formatRelative,
  jobSuffix,
  parseStatusDetails,
  progressPercent,
} from './format';

describe('formatDuration', () => {
  it.each([
    [0, '0 s'],
    [42.4, '42 s'],
    [60, '1 min 00 s'],
    [185, '3 min 05 s'],
    [7260, '2 h 01 min'],
    [200_000, '2 d 7 h'],
    [-5, '0 s'],
  ])('%s s → %s', (seconds, text) => expect(formatDuration(seconds)).toBe(text));
});

describe('formatRelative', () => {
  const now = 1_700_000_000_000;
  it.each([
    [now / 1000, 'just now'],
    [now / 1000 - 30, '30 s ago'],
    [now / 1000 - 300, '5 min ago'],
    [now / 1000 - 3 * 3600, '3 h ago'],
    [now / 1000 - 2 * 86400, '2 d ago'],
    [now / 1000 + 120, 'in 2 min'],
  ])('%s → %s', (unix, text) => expect(formatRelative(unix, now)).toBe(text));
});

describe('formatEta', () => {
  const now = 1_700_000_000_000;
  it('counts down for a running job with an estimate', () => {
    expect(formatEta({ status: 'running', estimated_finish: now / 1000 + 90 }, now)).toBe(
      '1 min 30 s left',
    );
  });
  it('says when an estimate has passed or is missing', () => {
    expect(formatEta({ status: 'running', estimated_finish: now / 1000 - 10 }, now)).toBe(
      'Any moment',
    );
    expect(formatEta({ status: 'running', estimated_finish: null }, now)).toBe('Estimating…');
    expect(formatEta({ status: 'queued', estimated_finish: null }, now)).toBe(
      'Waiting for a worker',
    );
    expect(formatEta({ status: 'queued', estimated_finish: now / 1000 + 50 }, now)).toBe(
      'Waiting for a worker',
    );
  });
  it('is Done for succeeded jobs and a dash for the rest', () => {
    expect(formatEta({ status: 'succeeded', estimated_finish: null }, now)).toBe('Done');
    for (const status of ['failed', 'cancelled', 'paused', 'validating_files'] as const) {
      expect(formatEta({ status, estimated_finish: now / 1000 + 50 }, now)).toBe('—');
    }
  });
});

describe('formatBytes, formatMetric, formatPercent', () => {
  it('formats sizes in binary units', () => {
    expect(formatBytes(512)).toBe('512 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(50 * 1024 * 1024)).toBe('50 MiB');
    expect(formatBytes(null)).toBe('—');
  });
  it('formats metric values to 4 significant digits', () => {
    expect(formatMetric(3.14159265)).toBe('3.142');
    expect(formatMetric(0.000123)).toBe('1.23e-4');
    expect(formatMetric(20000)).toBe('20,000');
    expect(formatMetric(0)).toBe('0');
    expect(formatMetric(Number.NaN)).toBe('NaN');
    expect(formatMetric(undefined)).toBe('—');
    expect(formatMetric('linear')).toBe('linear');
  });
  it('rounds percentages', () => {
    expect(formatPercent(33.333)).toBe('33%');
    expect(formatPercent(null)).toBe('—');
  });
});

describe('progressPercent', () => {
  const progress = (step: number, total: number | null, percent: number | null) => ({
    step,
    total_steps: total,
    epoch: null,
    percent,
  });
  it("prefers the API's percent, else step/total, and 100 once succeeded", () => {
    expect(progressPercent(progress(5, 20, 25), 'running')).toBe(25);
    expect(progressPercent(progress(5, 20, null), 'running')).toBe(25);
    expect(progressPercent(progress(0, null, null), 'queued')).toBeNull();
    expect(progressPercent(progress(3, 3, 100), 'succeeded')).toBe(100);
    expect(progressPercent(progress(0, null, null), 'succeeded')).toBe(100);
  });
});

describe('jobSuffix', () => {
  it('reads the suffix from the fine-tuned model name', () => {
    expect(jobSuffix({ fine_tuned_model: 'ft:tiny-random-gpt2:org-1:my-suffix:ftjob-9' })).toBe(
      'my-suffix',
    );
    expect(jobSuffix({ fine_tuned_model: 'ft:tiny-random-gpt2:org-1::ftjob-9' })).toBeNull();
    expect(jobSuffix({ fine_tuned_model: null })).toBeNull();
  });
  it('prefers a suffix field when the API sends one', () => {
    expect(jobSuffix({ fine_tuned_model: null, suffix: 'direct' })).toBe('direct');
  });
});

describe('parseStatusDetails', () => {
  it('splits the validator summary from its line errors (files.service format)', () => {
    const details = [
      '2 problem(s) found:',
      'line 1: "prompt" must be a string',
      'line 2: not valid JSON',
    ].join('\n');
    expect(parseStatusDetails(details)).toEqual({
      summary: '2 problem(s) found:',
      problems: [
        { line: 1, reason: '"prompt" must be a string' },
        { line: 2, reason: 'not valid JSON' },
      ],
    });
  });
  it('keeps file-level problems without a line number', () => {
    expect(
      parseStatusDetails('1 problem(s) found:\nthe file holds 2 examples; at least 10 are needed'),
    ).toEqual({
      summary: '1 problem(s) found:',
      problems: [{ line: null, reason: 'the file holds 2 examples; at least 10 are needed' }],
    });
    expect(parseStatusDetails(null)).toEqual({ summary: null, problems: [] });
  });
});

describe('formatAxisTicks', () => {
  it('keeps 4 significant digits while the ticks differ', () => {
    expect(formatAxisTicks([0, 0.5, 1, 1.5])).toEqual(['0', '0.5', '1', '1.5']);
  });

  it('adds digits until ticks of a loss that barely moves differ (issue 14)', () => {
    const labels = formatAxisTicks([5.597, 5.5972, 5.5974, 5.5976]);
    expect(new Set(labels).size).toBe(4);
    expect(labels).toEqual(['5.597', '5.5972', '5.5974', '5.5976']);
  });
});

describe('base model facts (issue 16, item 8)', () => {
  it('formats parameter counts as model cards do', () => {
    expect(formatParameterCount(999)).toBe('999');
    expect(formatParameterCount(36_128)).toBe('36.1K');
    expect(formatParameterCount(2_885_888)).toBe('2.89M');
    expect(formatParameterCount(494_032_768)).toBe('494M');
    expect(formatParameterCount(3_821_079_552)).toBe('3.82B');
  });

  it("describes a base model by its architecture, size and context, leaving out what's null", () => {
    expect(
      describeBaseModel({ architecture: 'qwen2', parameters: 494_032_768, context_length: 32768 }),
    ).toBe('qwen2, 494M params, context 32768');
    expect(describeBaseModel({ architecture: null, parameters: null, context_length: null })).toBe(
      '',
    );
    expect(describeBaseModel({})).toBe('');
  });
});
