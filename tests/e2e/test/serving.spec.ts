/**
 * Completions through the whole stack (issue 19): the official `openai` client against the
 * built api, a real worker process with the serve role (its serving child decodes with tfjs,
 * cpu backend), Redis Streams both ways, real Postgres. Answers are checked token for token
 * against lora-core generating greedily in this process on the same model and adapter.
 */
import { ApiKeysRepository, TenantsRepository } from '@lorafleet/db';
import {
  encodeChatPrompt,
  encodeTextPrompt,
  loadTokenizer,
  type TextTokenizer,
} from '@lorafleet/data';
import {
  generateTokens,
  importPeftAdapter,
  loadCausalLM,
  selectBackend,
  type CausalLM,
} from '@lorafleet/lora-core';
import { REPO_ROOT, waitFor, type AppProcess } from '@lorafleet/testing';
import { Redis } from 'ioredis';
import OpenAI from 'openai';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { Fleet } from './fleet-harness';

jest.setTimeout(180_000);

const BASE = 'lorafleet-tiny-llama';
const MODEL_DIR = path.join(REPO_ROOT, 'models', BASE);
const MESSAGES = [
  { role: 'system' as const, content: 'You answer briefly.' },
  { role: 'user' as const, content: 'Say something about numbers.' },
];
const MAX_TOKENS = 12;

