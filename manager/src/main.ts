import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { SecretKeyError } from "./store/secrets.js";
import { UnavailableError } from "./errors.js";
import { StoreUnavailableError } from "./store/open.js";
import { describeStoreUrl, parseStoreUrl, storeFilesDir, type StoreUrl } from "./store/store-url.js";
import { buildManager, splitHostPort } from "./manager.js";
import { createLogger, type LogFormat } from "./log.js";
import { runTokenCommand } from "./token-cli.js";
import { runBackupCommand } from "./backup-cli.js";
import { ConfigError } from "./config/settings.js";
import { httpLimitsFrom, ledgerConfigFrom, limitsFrom, loadManagerSettings, managerUsage, type ManagerSettings } from "./config/manager-settings.js";
import { ensureAutoTls, fingerprintHex, loadTlsFiles, subjectAltNames, type TlsMaterial } from "./tls/certificates.js";

// `berth-manager token ...` and `backup ...` work on the database and exit; anything else serves.
if (process.argv[2] === "token") process.exit(await runTokenCommand(process.argv.slice(3)));
if (process.argv[2] === "backup") process.exit(await runBackupCommand(process.argv.slice(3), process.env));

let settings: ManagerSettings;
let configFile: string | undefined;
try {
  const loaded = loadManagerSettings(process.argv.slice(2), process.env);
  settings = loaded.values;
  configFile = loaded.file;
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  fail(err.message);
}
if (settings.help) {
  process.stdout.write(managerUsage());
  process.exit(0);
}

const log = createLogger(settings["log-level"], "berth-manager", settings["log-format"] as LogFormat);
const listenAddr = settings.listen;
// Parsed (and checked) by loadManagerSettings already; --db PATH arrives here as sqlite://PATH.
const storeUrl = parseStoreUrl(settings.store);
const advertiseUrl = settings["advertise-url"];
const tls = await resolveTls(settings);
const startTimeoutSeconds = settings["start-timeout"];
const manager = await buildOrExplain({
  listen: listenAddr,
  store: settings.store,
  ...(settings["secret-key-file"] ? { secretKeyFile: settings["secret-key-file"] } : {}),
  ...(advertiseUrl ? { advertiseUrl } : {}),
  ...(tls ? { tls } : {}),
  ...webRoot(),
  limits: limitsFrom(settings),
  http: httpLimitsFrom(settings),
  ...(startTimeoutSeconds !== undefined ? { startTimeoutSeconds } : {}),
  deleteRetentionSeconds: settings["delete-retention"],
  crashBackoffSeconds: settings["crash-backoff"],
  transferOfflineGraceSeconds: settings["transfer-offline-grace"],
  resyncIntervalSeconds: settings["resync-interval"],
  containerLogs: { maxSizeBytes: settings["container-log-max-size"], maxFiles: settings["container-log-max-files"] },
  orphanGraceSeconds: settings["orphan-grace"],
  fileMaxUploadBytes: settings["file-max-upload-bytes"],
  defaultPidsLimit: settings["default-pids-limit"],
  metricsServerUsage: settings["metrics-server-usage"],
  ...(settings["sftp-listen"] ? { sftp: { listen: settings["sftp-listen"], ...(settings["sftp-host-key-file"] ? { hostKeyFile: settings["sftp-host-key-file"] } : {}) } } : {}),
  heartbeatIntervalSeconds: settings["heartbeat-interval"],
  agentTimeoutSeconds: settings["agent-timeout"],
  hostTermSeconds: settings["host-term"],
  backupRetentionIntervalSeconds: settings["backup-retention-interval"],
  savedQueryIntervalSeconds: settings["saved-query-interval"],
  adoptablePaths: settings["adoptable-path"].map((d) => d.replace(/\/+$/, "")),
  ledger: ledgerConfigFrom(settings),
  ...(settings["metrics-token"] ? { metricsToken: settings["metrics-token"] } : {}),
  dbProbeIntervalSeconds: settings["db-probe-interval"],
  log,
});
if (configFile) log.info({ file: configFile }, "settings read from the config file (flags and BERTH_* variables override it)");
const { url, sftp } = await manager.listen();
if (manager.initialAdminToken) {
  const t = manager.initialAdminToken;
  process.stdout.write(
    `berth-manager admin token: ${t}\n` +
      `  (created because the database had no token; shown only now, only its hash is stored)\n` +
      `  use: -H 'authorization: Bearer ${t}'\n` +
      `  lost it? on this host: berth-manager token create --role admin --name recovery ${recoveryStoreFlag(storeUrl)}\n` +
      `berth-manager admin-token=${t}\n`,
  );
}
if (tls) {
  process.stdout.write(`berth-manager tls ca=${tls.files.ca ?? tls.files.cert} ca-sha256=${fingerprintHex(tls.caFingerprint)}\n`);
}
// One machine-readable line for scripts and tests that start the manager.
if (sftp) process.stdout.write(`berth-manager sftp=${sftp.host.includes(":") ? `[${sftp.host}]` : sftp.host}:${sftp.port} host-key=${sftp.fingerprint}\n`);
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

