/**
 * The adapters a serving worker holds next to its one loaded base model (issue 19: many
 * adapters on one frozen base). Each adapter is kept outside the model, as plain tensors per
 * targeted module (A [in, r], B [r, out], tfjs layout), so any number of them can be decoded
 * together by `RowAdapterBatch` without `setActiveAdapter` or a merge touching the base.
 *
 * The cache is an LRU bounded in bytes, as LoRAX and S-LoRA page adapters in and out of
 * device memory: registering past the budget evicts the least recently used adapters that no
 * running request holds (`acquire` pins, `release` unpins). Before anything is decoded, the
 * adapter's lineage (`base_model_sha256`) is checked against the loaded base (DESIGN §6: an
 * adapter applies only to the weights it was trained on).
 */
import * as tf from '@tensorflow/tfjs';

import { decodePeftAdapter } from '../lora/peft-adapter.io';
import { loraScaling, type LoraConfig } from '../lora/lora.config';
import type { CausalLM } from '../models/causal-lm.model';

/** One targeted module of a serving adapter, tfjs layout. */
export interface ServingAdapterModule {
  /** [in, r]; PEFT `lora_A.weight` is its transpose. */
  readonly a: tf.Tensor2D;
  /** [r, out]; PEFT `lora_B.weight` is its transpose. */
  readonly b: tf.Tensor2D;
}

/** An adapter ready to decode, as `RowAdapterBatch` reads it. */
export interface ServingAdapter {
  readonly id: string;
  readonly config: LoraConfig;
  /** α/r, or α/√r with rsLoRA. */
  readonly scaling: number;
  /** Module path (`model.layers.0.self_attn.q_proj`) → its A and B. */
  readonly modules: ReadonlyMap<string, ServingAdapterModule>;
  /** Bytes of its float32 tensors, what the registry's budget counts. */
  readonly bytes: number;
}

/** A PEFT adapter as stored (e.g. in Postgres), with its lineage. */
export interface AdapterSource {
  /** `adapter_config.json`, as a JSON string or parsed object. */
  adapterConfig: unknown;
  /** `adapter_model.safetensors` bytes. */
  safetensors: Uint8Array;
  /**
   * sha256 of the base weights it was trained on (lorafleet's lineage), or null for a PEFT
   * adapter from elsewhere, which carries none and is accepted as the CLI accepts it.
   */
  baseModelSha256: string | null;
}

export type AdapterRegistryErrorCode =
  'base_mismatch' | 'too_large' | 'capacity' | 'unknown_adapter' | 'duplicate_adapter';

export class AdapterRegistryError extends Error {
  override readonly name = 'AdapterRegistryError';

  constructor(
    message: string,
    readonly code: AdapterRegistryErrorCode,
  ) {
    super(message);
  }
}

export interface AdapterRegistryOptions {
  /** Budget for all held adapters' tensors, in bytes. */
  maxBytes: number;
  /**
   * Identity of the loaded base: the sha256 of its weight files. Defaults to the model's
   * `baseModelSha256` (set by `loadCausalLM`).
   */
  baseModelSha256?: string;
}

interface Entry {
  adapter: ServingAdapter;
  /** Running requests holding it: pinned entries are never evicted. */
  pins: number;
}

export class AdapterRegistry {
  /** Insertion order is recency: first = least recently used. */
  private readonly entries = new Map<string, Entry>();
  /** Loads in flight, so concurrent first uses of one adapter fetch it once. */
  private readonly loading = new Map<string, Promise<ServingAdapter>>();
  private usedBytes = 0;
  private readonly maxBytes: number;
  private readonly baseSha256: string | undefined;

  constructor(
    private readonly model: CausalLM,
    options: AdapterRegistryOptions,
  ) {
    if (!(options.maxBytes > 0)) {
      throw new RangeError(`maxBytes must be positive (got ${options.maxBytes})`);
    }
    this.maxBytes = options.maxBytes;
    this.baseSha256 = options.baseModelSha256 ?? model.baseModelSha256;
  }

  /** Bytes held now. */
  get bytesUsed(): number {
    return this.usedBytes;
  }

  /** Held adapter ids, least recently used first. */
  ids(): string[] {
    return [...this.entries.keys()];
  }

  has(id: string): boolean {
    return this.entries.has(id);
  }

