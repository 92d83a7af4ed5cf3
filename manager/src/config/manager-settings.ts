/**
 * Every setting of `berth-manager`, in one table (see settings.ts for how a
 * table becomes flags, environment variables, a config file and --help).
 * Defaults here are the manager's real defaults: a unit test compares them
 * with the constants the code uses.
 */
import type { LedgerConfig } from "../ledger/services.js";
import type { LimitsConfig } from "../auth/limits.js";
import type { HttpLimits } from "../http/listen.js";
import { parseStoreUrl, storeFilesDir } from "../store/store-url.js";
import { effectiveStoreUrl, storeSettings } from "./store-settings.js";
import { ConfigError, defineSettings, loadSettings, renderSettingsHelp, type LoadedSettings, type SettingValues } from "./settings.js";

const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"];
const atLeast1 = (what: string) => (n: number) => (Number.isInteger(n) && n >= 1 ? undefined : `must be a whole number${what} >= 1`);
const seconds = atLeast1(" of seconds");
const count = atLeast1("");

function hostPort(s: string): string | undefined {
  return /^\[[^\]]+\]:\d+$/.test(s) || /^[^:[\]]*:\d+$/.test(s) ? undefined : "must be host:port, e.g. 127.0.0.1:7000 or [::1]:7000 or 0.0.0.0:7000";
}

function httpUrl(s: string): string | undefined {
  try {
    const u = new URL(s);
    return u.protocol === "http:" || u.protocol === "https:" ? undefined : "must be an http:// or https:// URL";
  } catch {
    return "is not a URL";
  }
}

