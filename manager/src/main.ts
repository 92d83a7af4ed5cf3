import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { buildManager, splitHostPort } from "./manager.js";
import { createLogger } from "./log.js";
import { runTokenCommand } from "./token-cli.js";
import { LEDGER_FLAGS, LEDGER_USAGE, ledgerConfigFromFlags } from "./ledger/services.js";
import { ensureAutoTls, fingerprintHex, loadTlsFiles, subjectAltNames, type TlsMaterial } from "./tls/certificates.js";

// `berth-manager token ...` works on the database and exits; anything else serves.
if (process.argv[2] === "token") process.exit(runTokenCommand(process.argv.slice(3)));

const USAGE = `berth-manager: keeps berth's servers as declared

Usage: berth-manager [flags]
       berth-manager token create|list|revoke ...   (see: berth-manager token --help)

Flags (environment variable in brackets, then default):
  --listen HOST:PORT     address to serve gRPC, gRPC-Web, Connect and the dashboard
                         [BERTH_LISTEN] 127.0.0.1:7000
  --db PATH              SQLite database file [BERTH_DB] ./data/berth.db
  --advertise-url URL    URL agents dial, used in enrollment commands
                         [BERTH_ADVERTISE_URL] http(s)://<listen>
  --start-timeout S      seconds a start may take before the server is Failed/StartTimeout
                         [BERTH_START_TIMEOUT] 180
  --delete-retention S   seconds a deleted server's record is kept (data always stays)
                         [BERTH_DELETE_RETENTION] 86400
  --crash-backoff S      first delay before restarting a crashed server; doubles per crash
                         in 10 minutes, capped at 30x [BERTH_CRASH_BACKOFF] 10
  --tls-auto             serve TLS with a private CA and server certificate created in
                         <db dir>/tls on first start (needs openssl) [BERTH_TLS_AUTO=1]
  --tls-cert PATH        PEM server certificate followed by its chain; the LAST one is
                         the CA agents pin [BERTH_TLS_CERT]
  --tls-key PATH         PEM private key of --tls-cert [BERTH_TLS_KEY]
  --tls-san NAME         extra DNS name or IP for the --tls-auto certificate; repeatable
                         [BERTH_TLS_SAN, comma-separated]
  --insecure             allow plaintext on a non-loopback address (only behind a VPN or
                         a TLS proxy) [BERTH_INSECURE=1]
  --rate-limit N         mutating calls per second per token [BERTH_RATE_LIMIT] 20
  --rate-burst N         burst of mutating calls per token [BERTH_RATE_BURST] 50
  --max-streams N        open streams (watches, logs) per token [BERTH_MAX_STREAMS] 32
${LEDGER_USAGE}  --log-level LEVEL      trace|debug|info|warn|error [BERTH_LOG_LEVEL] info
  -h, --help             show this help

The first start with an empty database prints an admin token once (also as the
line "berth-manager admin-token=<token>"); send it as
  authorization: Bearer <token>
`;

const { values } = parseArgs({
  options: {
    listen: { type: "string" },
    db: { type: "string" },
    "advertise-url": { type: "string" },
    "log-level": { type: "string" },
    "start-timeout": { type: "string" },
    "delete-retention": { type: "string" },
    "crash-backoff": { type: "string" },
    "tls-auto": { type: "boolean" },
    "tls-cert": { type: "string" },
    "tls-key": { type: "string" },
    "tls-san": { type: "string", multiple: true },
    insecure: { type: "boolean" },
    "rate-limit": { type: "string" },
    "rate-burst": { type: "string" },
    "max-streams": { type: "string" },
    help: { type: "boolean", short: "h" },
    ...LEDGER_FLAGS,
  },
  strict: true,
});

if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}

const logLevel = values["log-level"] ?? process.env.BERTH_LOG_LEVEL ?? "info";
if (!["trace", "debug", "info", "warn", "error", "fatal", "silent"].includes(logLevel)) {
  process.stderr.write(`invalid --log-level "${logLevel}": use trace, debug, info, warn or error\n`);
  process.exit(2);
}
const log = createLogger(logLevel, "berth-manager");

