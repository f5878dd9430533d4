/** A backend that was asked for and cannot run here; the message names what is missing. */
export class BackendError extends Error {
  override readonly name = 'BackendError';
}
