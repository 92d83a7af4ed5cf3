/**
 * Server actions sent from the dashboard and not yet confirmed. A row shows
 * its pending action ("stopping…") from the click until the watch shows the
 * server where the action leads (model.ts `pendingSettled`), or until the
 * manager answers with an error, which the row then shows; the row itself
 * always renders the watch's truth.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Server } from "@berth/proto/berth/v1/server_pb.js";
import type { Api } from "../api/client.js";
import { lastChangeMs, pendingSettled, type PendingAction, type ServerAction } from "./model.js";
import type { ServerWatch } from "./server-watch.js";

export interface ActionOptions {
  /** Start: create an empty data directory when it is gone. */
  allowEmptyData?: boolean;
  /** Purge: delete the data directory too. */
  removeData?: boolean;
  /** Purge: drop the record even though the host is offline. */
  force?: boolean;
}

export interface ActionState {
  readonly pending: ReadonlyMap<string, PendingAction>;
  /** The manager's error for the last action on a server, until the next one. */
  readonly errors: ReadonlyMap<string, string>;
}

export type ActionResult = { ok: true } | { ok: false; error: string };

export class ActionStore {
  private state: ActionState = { pending: new Map(), errors: new Map() };
  private readonly listeners = new Set<() => void>();
  private timer: ReturnType<typeof setInterval> | undefined;
  private unwatch: (() => void) | undefined;

  constructor(
    private readonly api: Api,
    private readonly watch: ServerWatch,
  ) {}

  /** Follows the watch to settle pending actions; `stop` undoes it. */
  start(): void {
    if (this.unwatch) return;
    this.unwatch = this.watch.subscribe(() => this.settle());
    this.timer = setInterval(() => this.settle(), 5000);
  }

  stop(): void {
    this.unwatch?.();
    this.unwatch = undefined;
    clearInterval(this.timer);
  }

  readonly subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  readonly getSnapshot = (): ActionState => this.state;

  /** Sends one action for one server; resolves when the manager has answered (not when it converged). */
  async run(server: Server, action: ServerAction, opts: ActionOptions = {}): Promise<ActionResult> {
    const id = server.id;
    this.update((p, e) => {
      p.set(id, { action, since: Date.now(), baseline: lastChangeMs(server) });
      e.delete(id);
    });
    try {
      const generation = await this.send(id, action, opts);
      this.update((p) => {
        const cur = p.get(id);
        if (cur && generation !== undefined) p.set(id, { ...cur, generation });
      });
      this.settle();
      return { ok: true };
    } catch (err) {
      const e = ConnectError.from(err);
      const error = `${Code[e.code]}: ${e.rawMessage}`;
      this.update((p, errors) => {
        p.delete(id);
        errors.set(id, error);
      });
      return { ok: false, error };
    }
  }

  /** Records an UpdateServer sent elsewhere (the spec editor), so the row shows it until observed. */
  trackUpdate(server: Server, generation: bigint): void {
    this.update((p, e) => {
      p.set(server.id, { action: "update", since: Date.now(), baseline: lastChangeMs(server), generation });
      e.delete(server.id);
    });
    this.settle();
  }

  dismissError(id: string): void {
    if (this.state.errors.has(id)) this.update((_, e) => e.delete(id));
  }

  private async send(id: string, action: ServerAction, o: ActionOptions): Promise<bigint | undefined> {
    const s = this.api.servers;
    switch (action) {
      case "start":
        return (await s.startServer({ id, allowEmptyData: o.allowEmptyData ?? false })).server?.generation;
      case "stop":
        return (await s.stopServer({ id })).server?.generation;
      case "pause":
        return (await s.pauseServer({ id })).server?.generation;
      case "resume":
        return (await s.resumeServer({ id })).server?.generation;
      case "restart":
        return (await s.restartServer({ id })).server?.generation;
      case "rebuild":
        return (await s.rebuildServer({ id })).server?.generation;
      case "delete":
        return (await s.deleteServer({ id })).server?.generation;
      case "restore":
        return (await s.restoreServer({ id })).server?.generation;
      case "purge":
        await s.purgeServer({ id, removeData: o.removeData ?? false, force: o.force ?? false });
        return undefined;
    }
  }

  private settle(): void {
    const now = Date.now();
    const done: string[] = [];
    for (const [id, p] of this.state.pending) if (pendingSettled(p, this.watch.get(id), now)) done.push(id);
    if (done.length > 0) this.update((p) => done.forEach((id) => p.delete(id)));
  }

  private update(fn: (pending: Map<string, PendingAction>, errors: Map<string, string>) => void): void {
    const pending = new Map(this.state.pending);
    const errors = new Map(this.state.errors);
    fn(pending, errors);
    this.state = { pending, errors };
    for (const l of this.listeners) l();
  }
}

/**
 * Runs `fn` over `items` with at most `concurrency` in flight (a browser has
 * few connections per origin over HTTP/1.1), retrying ResourceExhausted (the
 * per-token rate limit) with a growing pause.
 */
export async function runBulk<T, R>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<R>, isRateLimited: (r: R) => boolean): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    for (;;) {
      const i = next++;
      if (i >= items.length) return;
      let wait = 250;
      for (;;) {
        const r = await fn(items[i]!);
        if (!isRateLimited(r) || wait > 8000) {
          out[i] = r;
          break;
        }
        await new Promise((res) => setTimeout(res, wait));
        wait *= 2;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return out;
}