/** Parses a whole number of seconds from a flag or its environment variable; exits naming the setting. */
function seconds(flag: string, env: string): number | undefined {
  const raw = values[flag as keyof typeof values] ?? process.env[env];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) {
    process.stderr.write(`invalid --${flag} (${env}) "${String(raw)}": must be a whole number of seconds >= 1\n`);
    process.exit(2);
  }
  return n;
}
const startTimeoutSeconds = seconds("start-timeout", "BERTH_START_TIMEOUT");
const deleteRetentionSeconds = seconds("delete-retention", "BERTH_DELETE_RETENTION");
const crashBackoffSeconds = seconds("crash-backoff", "BERTH_CRASH_BACKOFF");
const advertiseUrl = values["advertise-url"] ?? process.env.BERTH_ADVERTISE_URL;
const listenAddr = values.listen ?? process.env.BERTH_LISTEN ?? "127.0.0.1:7000";
const dbPath = values.db ?? process.env.BERTH_DB ?? "./data/berth.db";
const tls = await resolveTls();
if (tls && advertiseUrl?.startsWith("http://")) fail(`--advertise-url ${advertiseUrl} must be https:// when the manager serves TLS`);
const manager = buildManager({
  listen: listenAddr,
  dbPath,
  ...(advertiseUrl ? { advertiseUrl } : {}),
  ...(tls ? { tls } : {}),
  limits: {
    ...optional("ratePerSecond", count("rate-limit", "BERTH_RATE_LIMIT")),
    ...optional("burst", count("rate-burst", "BERTH_RATE_BURST")),
    ...optional("maxStreams", count("max-streams", "BERTH_MAX_STREAMS")),
  },
  ...(startTimeoutSeconds ? { startTimeoutSeconds } : {}),
  ...(deleteRetentionSeconds ? { deleteRetentionSeconds } : {}),
  ...(crashBackoffSeconds ? { crashBackoffSeconds } : {}),
  ledger: (() => {
    try {
      return ledgerConfigFromFlags(values);
    } catch (err) {
      fail((err as Error).message);
    }
  })(),
  log,
});
const { url } = await manager.listen();
if (manager.initialAdminToken) {
  const t = manager.initialAdminToken;
  process.stdout.write(
    `berth-manager admin token: ${t}\n` +
      `  (created because the database had no token; shown only now, only its hash is stored)\n` +
      `  use: -H 'authorization: Bearer ${t}'\n` +
      `  lost it? on this host: berth-manager token create --role admin --name recovery --db ${dbPath}\n` +
      `berth-manager admin-token=${t}\n`,
  );
}
if (tls) {
  process.stdout.write(`berth-manager tls ca=${tls.files.ca ?? tls.files.cert} ca-sha256=${fingerprintHex(tls.caFingerprint)}\n`);
}
// One machine-readable line for scripts and tests that start the manager.
process.stdout.write(`berth-manager ready url=${url}\n`);

let stopping = false;
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.on(sig, () => {
    if (stopping) return;
    stopping = true;
    log.info({ signal: sig }, "shutting down");
    manager.close().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, "shutdown failed");
        process.exit(1);
      },
    );
  });
}

function fail(message: string): never {
  process.stderr.write(`berth-manager: ${message}\n`);
  process.exit(2);
}

/** A whole number >= 1 from a flag or its environment variable; exits naming the setting. */
function count(flag: "rate-limit" | "rate-burst" | "max-streams", env: string): number | undefined {
  const raw = values[flag] ?? process.env[env];
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) fail(`invalid --${flag} (${env}) "${raw}": must be a whole number >= 1`);
  return n;
}

function optional<K extends string>(key: K, v: number | undefined): Partial<Record<K, number>> {
  return v === undefined ? {} : ({ [key]: v } as Record<K, number>);
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * TLS from --tls-cert/--tls-key or --tls-auto. Without TLS the manager only
 * listens on loopback unless --insecure says something else protects the link:
 * tokens and agent secrets would otherwise cross the network in the clear.
 */
async function resolveTls(): Promise<TlsMaterial | undefined> {
  const envFlag = (name: string) => ["1", "true", "yes"].includes((process.env[name] ?? "").toLowerCase());
  const auto = values["tls-auto"] ?? envFlag("BERTH_TLS_AUTO");
  const certPath = values["tls-cert"] ?? process.env.BERTH_TLS_CERT;
  const keyPath = values["tls-key"] ?? process.env.BERTH_TLS_KEY;
  const insecure = values.insecure ?? envFlag("BERTH_INSECURE");
  let host: string;
  try {
    [host] = splitHostPort(listenAddr);
  } catch (err) {
    fail((err as Error).message);
  }
  if (auto && (certPath || keyPath)) fail("use either --tls-auto or --tls-cert/--tls-key, not both");
  if (Boolean(certPath) !== Boolean(keyPath)) fail("--tls-cert and --tls-key go together");
  if (certPath && keyPath) {
    try {
      return await loadTlsFiles(certPath, keyPath);
    } catch (err) {
      fail((err as Error).message);
    }
  }
  if (auto) {
    if (dbPath === ":memory:") fail("--tls-auto keeps its CA next to the database; use a database file, not :memory:");
    const extra = [...(values["tls-san"] ?? []), ...(process.env.BERTH_TLS_SAN ?? "").split(",")];
    if (advertiseUrl) {
      try {
        extra.push(new URL(advertiseUrl).hostname);
      } catch {
        fail(`--advertise-url "${advertiseUrl}" is not a URL`);
      }
    }
    try {
      return await ensureAutoTls({
        dir: join(dirname(dbPath), "tls"),
        sans: subjectAltNames(host, extra),
        label: listenAddr,
        log: (msg) => log.info({ dir: join(dirname(dbPath), "tls") }, msg),
      });
    } catch (err) {
      fail(`--tls-auto: ${(err as Error).message}`);
    }
  }
  if (!isLoopback(host) && !insecure) {
    fail(
      `refusing to serve plaintext on ${listenAddr}: operator tokens and agent secrets would cross the network unencrypted. ` +
        "Use --tls-auto (a private CA that enrollment tokens pin), or --tls-cert/--tls-key, " +
        "or --insecure if a VPN or a TLS-terminating proxy protects the link",
    );
  }
  return undefined;
}
