/**
 * What the campaign did and saw, for the invariants and the report: every
 * operation and its outcome, every fault, the data directories the workload
 * or a fault was allowed to remove, and the windows in which a manager was
 * down, the database disk full or the database server down (errors inside
 * them are expected).
 */
import { Code } from "@connectrpc/connect";

export type FaultKind =
  | "manager-kill"
  | "agent-kill"
  | "link-cut"
  | "dockerd-restart"
  | "container-stop"
  | "container-kill"
  | "container-rm"
  | "data-delete"
  | "db-disk-full"
  | "database-restart";

export const FAULT_KINDS: readonly FaultKind[] = [
  "manager-kill",
  "agent-kill",
  "link-cut",
  "dockerd-restart",
  "container-stop",
  "container-kill",
  "container-rm",
  "data-delete",
  "db-disk-full",
  "database-restart",
];

/** The fault kinds a campaign of this shape can inject (a disk-full tmpfs only holds a SQLite file; only PostgreSQL is restarted). */
export function faultKindsFor(store: "sqlite" | "postgres"): FaultKind[] {
  return FAULT_KINDS.filter((k) => (store === "postgres" ? k !== "db-disk-full" : k !== "database-restart"));
}

export interface Violation {
  invariant: string;
  detail: string;
}

/** One accepted operation: the ledger must hold `event` for `serverId`. */
export interface AcceptedOp {
  op: string;
  serverId: string;
  event: string;
  at: number;
}

export interface OpStats {
  accepted: number;
  /** Refused with a precise code (InvalidArgument, NotFound, FailedPrecondition, ...), by code name. */
  rejected: Record<string, number>;
  /** Unavailable, or cut off by a manager restart: the outcome is unknown to the client. */
  unavailable: number;
}

export interface ServerFacts {
  id: string;
  name: string;
  hostIndex: number;
  purged: boolean;
}

type WindowKind = "manager-down" | "disk-full" | "database-down";

interface Window {
  kind: WindowKind;
  /** For manager-down: which manager (index in Cluster.managers). */
  manager: number | undefined;
  from: number;
  to: number | undefined;
}

export class Tracker {
  readonly ops = new Map<string, OpStats>();
  readonly accepted: AcceptedOp[] = [];
  readonly faults = new Map<FaultKind, number>();
  readonly violations: Violation[] = [];
  readonly servers = new Map<string, ServerFacts>();
  /** Servers purged with remove_data (their data may go). */
  readonly purgedWithData = new Set<string>();
  /**
   * Purges with remove_data whose answer was lost (the manager died or the disk filled
   * mid-call): they may have been committed. Their data may go if the ledger holds the request.
   */
  readonly maybePurgedWithData = new Set<string>();
  /** Data directories the data-delete fault removed, by server id. */
  readonly faultDeletedData = new Map<string, number>();
  /** Servers started with allow_empty_data after their data was deleted: the loss was acknowledged. */
  readonly emptyDataStarts = new Map<string, number>();
  /** Servers whose container a fault removed (docker rm). */
  readonly containerRemoved = new Map<string, number>();
  /** Every data directory seen on a host (server id → host index). */
  readonly seenData = new Map<string, number>();
  private readonly windows: Window[] = [];
  readonly log: string[] = [];

  stats(op: string): OpStats {
    let s = this.ops.get(op);
    if (!s) this.ops.set(op, (s = { accepted: 0, rejected: {}, unavailable: 0 }));
    return s;
  }

  fault(kind: FaultKind): void {
    this.faults.set(kind, (this.faults.get(kind) ?? 0) + 1);
  }

  /** Hears each violation as it is recorded (the campaign logs it with its time). */
  onViolation: ((v: Violation) => void) | undefined;

  violation(invariant: string, detail: string): void {
    const v = { invariant, detail };
    this.violations.push(v);
    this.onViolation?.(v);
  }

  /**
   * Opens a window of `kind` (for manager-down, of manager `manager`), starting
   * `sinceMs` ago (a crash is seen a moment after it happened); returns how to close it.
   */
  openWindow(kind: WindowKind, manager?: number, sinceMs = 0): () => void {
    const w: Window = { kind, manager, from: Date.now() - sinceMs, to: undefined };
    this.windows.push(w);
    // A little grace: clients' connections take a moment to notice a restart.
    return () => (w.to = Date.now() + 3_000);
  }

  /** Whether [from, to] overlaps a window of `kind` (of manager `manager` when given and the window names one). */
  during(kind: WindowKind, from: number, to: number, manager?: number): boolean {
    return this.windows.some(
      (w) => w.kind === kind && (manager === undefined || w.manager === undefined || w.manager === manager) && w.from <= to && (w.to === undefined || w.to >= from),
    );
  }
}

export function codeName(code: Code): string {
  return Code[code] ?? String(code);
}
