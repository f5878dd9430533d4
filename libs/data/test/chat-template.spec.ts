import {
  ChatTemplateError,
  PLAIN_CHAT_TEMPLATE,
  loadTokenizer,
  renderChat,
  renderChatSegments,
  type ChatMessage,
  type ChatTemplateSource,
  type TextTokenizer,
} from '../src';
import { TINY_CHATML_DIR, TINY_PLAIN_DIR } from './fixtures/tiny-tokenizers';

const CHAT: ChatMessage[] = [
  { role: 'system', content: 'Be brief.', weight: 0 },
  { role: 'user', content: 'Hi', weight: 0 },
  { role: 'assistant', content: 'Hello!', weight: 1 },
];

const trainedText = (messages: ChatMessage[], source: ChatTemplateSource): string[] =>
  renderChatSegments(messages, source)
    .filter((s) => s.trainable)
    .map((s) => s.text);

describe('renderChat', () => {
  let plain: TextTokenizer;
  let chatml: TextTokenizer;
  beforeAll(async () => {
    plain = await loadTokenizer(TINY_PLAIN_DIR);
    chatml = await loadTokenizer(TINY_CHATML_DIR);
  });

  it('uses the documented plain template when the model has no chat template', () => {
    expect(renderChat(CHAT, plain)).toBe(
      '<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!<|endoftext|>',
    );
    expect(renderChat(CHAT.slice(0, 2), plain, { addGenerationPrompt: true })).toBe(
      '<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n',
    );
    expect(renderChat([], plain, { addGenerationPrompt: true })).toBe('<|assistant|>\n');
  });

  it('renders the plain template with no EOS when the tokenizer has none', () => {
    expect(renderChat(CHAT, { specialTokensMap: {} })).toBe(
      '<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\nHello!',
    );
  });

  it("uses the model's chat template from tokenizer_config.json", () => {
    expect(renderChat(CHAT, chatml)).toBe(
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n' +
        '<|im_start|>assistant\nHello!<|im_end|>\n',
    );
    expect(renderChat(CHAT.slice(0, 2), chatml, { addGenerationPrompt: true })).toMatch(
      /<\|im_start\|>assistant\n$/,
    );
  });

  it('passes special tokens to the template as transformers does', () => {
    const source: ChatTemplateSource = {
      chatTemplate: '{{ bos_token }}{{ messages[0].content }}{{ eos_token }}{{ pad_token }}',
      specialTokensMap: { bos_token: '<s>', eos_token: '</s>' },
    };
    expect(renderChat(CHAT.slice(1), source)).toBe('<s>Hi</s>');
  });

  it('wraps template failures in ChatTemplateError', () => {
    expect(() => renderChat(CHAT, { chatTemplate: '{% for %}', specialTokensMap: {} })).toThrow(
      ChatTemplateError,
    );
    const strict: ChatTemplateSource = {
      chatTemplate: "{{ raise_exception('Conversation roles must alternate') }}",
      specialTokensMap: {},
    };
    expect(() => renderChat(CHAT, strict)).toThrow(/Conversation roles must alternate/);
  });

  it('exports the plain template source for documentation and reuse', () => {
    expect(PLAIN_CHAT_TEMPLATE).toContain("'<|' + message.role + '|>\\n'");
  });
});

describe('renderChatSegments', () => {
  let plain: TextTokenizer;
  let chatml: TextTokenizer;
  beforeAll(async () => {
    plain = await loadTokenizer(TINY_PLAIN_DIR);
    chatml = await loadTokenizer(TINY_CHATML_DIR);
  });

  const MULTI: ChatMessage[] = [
    { role: 'user', content: 'a?', weight: 0 },
    { role: 'assistant', content: 'draft', weight: 0 },
    { role: 'user', content: 'b?', weight: 0 },
    { role: 'assistant', content: 'final', weight: 1 },
    { role: 'user', content: 'c?', weight: 0 },
    { role: 'assistant', content: 'last', weight: 1 },
  ];

  it('covers the rendered text exactly', () => {
    for (const tokenizer of [plain, chatml]) {
      const text = renderChatSegments(MULTI, tokenizer)
        .map((s) => s.text)
        .join('');
      expect(text).toBe(renderChat(MULTI, tokenizer));
    }
  });

  it('marks each trained assistant turn with its end-of-turn text, and nothing else', () => {
    expect(trainedText(MULTI, plain)).toEqual(['final<|endoftext|>', 'last<|endoftext|>']);
    expect(trainedText(MULTI, chatml)).toEqual(['final<|im_end|>\n', 'last<|im_end|>\n']);
  });

  it('handles a Llama-3-style template that sets variables and prepends BOS', () => {
    const llama3: ChatTemplateSource = {
      chatTemplate: [
        '{%- for message in messages %}',
        "{%- set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}",
        '{%- if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}',
        '{{- content }}',
        '{%- endfor %}',
        "{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}",
      ].join('\n'),
      specialTokensMap: { bos_token: '<|begin_of_text|>', eos_token: '<|eot_id|>' },
    };
    expect(renderChat(MULTI.slice(0, 2), llama3)).toBe(
      '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\na?<|eot_id|>' +
        '<|start_header_id|>assistant<|end_header_id|>\n\ndraft<|eot_id|>',
    );
    expect(trainedText(MULTI, llama3)).toEqual(['final<|eot_id|>', 'last<|eot_id|>']);
  });

  it('falls back to locating content when the template breaks the prefix property', () => {
    // Appends a footer to the whole chat, so a shorter chat is not a prefix of the full one.
    const footer: ChatTemplateSource = {
      chatTemplate:
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}" +
        '{% if add_generation_prompt %}[assistant]{% else %}[end]{% endif %}',
      specialTokensMap: { eos_token: '</s>' },
    };
    expect(renderChat(MULTI, footer)).toMatch(/\[end\]$/);
    expect(trainedText(MULTI, footer)).toEqual(['final</s>', 'last</s>']);
  });

  it('refuses to guess when the template rewrites content and breaks prefixes', () => {
    const rewriting: ChatTemplateSource = {
      chatTemplate:
        '{% for m in messages %}{{ m.content | upper }}{% endfor %}{% if not add_generation_prompt %}!{% endif %}',
      specialTokensMap: {},
    };
    expect(() => renderChatSegments(MULTI, rewriting)).toThrow(
      /cannot find which tokens belong to messages\[0\]/,
    );
  });

  it('still uses prefixes when a template rewrites content consistently', () => {
    const upper: ChatTemplateSource = {
      chatTemplate:
        '{% for m in messages %}<{{ m.role }}>{{ m.content | upper }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}',
      specialTokensMap: {},
    };
    expect(trainedText(MULTI, upper)).toEqual(['FINAL', 'LAST']);
  });
});
