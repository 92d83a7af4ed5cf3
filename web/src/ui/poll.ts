/**
 * Data the manager has no watch for (hosts, alerts, orphans), refreshed on an
 * interval while someone looks at it, and at once after an action. Old data
 * stays on screen while a refresh runs or fails.
 */
import { useSyncExternalStore } from "react";

export interface PollState<T> {
  readonly data: T | undefined;
  readonly error: unknown;
  readonly loading: boolean;
}

export class Poll<T> {
  private state: PollState<T> = { data: undefined, error: undefined, loading: true };
  private readonly listeners = new Set<() => void>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private inflight: Promise<void> | undefined;

  constructor(
    private readonly fetch: () => Promise<T>,
    private readonly intervalMs: number,
  ) {}

  readonly subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    if (this.listeners.size === 1) {
      void this.refresh();
      this.timer = setInterval(() => void this.refresh(), this.intervalMs);
    }
    return () => {
      this.listeners.delete(fn);
      if (this.listeners.size === 0 && this.timer) {
        clearInterval(this.timer);
        this.timer = undefined;
      }
    };
  };

  readonly getSnapshot = (): PollState<T> => this.state;

  refresh(): Promise<void> {
    this.inflight ??= this.fetch()
      .then(
        (data) => this.set({ data, error: undefined, loading: false }),
        (error: unknown) => this.set({ data: this.state.data, error, loading: false }),
      )
      .finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  private set(s: PollState<T>): void {
    this.state = s;
    for (const l of this.listeners) l();
  }
}

export function usePoll<T>(poll: Poll<T>): PollState<T> {
  return useSyncExternalStore(poll.subscribe, poll.getSnapshot);
}
