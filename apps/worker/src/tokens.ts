export const WORKER_ENV = Symbol('WORKER_ENV');
export const DATA_SOURCE = Symbol('DATA_SOURCE');
export const WORKER_IDENTITY = Symbol('WORKER_IDENTITY');

export interface WorkerIdentity {
  id: string;
  host: string;
  pid: number;
}
