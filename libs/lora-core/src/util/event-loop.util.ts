/** Lets timers, IPC and abort handlers run between long stretches of tensor work. */
export const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve));
