/**
 * Four tiny preference pairs in OpenAI's DPO JSONL shape (`input.messages`, `preferred_output`,
 * `non_preferred_output`): the smallest data set the DPO tests train on (four is
 * LORAFLEET_MIN_EXAMPLES in the test fleets). Each answer is one short word, so a few steps on
 * a tiny model already move the reward margin.
 */
export const TINY_PREFERENCE_PAIRS: readonly (readonly [
  prompt: string,
  chosen: string,
  rejected: string,
])[] = [
  ['Say hi', 'hi', 'no'],
  ['Sky color?', 'blue', 'green'],
  ['The quick brown', 'fox', 'cat'],
  ['Two plus two', 'four', 'five'],
];

/** {@link TINY_PREFERENCE_PAIRS} as JSONL lines, newline-terminated. */
export const TINY_PREFERENCE_JSONL = `${TINY_PREFERENCE_PAIRS.map(([prompt, chosen, rejected]) =>
  JSON.stringify({
    input: { messages: [{ role: 'user', content: prompt }] },
    preferred_output: [{ role: 'assistant', content: chosen }],
    non_preferred_output: [{ role: 'assistant', content: rejected }],
  }),
).join('\n')}\n`;
