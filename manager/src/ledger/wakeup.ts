import { Code, ConnectError } from "@connectrpc/connect";

/**
 * A sticky wake-up signal between a notifier and one waiting loop: a `ring()`
 * while nobody waits is remembered, so the next `wait()` returns at once. The
 * watch loops use it to hear "something new may be in the store" without
 * ever missing a notification that arrives while they are busy.
 */
export class Wakeup {
  private rung = false;
  private waiter: (() => void) | undefined;

  ring(): void {
    this.rung = true;
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  /** Resolves true after a ring (possibly an earlier one), false when `signal` aborts. */
  async wait(signal: AbortSignal): Promise<boolean> {
    if (signal.aborted) return false;
    if (!this.rung) {
      await new Promise<void>((resolve) => {
        const onAbort = () => {
          this.waiter = undefined;
          resolve();
        };
        signal.addEventListener("abort", onAbort, { once: true });
        this.waiter = () => {
          signal.removeEventListener("abort", onAbort);
          resolve();
        };
      });
    }
    if (signal.aborted) return false;
    this.rung = false;
    return true;
  }
}

/**
 * How a watch ends when its signal aborts: with the reason's status when it is
 * one (DeadlineExceeded for the caller's deadline, or what the server ended it
 * with), Canceled otherwise (the caller went away). Returning normally would
 * end it with OK, and a script could not tell its own timeout from the
 * server ending the watch.
 */
export function watchEnded(signal: AbortSignal): ConnectError {
  const reason: unknown = signal.reason;
  if (reason instanceof ConnectError) return reason;
  return new ConnectError("the watch was cancelled by the caller", Code.Canceled);
}
