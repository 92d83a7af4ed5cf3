/**
 * The alert runner of saved queries (docs/explore.md "Saved queries",
 * alerts/rules.ts `saved_query`). Running a query reads records, so the
 * alert rules do not: on the leader, every `intervalMs` (--saved-query-interval),
 * this runs each saved query whose alert is enabled, one query per turn
 * slot (turns.ts), with the query's project scope (not any caller's), and
 * stores what it saw (savedQuery.observe: rows_since, the row count and the
 * first row). The evaluator reads that back (savedQueryAlertViews) at each
 * of its runs, so deleting or disabling a query resolves its alert at once.
 */
import { Severity } from "@berth/proto/berth/v1/alert_pb.js";
import type { Caller } from "../auth/caller.js";
import type { AlertSeverity, SavedQueryAlertView } from "../alerts/rules.js";
import type { Logger } from "../log.js";
import type { Store } from "../store/store.js";
import { turns } from "../turns.js";
import { aggregateRequestOf, fireAfterMs, isAggregate, runRecords, type SavedQueryServiceDeps } from "../api/saved-query-service.js";
import type { SavedQueryRecord } from "./saved-records.js";

/** What one run of a saved query returned: rows (records on its first page, or groups) and the first described. */
export interface SavedQueryOutcome {
  rows: number;
  first: string;
}

export type SavedQueryRunner = (q: SavedQueryRecord) => Promise<SavedQueryOutcome>;

export const DEFAULT_SAVED_QUERY_INTERVAL_MS = 30_000;

/** The caller a saved query's alert runs as: a viewer of its project. */
export function savedQueryCaller(q: SavedQueryRecord): Caller {
  return { tokenId: "", name: `saved query ${q.name}`, role: "viewer", project: q.project, actor: `saved_query:${q.id}` };
}

/** Runs a saved query for its alert: its records' first page (100), or its aggregate's groups. */
export function savedQueryRunner(deps: Pick<SavedQueryServiceDeps, "servers" | "hosts" | "events" | "aggregate" | "now">): SavedQueryRunner {
  const now = deps.now ?? Date.now;
  return async (q) => {
    const caller = savedQueryCaller(q);
    if (isAggregate(q.spec)) {
      const r = await deps.aggregate(caller, aggregateRequestOf(q));
      const g = r.groups[0];
      return { rows: r.groups.length, first: g ? `${g.key.join(", ") || "(all)"}: ${g.total}` : "" };
    }
    const r = await runRecords(deps, caller, q, { pageSize: 100, pageToken: "" }, now());
    return { rows: r.rows, first: r.first };
  };
}

const SEVERITY: Record<Severity, AlertSeverity> = {
  [Severity.UNSPECIFIED]: "warning",
  [Severity.INFO]: "info",
  [Severity.WARNING]: "warning",
  [Severity.CRITICAL]: "critical",
};

/** The evaluator's view of the saved queries with an alert, as stored. */
export async function savedQueryAlertViews(store: Pick<Store, "listSavedQueries">): Promise<SavedQueryAlertView[]> {
  return (await store.listSavedQueries({ alertEnabled: true })).map((q) => ({
    id: q.id,
    name: q.name,
    project: q.project,
    rowsSince: q.rowsSince,
    rows: q.lastRows,
    first: q.lastFirst,
    fireAfterMs: fireAfterMs(q.spec),
    severity: SEVERITY[q.spec.alert?.severity ?? Severity.UNSPECIFIED] ?? "warning",
  }));
}

export class SavedQueryAlerts {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private readonly now: () => number;
  /** Queries whose failure was logged (once per failure streak). */
  private readonly failing = new Set<string>();

  constructor(
    private readonly deps: { store: Store; run: SavedQueryRunner; log: Logger; intervalMs?: number; now?: () => number },
  ) {
    this.now = deps.now ?? Date.now;
  }

  start(): void {
    this.timer = setInterval(() => void this.tick(), this.deps.intervalMs ?? DEFAULT_SAVED_QUERY_INTERVAL_MS);
    this.timer.unref();
    void this.tick();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** A timer's run, unless the last one is still going. */
  private tick(): Promise<void> {
    if (this.running) return this.running;
    this.running = this.runOnce()
      .catch((err: unknown) => this.deps.log.error({ err }, "saved query alerts: run failed; retrying at the next interval"))
      .finally(() => (this.running = undefined));
    return this.running;
  }

  /** Runs every saved query with an alert once, each in its own turn slot, and stores what changed. */
  async runOnce(): Promise<void> {
    const { store, run, log } = this.deps;
    for (const q of await store.listSavedQueries({ alertEnabled: true })) {
      await turns.slot();
      let out: SavedQueryOutcome;
      try {
        out = await run(q);
        this.failing.delete(q.id);
      } catch (err) {
        if (!this.failing.has(q.id)) log.warn({ err, savedQuery: q.id }, `saved query "${q.name}" failed to run for its alert; its alert state stays as it was`);
        this.failing.add(q.id);
        continue;
      }
      const first = out.first.slice(0, 200);
      const changed = out.rows !== q.lastRows || first !== q.lastFirst || (out.rows > 0) !== (q.rowsSince !== null);
      if (changed) await store.commit([{ op: "savedQuery.observe", id: q.id, at: this.now(), rows: out.rows, first }]);
    }
  }
}
