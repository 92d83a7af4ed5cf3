import type { EventInput, EventRecord, Store } from "../store/store.js";

/**
 * The append-only event ledger: every state change berth makes or sees is
 * recorded here with its cause and actor. Listeners hear about new events
 * after they are stored (for live watches).
 */
export class Ledger {
  private readonly listeners = new Set<(id: number) => void>();

  constructor(
    private readonly store: Store,
    private readonly now: () => number = Date.now,
  ) {}

  append(e: EventInput): number {
    const id = this.store.appendEvent(e, this.now());
    for (const l of this.listeners) l(id);
    return id;
  }

  list(f: { serverId?: string; afterId?: number; limit?: number }): EventRecord[] {
    return this.store.listEvents(f);
  }

  subscribe(listener: (id: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