/** buildManager, with a wrong or missing secret key or a store this build lacks said plainly (exit 2) instead of a stack trace. */
async function buildOrExplain(config: Parameters<typeof buildManager>[0]): ReturnType<typeof buildManager> {
  try {
    return await buildManager(config);
  } catch (err) {
    if (err instanceof SecretKeyError || err instanceof StoreUnavailableError || err instanceof UnavailableError) fail(err.message);
    throw err;
  }
}

/** How the recovery hint names this manager's store: --db for a SQLite file (the common case), else --store. */
function recoveryStoreFlag(url: StoreUrl): string {
  return url.engine === "sqlite" ? `--db ${url.path}` : `--store '${describeStoreUrl(url)}'`;
}

function fail(message: string): never {
  process.stderr.write(`berth-manager: ${message}\n`);
  process.exit(2);
}

/**
 * The dashboard: --web-root, else the copy a packaged manager carries next to
 * its bundle (dist/web), else buildManager's default (the repository's web/).
 */
function webRoot(): { webRoot?: string } {
  if (settings["web-root"]) return { webRoot: settings["web-root"] };
  const bundled = fileURLToPath(new URL("./web", import.meta.url));
  return existsSync(join(bundled, "index.html")) ? { webRoot: bundled } : {};
}

function isLoopback(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/**
 * TLS from --tls-cert/--tls-key or --tls-auto. Without TLS the manager only
 * listens on loopback unless --insecure says something else protects the link:
 * tokens and agent secrets would otherwise cross the network in the clear.
 */
async function resolveTls(v: ManagerSettings): Promise<TlsMaterial | undefined> {
  const [host] = splitHostPort(v.listen);
  const certPath = v["tls-cert"];
  const keyPath = v["tls-key"];
  if (certPath && keyPath) {
    try {
      return await loadTlsFiles(certPath, keyPath);
    } catch (err) {
      fail((err as Error).message);
    }
  }
  if (v["tls-auto"]) {
    const extra = [...v["tls-san"]];
    if (v["advertise-url"]) extra.push(new URL(v["advertise-url"]).hostname);
    // loadManagerSettings refuses --tls-auto without a database file to keep tls/ beside.
    const dir = join(storeFilesDir(parseStoreUrl(v.store)) ?? ".", "tls");
    try {
      return await ensureAutoTls({ dir, sans: subjectAltNames(host, extra), label: v.listen, log: (msg) => log.info({ dir }, msg) });
    } catch (err) {
      fail(`--tls-auto: ${(err as Error).message}`);
    }
  }
  if (!isLoopback(host) && !v.insecure) {
    fail(
      `refusing to serve plaintext on ${v.listen}: operator tokens and agent secrets would cross the network unencrypted. ` +
        "Use --tls-auto (a private CA that enrollment tokens pin), or --tls-cert/--tls-key, " +
        "or --insecure if a VPN or a TLS-terminating proxy protects the link",
    );
  }
  return undefined;
}
