/**
 * String stop sequences over a streamed completion (OpenAI's `stop`): the completion ends
 * before the first occurrence of any stop string, which is never returned, and text is
 * streamed only once it is final.
 *
 * A stop string can span several tokens, and a token's bytes can be half a UTF-8 character,
 * so matching runs on the detokenized text of the whole completion, decoded again after
 * every token (simple and correct: earlier characters can only firm up, never change, once
 * a pending multi-byte character completes). Text is held back while it could still turn
 * into a stop string (its end is a prefix of one) or ends in U+FFFD, the decoder's stand-in
 * for an unfinished multi-byte character.
 */
export class StopSequenceMatcher {
  /** Characters of the completion already handed out. */
  private emitted = 0;

  constructor(private readonly stops: readonly string[]) {
    if (stops.some((stop) => stop.length === 0)) {
      throw new RangeError('a stop sequence must not be empty');
    }
  }

  /**
   * `text` is the whole completion decoded so far. Returns the text newly final since the
   * last call, and whether a stop string has appeared (then the completion ends before it).
   */
  update(text: string): { delta: string; stopped: boolean } {
    let cut = -1;
    for (const stop of this.stops) {
      const at = text.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) return { delta: this.advance(text, cut), stopped: true };
    return { delta: this.advance(text, text.length - this.heldBack(text)), stopped: false };
  }

  /** The completion ended another way (length, a stop token): all of `text` is final. */
  flush(text: string): string {
    return this.advance(text, text.length);
  }

  private advance(text: string, end: number): string {
    if (end <= this.emitted) return '';
    const delta = text.slice(this.emitted, end);
    this.emitted = end;
    return delta;
  }

  /** Length of the suffix of `text` that must wait for more tokens. */
  private heldBack(text: string): number {
    let held = 0;
    while (held < text.length && text[text.length - 1 - held] === '\uFFFD') held++;
    for (const stop of this.stops) {
      // The longest proper prefix of `stop` that `text` ends with.
      for (let k = Math.min(stop.length - 1, text.length); k > held; k--) {
        if (text.endsWith(stop.slice(0, k))) {
          held = k;
          break;
        }
      }
    }
    return held;
  }
}