export const MANAGER_SETTINGS = defineSettings({
  config: {
    kind: "string",
    group: "General",
    arg: "FILE",
    notInFile: true,
    help: 'read settings from FILE: a JSON object ({"listen": "0.0.0.0:7000", "webhook": ["https://…"]}) or "key = value" lines; keys are these flag names without "--". Flags and environment variables override it.',
  },
  listen: {
    kind: "string",
    group: "General",
    arg: "HOST:PORT",
    default: "127.0.0.1:7000",
    help: "address serving gRPC, gRPC-Web, Connect, /metrics, /healthz, /readyz and the dashboard, all on one port",
    check: hostPort,
  },
  ...storeSettings("General"),
  "secret-key-file": {
    kind: "string",
    group: "General",
    arg: "PATH",
    defaultText: "<db dir>/secret.key",
    help: "32-byte key sealing secret env values (AES-256-GCM); created 0600 on first start when missing. Back it up apart from the database: a backup without it reveals no secret, and cannot restore them either",
  },
  "advertise-url": {
    kind: "string",
    group: "General",
    arg: "URL",
    defaultText: "http(s)://<listen> (on 0.0.0.0 or ::, this machine's name)",
    help: "URL agents dial, used in the enrollment command CreateEnrollmentToken returns",
    check: httpUrl,
  },
  "web-root": {
    kind: "string",
    group: "General",
    arg: "DIR",
    defaultText: "the dashboard shipped with the manager",
    help: "directory of the dashboard's built files, served for every path that is not an RPC",
  },
  "log-level": {
    kind: "string",
    group: "General",
    arg: "LEVEL",
    default: "info",
    help: "trace, debug, info, warn or error",
    check: (v) => (LOG_LEVELS.includes(v) ? undefined : "use trace, debug, info, warn or error"),
  },
  "log-format": {
    kind: "string",
    group: "General",
    arg: "FORMAT",
    default: "auto",
    help: "json (one JSON object per line, pino), pretty (for people), or auto: pretty when stdout is a terminal, else json",
    check: (v) => (["auto", "json", "pretty"].includes(v) ? undefined : "use auto, json or pretty"),
  },

  "tls-auto": {
    kind: "boolean",
    group: "TLS",
    default: false,
    help: "serve TLS with a private CA and server certificate (ECDSA P-256) created in <db dir>/tls on first start and reused after; enrollment tokens then pin that CA",
  },
  "tls-cert": { kind: "string", group: "TLS", arg: "PATH", help: "PEM server certificate followed by its chain; the LAST one is the CA agents pin" },
  "tls-key": { kind: "string", group: "TLS", arg: "PATH", help: "PEM private key of --tls-cert" },
  "tls-san": { kind: "list", group: "TLS", arg: "NAME", default: [], help: "extra DNS name or IP address for the --tls-auto certificate (the names agents dial)" },
  insecure: {
    kind: "boolean",
    group: "TLS",
    default: false,
    help: "allow plaintext on a non-loopback address (only behind a VPN or a TLS-terminating proxy)",
  },

  "rate-limit": { kind: "integer", group: "Access limits", arg: "N", default: 20, help: "mutating calls per second per token", check: count },
  "rate-burst": { kind: "integer", group: "Access limits", arg: "N", default: 50, help: "burst of mutating calls per token", check: count },
  "max-streams": { kind: "integer", group: "Access limits", arg: "N", default: 32, help: "open streams (watches, log tails) per token", check: count },

  "max-connections-per-ip": {
    kind: "integer",
    group: "Connection limits",
    arg: "N",
    default: 256,
    help: "open TCP connections one IP address may hold on the port; more are closed at once (raise it behind a proxy or NAT that many clients share)",
    check: count,
  },
  "max-concurrent-streams": {
    kind: "integer",
    group: "Connection limits",
    arg: "N",
    default: 256,
    help: "HTTP/2 streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS); clients queue the rest",
    check: count,
  },
  "max-streams-per-ip": {
    kind: "integer",
    group: "Connection limits",
    arg: "N",
    default: 1024,
    help: "HTTP/2 streams one IP address may have open at once over all its connections; more are refused (REFUSED_STREAM). Each agent holds one; raise it behind a proxy or NAT that many clients share",
    check: count,
  },
  "idle-timeout": {
    kind: "integer",
    group: "Connection limits",
    arg: "S",
    default: 120,
    help: "an HTTP/2 connection with no open stream and no traffic for this long is closed (GOAWAY); open streams (agent links, watches) never count as idle",
    check: seconds,
  },
  "headers-timeout": {
    kind: "integer",
    group: "Connection limits",
    arg: "S",
    default: 30,
    help: "an HTTP/1.1 request's head must arrive within this, or the connection is closed (slow clients holding connections)",
    check: seconds,
  },
  "request-timeout": {
    kind: "integer",
    group: "Connection limits",
    arg: "S",
    default: 300,
    help: "an HTTP/1.1 request (head and body) must arrive within this, or it is answered 408 and closed",
    check: seconds,
  },

  "start-timeout": {
    kind: "integer",
    group: "Server lifecycle",
    arg: "S",
    defaultText: "180 (a restart: 240)",
    help: "seconds a start (pull, create, start) may take before the server is Failed/StartTimeout; when set, restarts get the same limit (creating the container of a server kept stopped keeps its own 180 s)",
    check: seconds,
  },
  "delete-retention": {
    kind: "integer",
    group: "Server lifecycle",
    arg: "S",
    default: 86_400,
    help: "seconds a deleted server's record is kept for RestoreServer (its data always stays)",
    check: seconds,
  },
  "crash-backoff": {
    kind: "integer",
    group: "Server lifecycle",
    arg: "S",
    default: 10,
    help: "first delay before restarting a crashed server; doubles per crash in 10 minutes, capped at 30 times",
    check: seconds,
  },
  "transfer-offline-grace": {
    kind: "integer",
    group: "Server lifecycle",
    arg: "S",
    default: 20,
    help: "a transfer whose target host stays away this long (after its last heartbeat) fails, and the server goes back to its source",
    check: seconds,
  },
  "resync-interval": {
    kind: "integer",
    group: "Server lifecycle",
    arg: "S",
    default: 300,
    help: "every server is reconciled at least this often, spread over the period (the safety net for a missed trigger)",
    check: seconds,
  },
  "container-log-max-size": {
    kind: "integer",
    group: "Server lifecycle",
    arg: "BYTES",
    default: 10 * 1024 * 1024,
    help: "a container's json-file log rotates at this size, unless its spec sets log_max_size_bytes (65536 to 1073741824); applies to containers created from then on",
    check: (n) => (Number.isInteger(n) && n >= 65536 && n <= 1073741824 ? undefined : "must be a whole number of bytes from 65536 (64 KiB) to 1073741824 (1 GiB)"),
  },
  "container-log-max-files": {
    kind: "integer",
    group: "Server lifecycle",
    arg: "N",
    default: 3,
    help: "log files kept per container (the current one and rotated ones), unless its spec sets log_max_files (1 to 20)",
    check: (n) => (Number.isInteger(n) && n >= 1 && n <= 20 ? undefined : "must be a whole number from 1 to 20"),
  },
  "adoptable-path": {
    kind: "list",
    group: "Server lifecycle",
    arg: "DIR",
    default: [],
    help: "a host directory outside the data root whose subdirectories AdoptOrphan's move_data may copy into a new server (repeat for several); none by default, so only directories in the data root that no server owns can be moved in (docs/orphans.md)",
    check: (dirs) => {
      for (const d of dirs) if (!d.startsWith("/") || d.replace(/\/+$/, "") === "" || d.split("/").includes("..")) return `"${d}" must be an absolute directory other than / and without '..'`;
      return undefined;
    },
  },
  "default-pids-limit": {
    kind: "integer",
    group: "Server lifecycle",
    arg: "N",
    default: 512,
    help: "processes and threads a server's container may have when its spec sets no pids_limit (a fork bomb stops there); 0: no limit. Applied live to running containers when changed (docs/resources.md)",
    check: (n) => (Number.isSafeInteger(n) && n >= 0 && n <= 4194304 ? undefined : "must be a whole number from 0 (no limit) to 4194304"),
  },
  "file-max-upload-bytes": {
    kind: "integer",
    group: "Server lifecycle",
    arg: "BYTES",
    default: 8 * 1024 * 1024 * 1024,
    help: "the most bytes one file uploaded, archived or extracted through FileService may hold (FileService.WriteFile, CreateArchive, ExtractArchive; ResourceExhausted beyond); the host's free space is checked too",
    check: (n) => (Number.isSafeInteger(n) && n >= 1024 * 1024 ? undefined : "must be a whole number of bytes of at least 1048576 (1 MiB)"),
  },
  "sftp-listen": {
    kind: "string",
    group: "Server lifecycle",
    arg: "HOST:PORT",
    defaultText: "off",
    help: "serve SFTP here: log in as <server name or id>.<project> with a berth token as the password, and see that server's data directory (docs/console-and-files.md)",
    check: hostPort,
  },
  "sftp-host-key-file": {
    kind: "string",
    group: "Server lifecycle",
    arg: "PATH",
    defaultText: "<db dir>/sftp_host_ed25519_key",
    help: "the SFTP endpoint's host key (OpenSSH private key), created 0600 on first start when missing; required with a PostgreSQL store (the same file on every manager)",
  },
  "saved-query-interval": {
    kind: "integer",
    group: "Events and alerts",
    arg: "S",
    default: 30,
    help: "seconds between runs of the saved queries that have an alert (on the leader; docs/explore.md)",
    check: (n) => (Number.isInteger(n) && n >= 1 ? undefined : "must be a whole number of seconds >= 1"),
  },
  "backup-retention-interval": {
    kind: "integer",
    group: "Server lifecycle",
    arg: "S",
    default: 600,
    help: "seconds between runs of backup retention (each server's backup_policy; docs/data.md)",
    check: (n) => (Number.isInteger(n) && n >= 1 ? undefined : "must be a whole number of seconds >= 1"),
  },
  "orphan-grace": {
    kind: "integer",
    group: "Server lifecycle",
    arg: "S",
    default: 60,
    help: "a container younger than this (by its creation time on its host) is not listed as an orphan (docs/orphans.md)",
    check: (n) => (Number.isInteger(n) && n >= 0 ? undefined : "must be a whole number of seconds >= 0"),
  },

  "heartbeat-interval": {
    kind: "integer",
    group: "Hosts",
    arg: "S",
    default: 5,
    help: "seconds between an agent's heartbeats; the manager tells each agent when it connects",
    check: seconds,
  },
  "agent-timeout": {
    kind: "integer",
    group: "Hosts",
    arg: "S",
    default: 15,
    help: "an agent silent this long is disconnected and its host marked offline (its servers go Unknown); at least twice --heartbeat-interval",
    check: seconds,
  },
  "host-term": {
    kind: "integer",
    group: "Hosts",
    arg: "S",
    default: 15,
    help: "several managers (PostgreSQL): the term of a manager's hold on a host, renewed every third of it; a host whose manager died and whose agent is nowhere is marked offline once it lapses",
    check: (n) => (Number.isInteger(n) && n >= 3 ? undefined : "must be a whole number of seconds >= 3 (it is renewed every third of it)"),
  },

  "event-retention": { kind: "integer", group: "Events and alerts", arg: "S", default: 2_592_000, help: "seconds events are kept (30 days)", check: seconds },
  "event-max-rows": { kind: "integer", group: "Events and alerts", arg: "N", default: 1_000_000, help: "at most this many of the newest events are kept", check: count },
  "command-retention": { kind: "integer", group: "Events and alerts", arg: "S", default: 604_800, help: "seconds finished commands are kept (7 days); each server's latest is always kept", check: seconds },
  "enrollment-token-retention": { kind: "integer", group: "Events and alerts", arg: "S", default: 86_400, help: "seconds used or expired enrollment tokens are kept (1 day)", check: seconds },
  "alert-host-offline": { kind: "integer", group: "Events and alerts", arg: "S", default: 30, help: "alert when a host is offline longer than this", check: seconds },
  "alert-not-converged": {
    kind: "integer",
    group: "Events and alerts",
    arg: "S",
    default: 120,
    help: "alert when a server differs from its desired state longer than this",
    check: seconds,
  },
  "alert-disk-free": {
    kind: "number",
    group: "Events and alerts",
    arg: "PCT",
    default: 10,
    help: "alert when a host's data root has less free space than this percentage",
    check: (n) => (n >= 0 && n <= 100 ? undefined : "must be a percentage from 0 to 100"),
  },
  "alert-interval": { kind: "integer", group: "Events and alerts", arg: "S", default: 5, help: "how often alert rules run (also after each change)", check: seconds },
  webhook: {
    kind: "list",
    group: "Events and alerts",
    arg: "URL",
    default: [],
    help: "POST alert notifications (JSON) to this URL",
    check: (urls) => {
      for (const u of urls) {
        const problem = httpUrl(u);
        if (problem) return `"${u}" ${problem}`;
      }
      return undefined;
    },
  },
  "webhook-secret": {
    kind: "string",
    group: "Events and alerts",
    arg: "KEY",
    secret: true,
    help: "sign webhook bodies: X-Berth-Signature: sha256=<HMAC-SHA256 hex of the body>",
  },

  "metrics-token": {
    kind: "string",
    group: "Observability",
    arg: "TOKEN",
    secret: true,
    help: "require 'authorization: Bearer TOKEN' on /metrics; without it /metrics is open, like /healthz and /readyz (see docs/metrics.md)",
    check: (v) => (v.length >= 16 ? undefined : "must be at least 16 characters (e.g. openssl rand -hex 16)"),
  },
  "metrics-server-usage": {
    kind: "boolean",
    group: "Observability",
    default: false,
    help: "also export each running server's usage on /metrics (berth_server_cpu_percent, _memory_bytes, _memory_limit_bytes, _pids: one series per server and figure); hosts' usage is always exported",
  },
  "db-probe-interval": {
    kind: "integer",
    group: "Observability",
    arg: "S",
    default: 5,
    help: "seconds between write probes of the database; a failing probe turns grpc.health.v1 to NOT_SERVING and /readyz to 503",
    check: seconds,
  },

  help: { kind: "boolean", group: "General", short: "h", flagOnly: true, default: false, help: "show this help and exit" },
});

