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
