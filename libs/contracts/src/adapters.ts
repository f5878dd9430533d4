/** The adapter object of `GET /v1/adapters/{id}`: a PEFT adapter the API serves (DESIGN §4). */
export interface AdapterObject {
  id: string;
  object: 'adapter';
  created_at: number;
  fine_tuned_model: string;
  base_model: string;
  fine_tuning_job_id: string;
  adapter_config: Record<string, unknown>;
  weights_sha256: string;
  files: string[];
}