export type ManagerSettings = SettingValues<typeof MANAGER_SETTINGS>;

/** Reads the manager's settings (flags > environment > config file > defaults); throws ConfigError naming a bad one. */
export function loadManagerSettings(argv: readonly string[], env: NodeJS.ProcessEnv, readFile?: (path: string) => string): LoadedSettings<typeof MANAGER_SETTINGS> {
  const loaded = loadSettings(MANAGER_SETTINGS, { argv, env, configSetting: "config", ...(readFile ? { readFile } : {}) });
  const v = loaded.values;
  if (v["tls-auto"] && (v["tls-cert"] || v["tls-key"])) throw new ConfigError("use either --tls-auto or --tls-cert/--tls-key, not both");
  if (Boolean(v["tls-cert"]) !== Boolean(v["tls-key"])) throw new ConfigError("--tls-cert and --tls-key go together");
  const tls = v["tls-auto"] || Boolean(v["tls-cert"]);
  if (tls && v["advertise-url"]?.startsWith("http://")) {
    throw new ConfigError(`invalid --advertise-url (BERTH_ADVERTISE_URL) "${v["advertise-url"]}": must be https:// when the manager serves TLS`);
  }
  if (v["agent-timeout"] < 2 * v["heartbeat-interval"]) {
    throw new ConfigError(
      `--agent-timeout (${v["agent-timeout"]} s) must be at least twice --heartbeat-interval (${v["heartbeat-interval"]} s): a host would be marked offline whenever one heartbeat was late`,
    );
  }
  // From here on `store` is the store to open, whichever of --store and --db named it.
  const store = effectiveStoreUrl(v, loaded.sources);
  if (v["tls-auto"] && storeFilesDir(parseStoreUrl(store)) === undefined) {
    throw new ConfigError("--tls-auto keeps its CA next to the SQLite database file; use a database file (not :memory:), or --tls-cert/--tls-key");
  }
  return { ...loaded, values: { ...v, store } };
}

