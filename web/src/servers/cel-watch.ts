/**
 * The Servers page's advanced (CEL) mode: a second WatchServers carrying the
 * filter (docs/explore.md), beside the app's unfiltered watch. A new filter
 * opens a new watch and is switched to only once its snapshot is complete; a
 * filter the manager refuses (InvalidArgument, ResourceExhausted) is reported
 * and the watch on the previous, valid filter kept (the table keeps its rows).
 */
import type { Code } from "@connectrpc/connect";
import type { ServerWatch } from "./server-watch.js";

export interface FilterError {
  code: Code;
  message: string;
  /** The filter it is about. */
  filter: string;
}

export interface CelWatchState {
  /** The filter the rows are for ("" = none: the app's own watch). */
  readonly applied: string;
  /** The watch of the applied filter (undefined with none). */
  readonly watch: ServerWatch | undefined;
  /** A filter asked for whose watch has not delivered its snapshot yet. */
  readonly pending: string | undefined;
  readonly error: FilterError | undefined;
}

/** Makes (does not start) a watch for `filter`, calling `onFilterError` when the manager refuses it. */
export type MakeWatch = (filter: string, onFilterError: (code: Code, message: string) => void) => ServerWatch;

export class CelWatch {
  private state: CelWatchState = { applied: "", watch: undefined, pending: undefined, error: undefined };
  private readonly listeners = new Set<() => void>();
  private candidate: { filter: string; watch: ServerWatch; unsubscribe: () => void } | undefined;

  constructor(private readonly make: MakeWatch) {}

  readonly subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  readonly getSnapshot = (): CelWatchState => this.state;

  /** Asks for `filter` ("" = back to no filter). */
  set(filter: string): void {
    filter = filter.trim();
    if (this.candidate?.filter === filter) return;
    this.dropCandidate();
    if (filter === this.state.applied) {
      if (this.state.pending !== undefined || this.state.error) this.update({ pending: undefined, error: undefined });
      return;
    }
    if (filter === "") {
      this.state.watch?.stop();
      this.update({ applied: "", watch: undefined, pending: undefined, error: undefined });
      return;
    }
    const watch = this.make(filter, (code, message) => {
      if (this.candidate?.watch === watch) {
        this.dropCandidate();
        this.update({ pending: undefined, error: { code, message, filter } });
      } else if (this.state.watch === watch) {
        // The applied filter failed later (too costly on a change): say so; its rows stay as they were.
        this.update({ error: { code, message, filter } });
      }
    });
    const unsubscribe = watch.subscribe(() => {
      if (this.candidate?.watch !== watch || !watch.getSnapshot().loaded) return;
      this.candidate.unsubscribe();
      this.candidate = undefined;
      this.state.watch?.stop();
      this.update({ applied: filter, watch, pending: undefined, error: undefined });
    });
    this.candidate = { filter, watch, unsubscribe };
    this.update({ pending: filter });
    watch.start();
  }

  /** Stops both watches and forgets the filter (a later `set` starts over). */
  stop(): void {
    this.dropCandidate();
    this.state.watch?.stop();
    this.update({ applied: "", watch: undefined, pending: undefined, error: undefined });
  }

  private dropCandidate(): void {
    if (!this.candidate) return;
    this.candidate.unsubscribe();
    this.candidate.watch.stop();
    this.candidate = undefined;
  }

  private update(patch: Partial<CelWatchState>): void {
    this.state = { ...this.state, ...patch };
    for (const fn of this.listeners) fn();
  }
}