describe('completions served by workers (openai client)', () => {
  const fleet = new Fleet({
    apiEnv: {
      LORAFLEET_SERVE_FIRST_TOKEN_TIMEOUT_MS: '120000',
      LORAFLEET_SERVE_TOKEN_TIMEOUT_MS: '3000',
    },
  });
  let client: OpenAI;
  let stranger: OpenAI;
  let model: CausalLM;
  let tokenizer: TextTokenizer;
  let fineTuned = '';
  /** The suite's serving worker; a short claim idle time for the takeover test. */
  let server: AppProcess;
  const CLAIM_IDLE_MS = 2000;

  /** lora-core's own greedy answer, in this process: the reference every served answer meets. */
  async function reference(promptIds: number[], adapter: string | null, maxTokens = MAX_TOKENS) {
    const result = await generateTokens(model, promptIds, {
      maxNewTokens: maxTokens,
      temperature: 0,
      adapter,
      stopTokenIds: tokenizer.stopTokenIds,
    });
    // The stop token ends the answer but is not part of its text (as OpenAI's).
    const textIds = result.finishReason === 'stop' ? result.tokenIds.slice(0, -1) : result.tokenIds;
    return {
      text: tokenizer.decode(textIds, { skipSpecialTokens: true }),
      completionTokens: result.tokenIds.length,
      finishReason: result.finishReason,
    };
  }

  beforeAll(async () => {
    await selectBackend('cpu');
    [model, tokenizer] = await Promise.all([loadCausalLM(MODEL_DIR), loadTokenizer(MODEL_DIR)]);
    await fleet.start();
    server = fleet.startWorker('serve-1', {
      LORAFLEET_SERVE_CLAIM_IDLE_MS: String(CLAIM_IDLE_MS),
    });
    client = new OpenAI({ apiKey: fleet.apiKey, baseURL: `${fleet.baseUrl}/v1`, maxRetries: 0 });
    const tenants = new TenantsRepository(fleet.dataSource);
    const other = await tenants.createTenant('stranger');
    stranger = new OpenAI({
      apiKey: (await new ApiKeysRepository(fleet.dataSource).issue(other.id)).plaintext,
      baseURL: `${fleet.baseUrl}/v1`,
      maxRetries: 0,
    });
  });

  afterAll(async () => {
    model?.dispose();
    await fleet.stop();
  });

  it('serves a base model: chat and text, streamed and not, equal to lora-core greedy', async () => {
    const chatRef = await reference(encodeChatPrompt(MESSAGES, tokenizer), null);
    const chat = await client.chat.completions.create({
      model: BASE,
      messages: MESSAGES,
      max_tokens: MAX_TOKENS,
      temperature: 0,
    });
    expect(chat).toMatchObject({
      object: 'chat.completion',
      model: BASE,
      choices: [
        {
          index: 0,
          message: { role: 'assistant', content: chatRef.text },
          finish_reason: chatRef.finishReason,
        },
      ],
      usage: {
        prompt_tokens: encodeChatPrompt(MESSAGES, tokenizer).length,
        completion_tokens: chatRef.completionTokens,
      },
    });
    expect(chat.id).toMatch(/^chatcmpl-/);

    const stream = await client.chat.completions.create({
      model: BASE,
      messages: MESSAGES,
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let streamed = '';
    const finishes: (string | null)[] = [];
    let usage: OpenAI.CompletionUsage | null | undefined;
    let chunks = 0;
    for await (const chunk of stream) {
      chunks += 1;
      expect(chunk.object).toBe('chat.completion.chunk');
      for (const choice of chunk.choices) {
        streamed += choice.delta.content ?? '';
        finishes.push(choice.finish_reason);
      }
      if (chunk.usage) usage = chunk.usage;
    }
    expect(streamed).toBe(chatRef.text);
    expect(finishes.filter((f) => f !== null)).toEqual([chatRef.finishReason]);
    expect(usage).toEqual(chat.usage);
    expect(chunks).toBeGreaterThan(2); // token by token, not one blob

    const prompt = 'The numbers are';
    const textRef = await reference(encodeTextPrompt(prompt, tokenizer), null, 8);
    const text = await client.completions.create({
      model: BASE,
      prompt,
      max_tokens: 8,
      temperature: 0,
    });
    expect(text).toMatchObject({
      object: 'text_completion',
      choices: [{ index: 0, text: textRef.text, finish_reason: textRef.finishReason }],
      usage: { completion_tokens: textRef.completionTokens },
    });
    let textStreamed = '';
    for await (const chunk of await client.completions.create({
      model: BASE,
      prompt,
      max_tokens: 8,
      temperature: 0,
      stream: true,
    })) {
      textStreamed += chunk.choices[0]?.text ?? '';
      expect(chunk.usage ?? null).toBeNull(); // no include_usage: no usage chunk
    }
    expect(textStreamed).toBe(textRef.text);

    // Seeded sampling is reproducible across requests.
    const sampled = () =>
      client.completions.create({ model: BASE, prompt, max_tokens: 8, temperature: 1, seed: 7 });
    expect((await sampled()).choices[0].text).toBe((await sampled()).choices[0].text);
  });

  /** The built `lorafleet` CLI against the fleet's API. */
  function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(
        process.execPath,
        [path.join(REPO_ROOT, 'apps/cli/bin/lorafleet.js'), ...args],
        {
          env: {
            ...process.env,
            LORAFLEET_API_URL: fleet.baseUrl,
            LORAFLEET_API_KEY: fleet.apiKey,
          },
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }

  it('lorafleet chat streams an answer, and reports a bad model with the API message', async () => {
    const ref = await reference(encodeChatPrompt([MESSAGES[1]], tokenizer), null, 8);
    const chat = await cli([
      'chat',
      '--model',
      BASE,
      MESSAGES[1].content,
      '--temperature',
      '0',
      '--max-tokens',
      '8',
    ]);
    expect(chat).toMatchObject({ code: 0, stdout: `${ref.text}\n` });
    expect(chat.stderr).toMatch(
      new RegExp(
        `^\\[${ref.completionTokens} tokens in [\\d.]+ s, [\\d.]+ tokens/s, first token \\d+ ms, finish: ${ref.finishReason}\\]`,
      ),
    );
    const missing = await cli(['chat', '--model', 'ft:nope', 'hi']);
    expect(missing.code).toBe(1);
    expect(missing.stderr).toMatch(
      /The model "ft:nope" does not exist \(param: model\) \[HTTP 404 model_not_found\]/,
    );
  });

  it('serves an ft: model trained in this test, token for token as lora-core with its adapter', async () => {
    const fileId = await fleet.uploadLines(
      Array.from({ length: 4 }, (_, i) => ({
        messages: [
          { role: 'user', content: `Say something about numbers.` },
          { role: 'assistant', content: `Number ${i} is seven.` },
        ],
      })),
    );
    const job = await fleet.createJob(fileId, 4, {
      model: BASE,
      suffix: 'served',
      hyperparameters: { n_epochs: 4, batch_size: 1, learning_rate_multiplier: 50 },
      lora: { r: 4, alpha: 8 },
      training: { max_seq_length: 64, max_steps: 4 },
    });
    const done = await fleet.waitForTerminal(job.id);
    expect(done.status).toBe('succeeded');
    const { body } = await fleet.request('GET', `/v1/fine_tuning/jobs/${job.id}`);
    fineTuned = body.fine_tuned_model as string;

    // /v1/models lists it with its parent (item 4).
    const listed = [];
    for await (const m of client.models.list()) listed.push(m);
    expect(listed.find((m) => m.id === fineTuned)).toMatchObject({ parent: BASE });
    expect(listed.find((m) => m.id === BASE)).not.toHaveProperty('parent');

    // The reference: the stored adapter imported into this process's copy of the base.
    const config = await (
      await fetch(`${fleet.baseUrl}/v1/adapters/${done.adapter_id}/files/adapter_config.json`, {
        headers: { authorization: `Bearer ${fleet.apiKey}` },
      })
    ).json();
    const weights = new Uint8Array(
      await (
        await fetch(
          `${fleet.baseUrl}/v1/adapters/${done.adapter_id}/files/adapter_model.safetensors`,
          {
            headers: { authorization: `Bearer ${fleet.apiKey}` },
          },
        )
      ).arrayBuffer(),
    );
    importPeftAdapter(model, 'served', config, weights);
    const ref = await reference(encodeChatPrompt([MESSAGES[1]], tokenizer), 'served');
    const base = await reference(encodeChatPrompt([MESSAGES[1]], tokenizer), null);
    expect(ref.text).not.toBe(base.text); // the adapter changed the answer: a real check

    const chat = await client.chat.completions.create({
      model: fineTuned,
      messages: [MESSAGES[1]],
      max_tokens: MAX_TOKENS,
      temperature: 0,
    });
    expect(chat.model).toBe(fineTuned);
    expect(chat.choices[0].message.content).toBe(ref.text);
    expect(chat.usage?.completion_tokens).toBe(ref.completionTokens);
    let streamed = '';
    for await (const chunk of await client.chat.completions.create({
      model: fineTuned,
      messages: [MESSAGES[1]],
      max_tokens: MAX_TOKENS,
      temperature: 0,
      stream: true,
    })) {
      streamed += chunk.choices[0]?.delta.content ?? '';
    }
    expect(streamed).toBe(ref.text);
  });

  it("answers another tenant's ft: model and unknown models with OpenAI 404s", async () => {
    expect(fineTuned).not.toBe('');
    for (const [who, name] of [
      [stranger, fineTuned],
      [client, `${fineTuned}x`],
      [client, 'no-such-model'],
    ] as const) {
      const error = await who.chat.completions
        .create({ model: name, messages: MESSAGES })
        .catch((e: unknown) => e);
      expect(error).toBeInstanceOf(OpenAI.NotFoundError);
      expect(error).toMatchObject({ code: 'model_not_found', param: 'model' });
    }
    const text = await stranger.completions
      .create({ model: fineTuned, prompt: 'x' })
      .catch((e: unknown) => e);
    expect(text).toBeInstanceOf(OpenAI.NotFoundError);
  });

  it.each([
    ['n = 2', { n: 2 }, 'n'],
    ['temperature 3', { temperature: 3 }, 'temperature'],
    ['five stop strings', { stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
    ['no messages', { messages: [] }, 'messages'],
    ['a tool role', { messages: [{ role: 'tool', content: 'x', tool_call_id: 't' }] }, 'messages'],
    ['max_tokens past the context', { max_tokens: 100_000 }, 'max_tokens'],
    [
      'a prompt longer than the context',
      { messages: [{ role: 'user', content: 'number '.repeat(600) }] },
      'messages',
    ],
  ])('refuses %s with an OpenAI 400 naming the parameter', async (_, patch, param) => {
    const error = await client.chat.completions
      .create({
        model: BASE,
        messages: MESSAGES,
        ...patch,
      } as OpenAI.ChatCompletionCreateParamsNonStreaming)
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(OpenAI.BadRequestError);
    expect(error).toMatchObject({ type: 'invalid_request_error' });
    expect((error as { param: string }).param).toMatch(new RegExp(`^${param}`));
  });

  it('cancels the request on the worker when its client goes away', async () => {
    const redis = new Redis(fleet.redisUrl);
    try {
      const abort = new AbortController();
      const stream = await client.completions.create(
        { model: BASE, prompt: 'Count:', max_tokens: 400, temperature: 0, stream: true },
        { signal: abort.signal },
      );
      let requestId = '';
      await (async () => {
        for await (const chunk of stream) {
          requestId = chunk.id.replace(/^cmpl-/, '');
          abort.abort(); // after the first text: the request is running on the worker
        }
      })().catch((error: unknown) => {
        if (!(error instanceof OpenAI.APIUserAbortError)) throw error;
      });
      expect(requestId).not.toBe('');
      // The worker ends it at its next decode round: nothing left pending (its entry was
      // acknowledged at its first reply), and its last reply, once one ends it, is the
      // cancellation, not a finished answer.
      const replies = `${fleet.queuePrefix}:serve:tok:${requestId}`;
      const last = await waitFor(
        'the cancelled request to end on the worker',
        async () => {
          const pending = (await redis.xpending(
            `${fleet.queuePrefix}:serve:req:${BASE}`,
            'serving-workers',
          )) as [number, ...unknown[]];
          const [entry] = (await redis.xrevrange(replies, '+', '-', 'COUNT', 1)) as [
            string,
            string[],
          ][];
          const reply = entry ? (JSON.parse(entry[1][1]) as { kind: string }) : undefined;
          return pending[0] === 0 && reply && reply.kind !== 'delta' ? reply : undefined;
        },
        10_000,
        50,
      );
      expect(last).toMatchObject({
        kind: 'error',
        message: expect.stringMatching(/was cancelled/),
      });
    } finally {
      redis.disconnect();
    }
  });

  it('hands a request whose worker died before its first token to another worker, which answers it', async () => {
    const stream = `${fleet.queuePrefix}:serve:req:${BASE}`;
    const redis = new Redis(fleet.redisUrl);
    /** [id, consumer, idle ms, deliveries] of each request read and not yet answered. */
    const pending = () =>
      redis.xpending(stream, 'serving-workers', '-', '+', 10) as Promise<
        [string, string, number, number][]
      >;
    const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
    const startedAt = Date.now();
    try {
      const prompt = 'Count:';
      // serve-1 has the base loaded (a no-op after the earlier tests), so the time from the
      // holder's death to the answer is the takeover's, not a lazy load's.
      await client.completions.create({ model: BASE, prompt, max_tokens: 1, temperature: 0 });
      const warmMs = Date.now() - startedAt;
      // serve-1 is frozen while the holder reads the request;
      // a frozen reader's block times out within a second, after which it reads nothing.
      server.signal('SIGSTOP');
      await pause(1500);
      // The holder takes the request and never hands it to a serving child (as if its base
      // load never ended), so the request stays read and unanswered until the holder dies.
      const holder = fleet.startWorker('serve-holder', {
        LORAFLEET_WORKER_ROLES: 'serve',
        LORAFLEET_SERVE_CLAIM_IDLE_MS: String(CLAIM_IDLE_MS),
        LORAFLEET_TEST_SERVE_HOLD_MS: '600000',
      });
      const answer = client.completions.create({
        model: BASE,
        prompt,
        max_tokens: 6,
        temperature: 0,
      });
      let held: string;
      try {
        [[held]] = await waitFor(
          'the holder to read the request',
          async () => {
            const entries = await pending();
            return entries.length === 1 && entries[0][1] === 'serve-holder' ? entries : undefined;
          },
          60_000,
          50,
        );
      } finally {
        server.signal('SIGCONT');
      }
      const heldSince = Date.now();
      const holderReadMs = heldSince - startedAt - warmMs;
      // While the holder lives, its heartbeat keeps the request its own however long it holds
      // it, though serve-1 scans for idle requests every half second.
      await pause(2 * CLAIM_IDLE_MS);
      const [stillHeld] = await pending();
      expect(stillHeld).toEqual([held, 'serve-holder', expect.any(Number), 1]);
      expect(stillHeld[2]).toBeLessThan(CLAIM_IDLE_MS);
      expect(Date.now() - heldSince).toBeGreaterThanOrEqual(2 * CLAIM_IDLE_MS);

      holder.signal('SIGKILL');
      const diedAt = Date.now();
      const completion = await answer;
      const deathToAnswerMs = Date.now() - diedAt;
      const expected = await reference(encodeTextPrompt(prompt, tokenizer), null, 6);
      expect(completion.choices[0].text).toBe(expected.text);
      expect(completion.usage?.completion_tokens).toBe(expected.completionTokens);
      expect(await pending()).toEqual([]);
      expect(server.text).toMatch(new RegExp(`taking over serving request ${held}`));
      // The claim waits out the idle time; a claim scan runs every quarter of it.
      expect(deathToAnswerMs).toBeLessThan(CLAIM_IDLE_MS * 1.25 + 20_000);
      console.info(
        `serving takeover: worker SIGKILLed → answer in ${deathToAnswerMs} ms ` +
          `(serve-1 warm-up ${warmMs} ms, holder start → read ${holderReadMs} ms)`,
      );
    } finally {
      server.signal('SIGCONT');
      redis.disconnect();
    }
  });

  it('ends a stream whose worker died with an error event; a retry is served by another worker', async () => {
    await fleet.stopWorkers();
    const doomed = fleet.startWorker('serve-doomed');
    const stream = await client.completions.create({
      model: BASE,
      prompt: 'Count:',
      max_tokens: 400,
      temperature: 0,
      stream: true,
    });
    let received = 0;
    const outcome = await (async () => {
      for await (const chunk of stream) {
        received += chunk.choices[0]?.text.length ?? 0;
        if (received > 0 && !doomed.hasExited) doomed.signal('SIGKILL');
      }
      return 'ended normally';
    })().catch((error: unknown) => error);
    expect(received).toBeGreaterThan(0);
    expect(outcome).toBeInstanceOf(OpenAI.APIError);
    expect(String((outcome as Error).message)).toMatch(/No serving worker answered within 3000 ms/);

    fleet.startWorker('serve-2');
    const retry = await client.completions.create({
      model: BASE,
      prompt: 'Count:',
      max_tokens: 4,
      temperature: 0,
    });
    expect(retry.choices[0].text).toBe(
      (await reference(encodeTextPrompt('Count:', tokenizer), null, 4)).text,
    );
  });
});