  /**
   * Validates and decodes `source` (every check of `importPeftAdapter`, against the loaded
   * base's shapes) and holds it under `id`, evicting unpinned adapters, least recently used
   * first, until it fits.
   */
  register(id: string, source: AdapterSource): ServingAdapter {
    if (this.entries.has(id)) {
      throw new AdapterRegistryError(`adapter "${id}" is already registered`, 'duplicate_adapter');
    }
    this.checkLineage(id, source.baseModelSha256);
    const { config, weights } = decodePeftAdapter(
      this.model,
      source.adapterConfig,
      source.safetensors,
    );
    let bytes = 0;
    for (const { a, b } of weights.values()) bytes += (a.length + b.length) * 4;
    if (bytes > this.maxBytes) {
      throw new AdapterRegistryError(
        `adapter "${id}" needs ${bytes} bytes, more than the registry's whole budget of ${this.maxBytes}`,
        'too_large',
      );
    }
    this.makeRoom(id, bytes);
    const modules = new Map<string, ServingAdapterModule>();
    for (const [path, { a, b }] of weights) {
      const layer = this.model.linearLayers().find((l) => l.path === path)!;
      modules.set(path, {
        a: tf.tensor2d(a, [layer.inFeatures, config.r]), // [in, r]
        b: tf.tensor2d(b, [config.r, layer.outFeatures]), // [r, out]
      });
    }
    const adapter: ServingAdapter = { id, config, scaling: loraScaling(config), modules, bytes };
    this.entries.set(id, { adapter, pins: 0 });
    this.usedBytes += bytes;
    return adapter;
  }

  /**
   * The adapter `id`, fetched with `fetch` and registered on first use. Concurrent calls
   * for one id share a single fetch.
   */
  async load(id: string, fetch: () => Promise<AdapterSource>): Promise<ServingAdapter> {
    const held = this.entries.get(id);
    if (held) return held.adapter;
    let pending = this.loading.get(id);
    if (!pending) {
      pending = fetch()
        .then((source) => this.entries.get(id)?.adapter ?? this.register(id, source))
        .finally(() => this.loading.delete(id));
      this.loading.set(id, pending);
    }
    return pending;
  }

  /** Marks `id` most recently used and pins it until `release(id)`: a request decodes with it. */
  acquire(id: string): ServingAdapter {
    const entry = this.entries.get(id);
    if (!entry) {
      throw new AdapterRegistryError(
        `adapter "${id}" is not loaded (held: ${this.ids().join(', ') || 'none'})`,
        'unknown_adapter',
      );
    }
    this.entries.delete(id);
    this.entries.set(id, entry);
    entry.pins += 1;
    return entry.adapter;
  }

  /** Undoes one `acquire`. */
  release(id: string): void {
    const entry = this.entries.get(id);
    if (!entry || entry.pins === 0) {
      throw new AdapterRegistryError(`adapter "${id}" is not acquired`, 'unknown_adapter');
    }
    entry.pins -= 1;
  }

  /** Drops `id` now (e.g. its fine-tune was deleted); refused while a request holds it. */
  delete(id: string): void {
    const entry = this.entries.get(id);
    if (!entry) return;
    if (entry.pins > 0) {
      throw new AdapterRegistryError(
        `adapter "${id}" is in use by ${entry.pins} request(s)`,
        'capacity',
      );
    }
    this.drop(id, entry);
  }

  dispose(): void {
    for (const [id, entry] of [...this.entries]) this.drop(id, entry);
  }

  private checkLineage(id: string, adapterBase: string | null): void {
    if (adapterBase === null) return;
    if (this.baseSha256 === undefined) {
      throw new AdapterRegistryError(
        `adapter "${id}" was trained on base weights sha256 ${adapterBase}, but the loaded base has no weights hash to check it against`,
        'base_mismatch',
      );
    }
    if (adapterBase !== this.baseSha256) {
      throw new AdapterRegistryError(
        `adapter "${id}" was trained on base weights sha256 ${adapterBase}, but the loaded base's weights hash to ${this.baseSha256}`,
        'base_mismatch',
      );
    }
  }

  /** Evicts unpinned entries, least recently used first, until `bytes` more fit. */
  private makeRoom(id: string, bytes: number): void {
    const victims: string[] = [];
    let freed = 0;
    for (const [heldId, entry] of this.entries) {
      if (this.usedBytes - freed + bytes <= this.maxBytes) break;
      if (entry.pins > 0) continue;
      victims.push(heldId);
      freed += entry.adapter.bytes;
    }
    if (this.usedBytes - freed + bytes > this.maxBytes) {
      // Nothing is evicted when the adapter cannot fit anyway: the held ones stay useful.
      throw new AdapterRegistryError(
        `adapter "${id}" needs ${bytes} bytes; ${this.maxBytes - this.usedBytes + freed} of the budget of ${this.maxBytes} can be freed, the rest is held by running requests`,
        'capacity',
      );
    }
    for (const victim of victims) this.drop(victim, this.entries.get(victim)!);
  }

  private drop(id: string, entry: Entry): void {
    for (const { a, b } of entry.adapter.modules.values()) {
      a.dispose();
      b.dispose();
    }
    this.usedBytes -= entry.adapter.bytes;
    this.entries.delete(id);
  }
}
