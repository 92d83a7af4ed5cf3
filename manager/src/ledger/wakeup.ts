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
    return (await this.waitUpTo(signal, 0)) === "rung";
  }

  /**
   * Like wait(), but gives up after `ms` (0: never): "rung" after a ring
   * (possibly an earlier one), "timeout" when `ms` passed first, "aborted"
   * when `signal` aborts. The watches use it to send heartbeats.
   */
  async waitUpTo(signal: AbortSignal, ms: number): Promise<"rung" | "timeout" | "aborted"> {
    if (signal.aborted) return "aborted";
    if (!this.rung) {
      const timedOut = await new Promise<boolean>((resolve) => {
        let timer: ReturnType<typeof setTimeout> | undefined;
        const onAbort = () => {
          this.waiter = undefined;
          clearTimeout(timer);
          resolve(false);
        };
        signal.addEventListener("abort", onAbort, { once: true });
        this.waiter = () => {
          signal.removeEventListener("abort", onAbort);
          clearTimeout(timer);
          resolve(false);
        };
        if (ms > 0) {
          timer = setTimeout(() => {
            this.waiter = undefined;
            signal.removeEventListener("abort", onAbort);
            resolve(true);
          }, ms);
        }
      });
      if (signal.aborted) return "aborted";
      if (timedOut) return "timeout";
    }
    if (signal.aborted) return "aborted";
    this.rung = false;
    return "rung";
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

/**
 * A watch request's `heartbeat_seconds` as milliseconds (0: no heartbeats),
 * or InvalidArgument beyond 300 s. Checked in the handler: the rule in the
 * contract is not run for streaming requests (validateRequests).
 */
export function heartbeatInterval(seconds: number): number {
  if (seconds > MAX_HEARTBEAT_SECONDS) {
    throw new ConnectError(`heartbeat_seconds: at most ${MAX_HEARTBEAT_SECONDS}; 0 sends no heartbeats`, Code.InvalidArgument);
  }
  return seconds * 1000;
}

const MAX_HEARTBEAT_SECONDS = 300;

/**
 * When a watch owes its client a heartbeat: `heartbeat_seconds` after the
 * last message it sent, whatever woke it meanwhile (a watch with a filter
 * may wake for many changes and send none of them).
 */
export class HeartbeatClock {
  private last = performance.now();

  constructor(private readonly intervalMs: number) {}

  /** A message went out. */
  sent(): void {
    this.last = performance.now();
  }

  /** A heartbeat is due now (and is counted as sent). */
  due(): boolean {
    if (this.intervalMs <= 0 || performance.now() - this.last < this.intervalMs) return false;
    this.sent();
    return true;
  }

  /** How long to wait for a change before the next heartbeat is due, for Wakeup.waitUpTo (0: no heartbeats, wait for ever). */
  waitMs(): number {
    if (this.intervalMs <= 0) return 0;
    return Math.max(1, this.intervalMs - (performance.now() - this.last));
  }
}
