import { fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { SavedQuerySpecSchema, type SavedQuerySpec } from "@berth/proto/berth/v1/query_pb.js";
import { AlreadyExistsError, ConflictError } from "../errors.js";

/**
 * A stored saved query (migration 18, SavedQueryService): the spec as
 * protobuf JSON, with the columns the service and the alert runner select on
 * (name, owner, shared, pinned, alert enabled) kept beside it, and what the
 * alert runner last saw (rowsSince, lastRows, lastFirst; savedQuery.observe).
 */
export interface SavedQueryRecord {
  id: string;
  project: string;
  name: string;
  ownerTokenId: string;
  ownerName: string;
  shared: boolean;
  pinned: boolean;
  alertEnabled: boolean;
  spec: SavedQuerySpec;
  /** Counts changes of the record (UpdateSavedQueryRequest.expected_version). */
  version: number;
  createdAt: number;
  updatedAt: number;
  /** Since when the alert runner has seen the query return rows; null: none at its last run (or never run). */
  rowsSince: number | null;
  /** Rows at the alert runner's last run, and the first of them described. */
  lastRows: number;
  lastFirst: string;
}

/** listSavedQueries' selection; by project, then name. */
export interface SavedQueryFilter {
  project?: string;
  name?: string;
  /** Only shared ones and those owned by this token id. */
  visibleTo?: string;
  pinnedOnly?: boolean;
  alertEnabled?: boolean;
  /** After this (project, name). */
  after?: { project: string; name: string };
  limit?: number;
}

export interface SavedQueryRow {
  id: string;
  project: string;
  name: string;
  owner_token_id: string;
  owner_name: string;
  shared: number | string;
  pinned: number | string;
  alert_enabled: number | string;
  spec_json: string;
  version: number | string;
  created_at: number | string;
  updated_at: number | string;
  rows_since: number | string | null;
  last_rows: number | string;
  last_first: string;
}

export const SAVED_QUERY_COLUMNS = ["id", "project", "name", "owner_token_id", "owner_name", "shared", "pinned", "alert_enabled", "spec_json", "version", "created_at", "updated_at", "rows_since", "last_rows", "last_first"] as const;

export function savedQueryValues(q: SavedQueryRecord): unknown[] {
  return [q.id, q.project, q.name, q.ownerTokenId, q.ownerName, q.shared ? 1 : 0, q.pinned ? 1 : 0, q.alertEnabled ? 1 : 0, toJsonString(SavedQuerySpecSchema, q.spec), q.version, q.createdAt, q.updatedAt, q.rowsSince, q.lastRows, q.lastFirst];
}

export function savedQueryFromRow(r: SavedQueryRow): SavedQueryRecord {
  return {
    id: r.id,
    project: r.project,
    name: r.name,
    ownerTokenId: r.owner_token_id,
    ownerName: r.owner_name,
    shared: Number(r.shared) === 1,
    pinned: Number(r.pinned) === 1,
    alertEnabled: Number(r.alert_enabled) === 1,
    spec: fromJsonString(SavedQuerySpecSchema, r.spec_json, { ignoreUnknownFields: true }),
    version: Number(r.version),
    createdAt: Number(r.created_at),
    updatedAt: Number(r.updated_at),
    rowsSince: r.rows_since === null ? null : Number(r.rows_since),
    lastRows: Number(r.last_rows),
    lastFirst: r.last_first,
  };
}

export function savedQueryNameTaken(q: Pick<SavedQueryRecord, "name" | "project">): AlreadyExistsError {
  return new AlreadyExistsError(`a saved query named "${q.name}" already exists in project "${q.project}"; choose another name, or update that one (UpdateSavedQuery)`);
}

export function savedQueryMoved(q: Pick<SavedQueryRecord, "name">, expect: number, actual: number): ConflictError {
  return new ConflictError(`saved query "${q.name}" is at version ${actual}, not ${expect}: someone changed it since you read it; read it again and retry`);
}
