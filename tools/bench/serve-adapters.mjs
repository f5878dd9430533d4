// Adapters for the heterogeneous-batching section of `bench:serve` (issue 19): random LoRA
// adapters of one base, serialised in PEFT's format exactly as a trained one is, and stored as
// `adapters` rows of succeeded jobs, so the API resolves their `ft:` names and the serving
// worker fetches, hash-checks and decodes them as it would a trained adapter.

/** r = 8 on every linear layer of the decoder (PEFT's `all-linear`): the costliest branch. */
export const BENCH_LORA = {
  r: 8,
  alpha: 16,
  dropout: 0,
  targetModules: 'all-linear',
  useRslora: false,
  fanInFanOut: false,
};

/** mulberry32: a tiny seeded generator, so every run benchmarks the same adapters. */
function seededUniform(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * `count` PEFT adapters of `baseName`, made on `model` (a loaded `CausalLM`, left as it was):
 * A keeps LoRA's kaiming-uniform start, B is uniform in ±`bScale` instead of zero, so every
 * adapter changes the base's output as a trained one would.
 */
export function makeBenchAdapters(core, tf, model, baseName, count, bScale = 0.05) {
  const adapters = [];
  for (let i = 0; i < count; i++) {
    const name = `bench-${i}`;
    core.addLoraAdapter(model, name, BENCH_LORA, 1000 + i);
    core.setActiveAdapter(model, name);
    const uniform = seededUniform(2000 + i);
    for (const [variableName, variable] of model.namedTrainableVariables()) {
      if (!variableName.endsWith('.lora_B')) continue;
      const values = Float32Array.from(
        { length: variable.size },
        () => (uniform() * 2 - 1) * bScale,
      );
      tf.tidy(() => variable.assign(tf.tensor(values, variable.shape)));
    }
    const peft = core.exportPeftAdapter(model, name, baseName);
    adapters.push({
      name,
      adapterConfig: peft.adapterConfig,
      safetensors: peft.adapterSafetensors,
    });
    core.deleteAdapter(model, name);
  }
  return adapters;
}

/**
 * Stores each adapter as the worker stores a trained one: a job created through the
 * repositories (with its outbox entry), claimed, and completed with the adapter in one fenced
 * transaction. The lineage carries the base's weights hash, which the serving worker checks.
 * Returns the `ft:` model names, in `adapters` order.
 */
export async function storeBenchAdapters({
  db,
  data,
  contracts,
  ds,
  tenantId,
  baseName,
  baseSha256,
  adapters,
}) {
  const jobs = new db.JobsRepository(ds);
  const attempts = new db.AttemptsRepository(ds);
  const stored = new db.AdaptersRepository(ds);
  const spec = data.resolveFineTuneSpec(
    {
      seed: 1,
      lora: { r: BENCH_LORA.r, alpha: BENCH_LORA.alpha, target_modules: 'all-linear' },
    },
    { model: baseName, contextLength: 512, trainingExamples: 1 },
  );
  const names = [];
  for (const adapter of adapters) {
    const job = await jobs.createWithOutbox(
      {
        tenantId,
        model: baseName,
        baseModelHash: null,
        trainingFileId: 'file-bench',
        validationFileId: null,
        suffix: adapter.name,
        metadata: null,
        spec,
        idempotencyKey: null,
        requestHash: null,
      },
      (id) => contracts.fineTuneDelivery({ id, tenantId }),
    );
    const claim = await attempts.claimAttempt(job.id, 'bench', 'cpu');
    const fineTunedModel = `ft:${baseName}:bench:${adapter.name}:${job.id}`;
    const zeros = '0'.repeat(64);
    const row = await stored.completeWithAdapter(job.id, claim.leaseToken, {
      adapterConfig: adapter.adapterConfig,
      weights: Buffer.from(adapter.safetensors),
      lineage: {
        lorafleet_version: 'bench',
        base_model: baseName,
        base_model_hash: null,
        base_model_sha256: baseSha256,
        training_file_sha256: zeros,
        validation_file_sha256: null,
        config_sha256: zeros,
        spec,
        backend: 'cpu',
        tfjs_version: 'bench',
        resumed_from_step: null,
        fine_tuning_job_id: job.id,
        worker: 'bench',
      },
      fineTunedModel,
      trainedTokens: 0,
    });
    if (row === null) throw new Error(`could not store bench adapter ${adapter.name}`);
    names.push(fineTunedModel);
  }
  return names;
}
