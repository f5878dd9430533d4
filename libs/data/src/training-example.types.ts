/**
 * Normalized training examples, the output of JSONL parsing and the input of tokenization.
 * These live in libs/data (not libs/contracts) because they describe file contents, not REST
 * shapes; the API only needs `JsonlValidationResult`.
 */

/** The three JSONL line shapes a dataset may use (DESIGN §4 Files). One file uses one shape. */
export type DatasetFormat = 'chat' | 'prompt_completion' | 'text';

/** Roles a chat line may use. Tool and function roles are rejected: no template support yet. */
export const CHAT_ROLES = ['system', 'user', 'assistant'] as const;
export type ChatRole = (typeof CHAT_ROLES)[number];

/**
 * One chat turn after normalization. `weight` is always set: 1 means the message's tokens are
 * training targets. Assistant messages default to 1 (0 when the file says `"weight": 0`);
 * system and user messages are always 0, because the loss covers assistant tokens only.
 */
export interface ChatMessage {
  role: ChatRole;
  content: string;
  weight: 0 | 1;
}

/** Messages as a chat template consumes them (no weight); also what generation prompts use. */
export interface TemplateMessage {
  role: ChatRole;
  content: string;
}

export interface ChatExample {
  format: 'chat';
  messages: ChatMessage[];
}

export interface PromptCompletionExample {
  format: 'prompt_completion';
  prompt: string;
  completion: string;
}

export interface TextExample {
  format: 'text';
  text: string;
}

/** A validated, normalized dataset line; unknown keys of the source line are dropped. */
export type TrainingExample = ChatExample | PromptCompletionExample | TextExample;

/**
 * What a file trains: supervised fine-tuning (`sft`: the three line shapes above) or
 * preference pairs for DPO (`preference`: OpenAI's `input` / `preferred_output` /
 * `non_preferred_output` lines). One file holds one kind.
 */
export type DatasetKind = 'sft' | 'preference';

/**
 * A validated preference line (OpenAI's DPO JSONL), normalized like a chat line: `prompt` is
 * `input.messages` with every weight 0 (never scored); `chosen` and `rejected` are the
 * assistant messages of `preferred_output` and `non_preferred_output`, with weight 1 (scored).
 */
export interface PreferenceExample {
  format: 'preference';
  prompt: ChatMessage[];
  chosen: ChatMessage[];
  rejected: ChatMessage[];
}