/** The per-token limits the settings ask for. */
export function limitsFrom(v: ManagerSettings): LimitsConfig {
  return { ratePerSecond: v["rate-limit"], burst: v["rate-burst"], maxStreams: v["max-streams"] };
}

/** The port's connection limits (http/listen.ts). */
export function httpLimitsFrom(v: ManagerSettings): HttpLimits {
  return {
    maxConnectionsPerIp: v["max-connections-per-ip"],
    maxConcurrentStreams: v["max-concurrent-streams"],
    maxStreamsPerIp: v["max-streams-per-ip"],
    idleTimeoutMs: v["idle-timeout"] * 1000,
    headersTimeoutMs: v["headers-timeout"] * 1000,
    requestTimeoutMs: v["request-timeout"] * 1000,
  };
}

/** Event retention, alert thresholds and webhooks. */
export function ledgerConfigFrom(v: ManagerSettings): LedgerConfig {
  return {
    eventMaxAgeSeconds: v["event-retention"],
    eventMaxRows: v["event-max-rows"],
    commandMaxAgeSeconds: v["command-retention"],
    enrollmentTokenMaxAgeSeconds: v["enrollment-token-retention"],
    alertHostOfflineSeconds: v["alert-host-offline"],
    alertNotConvergedSeconds: v["alert-not-converged"],
    alertDiskFreePercent: v["alert-disk-free"],
    alertIntervalSeconds: v["alert-interval"],
    ...(v.webhook.length ? { webhookUrls: v.webhook } : {}),
    ...(v["webhook-secret"] ? { webhookSecret: v["webhook-secret"] } : {}),
  };
}

/** `berth-manager --help`. */
export function managerUsage(): string {
  return `berth-manager: keeps berth's servers as declared

Usage: berth-manager [flags]
       berth-manager token create|list|revoke ...   (see: berth-manager token --help)
       berth-manager backup --to FILE [--store URL] (see: berth-manager backup --help)

Every setting is a flag, an environment variable and a key of the --config
file. A flag wins over the environment, the environment over the file, the
file over the default. Invalid settings stop the manager at start (exit 2)
with a message naming the setting.

${renderSettingsHelp(MANAGER_SETTINGS)}
The first start with an empty database prints an admin token once (also as the
line "berth-manager admin-token=<token>"); send it as
  authorization: Bearer <token>
HTTP probes: GET /healthz (the process answers), GET /readyz (listening and the
database writable), GET /metrics (Prometheus). Docs: docs/install.md, docs/metrics.md.
`;
}
