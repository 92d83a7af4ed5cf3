/**
 * Numbered schema migrations, applied in order at start inside one transaction
 * each. SQLite's dialect (AUTOINCREMENT, INTEGER booleans, PRAGMA
 * user_version); the PostgreSQL store will need its own list.
 * Never edit a migration that has shipped: add a new one.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: the walking skeleton.
  `
  CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
  );

  CREATE TABLE hosts (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    secret_hash     TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    removed_at      BIGINT,
    online          INTEGER NOT NULL DEFAULT 0,
    connected_since BIGINT,
    last_heartbeat  BIGINT,
    facts_json      TEXT NOT NULL DEFAULT '{}'
  );

  CREATE TABLE enrollment_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    used_at     BIGINT,
    used_by     TEXT
  );

  CREATE TABLE servers (
    id               TEXT PRIMARY KEY,
    project          TEXT NOT NULL,
    name             TEXT NOT NULL,
    host_id          TEXT NOT NULL,
    generation       BIGINT NOT NULL,
    spec_json        TEXT NOT NULL,
    status_json      TEXT NOT NULL,
    phase            TEXT NOT NULL,
    data_initialized INTEGER NOT NULL DEFAULT 0,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    deleted_at       BIGINT
  );
  CREATE UNIQUE INDEX servers_project_name ON servers (project, name);
  CREATE INDEX servers_host ON servers (host_id);

  CREATE TABLE observed_containers (
    host_id      TEXT NOT NULL,
    container_id TEXT NOT NULL,
    server_id    TEXT,
    manager_id   TEXT,
    state        TEXT NOT NULL,
    info_json    TEXT NOT NULL,
    observed_at  BIGINT NOT NULL,
    PRIMARY KEY (host_id, container_id)
  );
  CREATE INDEX observed_containers_server ON observed_containers (server_id);

  CREATE TABLE data_dirs (
    host_id     TEXT NOT NULL,
    server_id   TEXT NOT NULL,
    present     INTEGER NOT NULL,
    size_bytes  BIGINT NOT NULL,
    checked_at  BIGINT NOT NULL,
    PRIMARY KEY (host_id, server_id)
  );

  CREATE TABLE commands (
    id          TEXT PRIMARY KEY,
    server_id   TEXT NOT NULL,
    host_id     TEXT NOT NULL,
    kind        TEXT NOT NULL,
    payload     BLOB NOT NULL,
    state       TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deadline_at BIGINT NOT NULL,
    sent_at     BIGINT,
    finished_at BIGINT,
    reason      TEXT,
    message     TEXT
  );
  CREATE INDEX commands_server ON commands (server_id, created_at);
  CREATE INDEX commands_open ON commands (host_id, state);

  CREATE TABLE events (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    time           BIGINT NOT NULL,
    project        TEXT NOT NULL DEFAULT '',
    server_id      TEXT NOT NULL DEFAULT '',
    host_id        TEXT NOT NULL DEFAULT '',
    type           TEXT NOT NULL,
    reason         TEXT NOT NULL DEFAULT '',
    message        TEXT NOT NULL DEFAULT '',
    actor          TEXT NOT NULL DEFAULT '',
    correlation_id TEXT NOT NULL DEFAULT '',
    payload_json   TEXT NOT NULL DEFAULT '{}'
  );
  CREATE INDEX events_server ON events (server_id, id);
  `,
  // 2: operator tokens and projects (access control).
  `
  CREATE TABLE projects (
    name       TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
  );
  INSERT INTO projects (name, created_at) VALUES ('default', 0);

  CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    project      TEXT,
    secret_hash  TEXT NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL DEFAULT '',
    revoked_at   BIGINT,
    last_used_at BIGINT
  );
  `,
  // 3: lifecycle bookkeeping (operation requests, exits, crashes) as one JSON column:
  // read and written only by the manager, never queried by SQL.
  `
  ALTER TABLE servers ADD COLUMN lifecycle_json TEXT NOT NULL DEFAULT '{}';
  `,
  // 4: alerts, and event indexes for ledger filters and retention.
  `
  CREATE TABLE alerts (
    id              TEXT PRIMARY KEY,
    rule            TEXT NOT NULL,
    subject         TEXT NOT NULL,
    project         TEXT NOT NULL DEFAULT '',
    host_id         TEXT NOT NULL DEFAULT '',
    server_id       TEXT NOT NULL DEFAULT '',
    severity        TEXT NOT NULL,
    state           TEXT NOT NULL,
    message         TEXT NOT NULL DEFAULT '',
    first_seen      BIGINT NOT NULL,
    last_seen       BIGINT NOT NULL,
    resolved_at     BIGINT,
    acknowledged_by TEXT NOT NULL DEFAULT '',
    acknowledged_at BIGINT,
    muted_until     BIGINT
  );
  CREATE UNIQUE INDEX alerts_one_firing ON alerts (rule, subject) WHERE state = 'firing';
  CREATE INDEX alerts_seen ON alerts (last_seen);

  CREATE INDEX events_time ON events (time);
  CREATE INDEX events_host ON events (host_id, id);
  CREATE INDEX events_type ON events (type, id);
  `,
  // 5: every directory under each host's data root, as its last inventory listed
  // them (stray data directories: OrphanService).
  `
  CREATE TABLE data_root_entries (
    host_id     TEXT NOT NULL,
    name        TEXT NOT NULL,
    size_bytes  BIGINT NOT NULL DEFAULT 0,
    observed_at BIGINT NOT NULL,
    PRIMARY KEY (host_id, name)
  );
  `,
  // 6: a purged server's commands now go with its record (Store.deleteServerRecord);
  // those earlier versions left behind go once here. Retention finds old finished
  // commands by the time they finished.
  `
  DELETE FROM commands
  WHERE state IN ('succeeded', 'failed', 'expired')
    AND NOT EXISTS (SELECT 1 FROM servers s WHERE s.id = commands.server_id);
  CREATE INDEX commands_finished ON commands (finished_at) WHERE state IN ('succeeded', 'failed', 'expired');
  `,
  // 7: invariants held by the database rather than by one manager's memory
  // (several managers will share one database).
  //
  // a) One open command per server. An older database may hold several (nothing
  //    forbade it): the newest stays open (it is the one openCommandForServer
  //    returned, so the reconciler was waiting on it) and the older ones are
  //    expired now, with reason Superseded; their finished_at is the upgrade
  //    time, earlier than whenever the open one finishes, so a superseded
  //    command never becomes the server's last finished one behind its back.
  //
  // b) servers.version, for optimistic concurrency (every write increments it).
  //
  // c) Host ports reserved per host in server_ports, kept by the store in the
  //    same transaction as the server row. The rule is the domain's
  //    (domain/port-conflicts.ts): a host port conflicts with the same port
  //    and protocol on the same host, whatever the container port; ports carry
  //    no host IP (Docker publishes them on every address), so the key is
  //    (host_id, protocol, host_port). Soft-deleted servers hold none, as
  //    api/port-check.ts ignores them. Existing conflicting rows cannot exist
  //    if the friendly check always held; should some exist, the oldest
  //    server (created_at, then id) keeps the port and the later ones simply
  //    hold no reservation for it (their record is unchanged; their next
  //    start or update meets the port check).
  `
  UPDATE commands
  SET state = 'expired',
      finished_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
      reason = 'Superseded',
      message = 'expired when upgrading: a newer command of this server was open too (one open command per server)'
  WHERE state IN ('pending', 'sent')
    AND EXISTS (
      SELECT 1 FROM commands n
      WHERE n.server_id = commands.server_id AND n.state IN ('pending', 'sent')
        AND (n.created_at > commands.created_at OR (n.created_at = commands.created_at AND n.id > commands.id)));
  CREATE UNIQUE INDEX commands_one_open ON commands (server_id) WHERE state IN ('pending', 'sent');

  ALTER TABLE servers ADD COLUMN version BIGINT NOT NULL DEFAULT 1;

  CREATE TABLE server_ports (
    host_id   TEXT NOT NULL,
    protocol  TEXT NOT NULL,
    host_port INTEGER NOT NULL,
    server_id TEXT NOT NULL,
    PRIMARY KEY (host_id, protocol, host_port)
  );
  CREATE INDEX server_ports_server ON server_ports (server_id);
  INSERT INTO server_ports (host_id, protocol, host_port, server_id)
  SELECT s.host_id,
         CASE WHEN json_extract(p.value, '$.protocol') IN ('PROTOCOL_UDP', 2) THEN 'udp' ELSE 'tcp' END,
         COALESCE(json_extract(p.value, '$.hostPort'), 0),
         s.id
  FROM servers s, json_each(s.spec_json, '$.ports') p
  WHERE s.deleted_at IS NULL
  ORDER BY s.created_at, s.id
  ON CONFLICT DO NOTHING;
  `,
];
