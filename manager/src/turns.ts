/**
 * The event loop's time, shared by the work that arrives in bulk: agents'
 * messages and reconciles. Each piece is cheap (a few milliseconds), but a
 * connect storm delivers hundreds of them in one turn (every agent stream
 * had a message ready in the same poll), and a turn that handled them all
 * held the loop for over a second: keepalives, API calls and timers waited
 * (docs/benchmarks.md, issue 17). Work that asks `fits()` or `slot()` before
 * each piece gets TURN_BUDGET_MS of each turn; the rest goes on in later
 * turns, with I/O served in between.
 *
 * Every piece waits for the check phase (setImmediate) and is let in by a
 * callback of its own: Node runs the microtasks queued by each such callback
 * before the next one, so the piece's synchronous work (including what it
 * awaits on promises that are already settled, as SQLite's are) is done, and
 * on the clock, before the next piece asks. A piece granted in the same
 * microtask run as another would start before that one's work showed. The
 * clock starts with the first piece of a check phase; pieces that do not fit
 * wait for the next one.
 */
import { performance } from "node:perf_hooks";

/** Milliseconds of bulk work per turn: well under the 20 ms p99 the manager's event-loop delay aims at. */
export const TURN_BUDGET_MS = 10;

export class TurnBudget {
  #start: number | undefined;
  /** Callers of slot() not let in yet, longest waiting first. */
  readonly #waiting: (() => void)[] = [];

  constructor(
    readonly budgetMs: number,
    private readonly clock: () => number = () => performance.now(),
  ) {}

  /**
   * True while this turn has spent less than the budget; the first caller of a
   * turn starts its clock. Sees only work that ran before the call: work
   * started but still waiting in microtasks is not on the clock yet (slot()).
   */
  fits(): boolean {
    const now = this.clock();
    if (this.#start === undefined) {
      this.#start = now;
      setImmediate(() => (this.#start = undefined));
      return true;
    }
    return now - this.#start < this.budgetMs;
  }

  /**
   * Resolves in this loop iteration's check phase if the budget has room by
   * then, else in the first later one that has: in the order asked, each
   * after the work of those let in before it. Call it right before the work
   * it guards.
   */
  slot(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.#waiting.push(resolve);
      setImmediate(this.#grant);
    });
  }

  /** One callback per waiter: lets the longest waiting one in if the budget has room, else comes back next turn. */
  #grant = (): void => {
    if (this.#waiting.length === 0) return;
    if (this.fits()) this.#waiting.shift()!();
    else setImmediate(this.#grant);
  };
}

/** The process's one event loop, shared by every kind of bulk work. */
export const turns = new TurnBudget(TURN_BUDGET_MS);
