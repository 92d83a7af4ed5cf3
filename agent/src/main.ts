import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { Agent, AGENT_VERSION } from "./agent.js";
import { DEFAULT_RESERVE_BYTES } from "./files/server-files.js";
import { enrolledManagerUrls, loadCredentials, saveCredentials } from "./credentials.js";
import { DataRoot } from "./data/data-root.js";
import { BackupDirs } from "./data/backup-dir.js";
import { isUnreachable } from "./link/failover.js";
import { enroll, errorDetails } from "./link/manager-link.js";
import { ManagerUrlError, parseManagerUrls } from "./link/manager-urls.js";
import { fetchPinnedCa, parseEnrollmentToken, PinMismatchError } from "./link/pinning.js";
import { DockerRuntime } from "./runtime/docker-runtime.js";

const USAGE = `berth-agent: runs berth's servers on this Docker host

Usage:
  berth-agent enroll --manager URL[,URL...] --token TOKEN [--state-dir DIR]
  berth-agent run [--manager URL[,URL...]] [--state-dir DIR] [--data-root DIR] [--docker-socket PATH]

Flags (environment variable in brackets, then default):
  --manager URL[,URL...] manager URL, e.g. https://manager.example:7000 [BERTH_MANAGER], or several
                         managers sharing one store, comma-separated: the agent dials them in order
                         and fails over to the next. enroll stores them in the credential file;
                         given to run, they replace the enrolled list (default: the enrolled list)
  --token TOKEN          single-use enrollment token from CreateEnrollmentToken [BERTH_ENROLL_TOKEN].
                         A TLS manager's token carries its CA fingerprint: enroll checks it
                         before sending the token and keeps that CA as the only trust root
  --state-dir DIR        where the credential file lives [BERTH_STATE_DIR] /var/lib/berth-agent
  --data-root DIR        servers' data directories live under it [BERTH_DATA_ROOT] /var/lib/berth
  --backup-dir DIR[,DIR...] the only directories backup archives are written to (a directory backup
                         target must be one of them or inside one) [BERTH_BACKUP_DIRS] /var/lib/berth-backups
  --docker-socket PATH   Docker API socket [DOCKER_HOST unix://...] /var/run/docker.sock
  --inventory-interval S full inventory period in seconds [BERTH_INVENTORY_INTERVAL] 30
  --reconnect-max S      longest wait between rounds of reconnect attempts, in seconds (the wait
                         doubles from 0.5 s up to it, jittered) [BERTH_RECONNECT_MAX] 30
  --file-reserve BYTES   free bytes on the data root that file uploads, copies and extractions
                         (FileService) never use [BERTH_FILE_RESERVE] 268435456 (256 MiB)
  --data-size-interval S a data directory that changed (a command, a file operation, an exit) is
                         measured again at most this often, in seconds (disk quotas see sizes this
                         late) [BERTH_DATA_SIZE_INTERVAL] 60
  --usage-interval S     how often the host's and the running containers' usage (CPU, memory,
                         network, block IO, pids) is sampled and sent, in seconds; 0: never
                         [BERTH_USAGE_INTERVAL] 10
  --log-level LEVEL      trace|debug|info|warn|error [BERTH_LOG_LEVEL] info

Exit codes: 0 stopped; 1 enrollment failed; 2 bad usage; 78 do not restart (credential
revoked, CA pin mismatch, data root reached through a symlink).
What the agent will and will not do on this host: docs/agent.md.
`;

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    manager: { type: "string" },
    token: { type: "string" },
    "state-dir": { type: "string" },
    "data-root": { type: "string" },
    "backup-dir": { type: "string", multiple: true },
    "docker-socket": { type: "string" },
    "inventory-interval": { type: "string" },
    "reconnect-max": { type: "string" },
    "file-reserve": { type: "string" },
    "usage-interval": { type: "string" },
    "data-size-interval": { type: "string" },
    "log-level": { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});

const cmd = positionals[0];
if (values.help || !cmd) {
  process.stdout.write(USAGE);
  process.exit(values.help ? 0 : 2);
}
const log = pino({ level: values["log-level"] ?? process.env.BERTH_LOG_LEVEL ?? "info", name: "berth-agent" });
const stateDir = values["state-dir"] ?? process.env.BERTH_STATE_DIR ?? "/var/lib/berth-agent";

function fail(message: string, code = 2): never {
  process.stderr.write(`berth-agent: ${message}\n`);
  process.exit(code);
}

/** `--manager` (or BERTH_MANAGER) split and checked; a bad one is a usage error (exit 2) naming it. */
function managerUrlsOf(value: string): string[] {
  try {
    return parseManagerUrls(value);
  } catch (err) {
    if (err instanceof ManagerUrlError) fail(err.message);
    throw err;
  }
}

if (cmd === "enroll") {
  const managerSetting = values.manager ?? process.env.BERTH_MANAGER;
  const token = values.token ?? process.env.BERTH_ENROLL_TOKEN;
  if (!managerSetting) fail("enroll needs --manager URL");
  if (!token) fail("enroll needs --token TOKEN (from HostService.CreateEnrollmentToken)");
  const { caFingerprint } = parseEnrollmentToken(token);
  const managerUrls = managerUrlsOf(managerSetting);
  const plain = managerUrls.find((u) => !u.startsWith("https:"));
  if (caFingerprint && plain) {
    fail(`this enrollment token pins the manager's TLS certificate, so --manager must be an https:// URL (got ${plain})`);
  }
  // Tried in order: a manager that cannot be reached is skipped; any answer (even a refusal) is final,
  // since every manager shares the store and would answer the same.
  const unreachable: string[] = [];
  for (const managerUrl of managerUrls) {
    const url = new URL(managerUrl);
    let caPem: string | undefined;
    if (caFingerprint) {
      try {
        caPem = await fetchPinnedCa(url.hostname.replace(/^\[|\]$/g, ""), Number(url.port || 443), caFingerprint);
        log.info({ manager: managerUrl }, "the manager's CA matches the enrollment token's fingerprint");
      } catch (err) {
        // 78 (EX_CONFIG) for a pin mismatch: retrying the same token and URL cannot help.
        if (err instanceof PinMismatchError) fail(`refusing to enroll: ${err.message}`, 78);
        if (managerUrls.length === 1) fail(`refusing to enroll: ${(err as Error).message}`, 1);
        unreachable.push(`${managerUrl}: ${(err as Error).message}`);
        log.warn({ manager: managerUrl, err: (err as Error).message }, "manager unreachable; trying the next one");
        continue;
      }
    }
    try {
      const r = await enroll(managerUrl, token, hostname(), AGENT_VERSION, caPem);
      const path = await saveCredentials(
        stateDir,
        { managerUrl, ...(managerUrls.length > 1 ? { managerUrls } : {}), hostId: r.hostId, secret: r.secret, managerId: r.managerId },
        caPem,
      );
      process.stdout.write(`enrolled as ${r.hostId}${managerUrls.length > 1 ? ` through ${managerUrl}` : ""}; credentials in ${path}. Start the agent: berth-agent run --state-dir ${stateDir}\n`);
      process.exit(0);
    } catch (err) {
      const details = errorDetails(err as { details?: string });
      if (managerUrls.length > 1 && isUnreachable((err as { code?: number }).code)) {
        unreachable.push(`${managerUrl}: ${details}`);
        log.warn({ manager: managerUrl, err: details }, "manager unreachable; trying the next one");
        continue;
      }
      let hint = "";
      if (/altnames|does not match certificate/i.test(details)) {
        hint = `; the manager's certificate does not name "${url.hostname}": add it on the manager with --tls-san ${url.hostname} (or use a name it has)`;
      } else if (/certificate/i.test(details) && !caFingerprint) {
        hint = "; this token carries no CA fingerprint, so the manager's certificate must be trusted by this host (managers with --tls-auto issue tokens that pin their CA)";
      }
      fail(`enrollment failed${managerUrls.length > 1 ? ` at ${managerUrl}` : ""}: ${details}${hint}`, 1);
    }
  }
  fail(`enrollment failed: no manager could be reached (${unreachable.join("; ")}); check the URLs and that a manager runs`, 1);
} else if (cmd === "run") {
  let creds;
  try {
    creds = await loadCredentials(stateDir);
  } catch (err) {
    fail((err as Error).message);
  }
  const dockerHost = process.env.DOCKER_HOST;
  const socketPath = values["docker-socket"] ?? (dockerHost?.startsWith("unix://") ? dockerHost.slice(7) : "/var/run/docker.sock");
  const interval = Number(values["inventory-interval"] ?? process.env.BERTH_INVENTORY_INTERVAL ?? 30);
  if (!Number.isFinite(interval) || interval < 1) fail("--inventory-interval must be a number of seconds >= 1");
  const reconnectSetting = values["reconnect-max"] ?? process.env.BERTH_RECONNECT_MAX ?? "30";
  const reconnectMax = Number(reconnectSetting);
  if (reconnectSetting.trim() === "" || !Number.isFinite(reconnectMax) || reconnectMax <= 0) fail(`--reconnect-max must be a number of seconds above 0, e.g. 30 or 0.5 (got "${reconnectSetting}")`);
  const reserveSetting = values["file-reserve"] ?? process.env.BERTH_FILE_RESERVE ?? String(DEFAULT_RESERVE_BYTES);
  const fileReserveBytes = Number(reserveSetting);
  if (reserveSetting.trim() === "" || !Number.isSafeInteger(fileReserveBytes) || fileReserveBytes < 0) fail(`--file-reserve must be a whole number of bytes >= 0, e.g. 268435456 (got "${reserveSetting}")`);
  const usageSetting = values["usage-interval"] ?? process.env.BERTH_USAGE_INTERVAL ?? "10";
  const usageInterval = Number(usageSetting);
  if (usageSetting.trim() === "" || !Number.isFinite(usageInterval) || usageInterval < 0 || (usageInterval > 0 && usageInterval < 1) || usageInterval > 3600) {
    fail(`--usage-interval must be 0 (never) or a number of seconds from 1 to 3600, e.g. 10 (got "${usageSetting}")`);
  }
  const sizeSetting = values["data-size-interval"] ?? process.env.BERTH_DATA_SIZE_INTERVAL ?? "60";
  const sizeInterval = Number(sizeSetting);
  if (sizeSetting.trim() === "" || !Number.isFinite(sizeInterval) || sizeInterval < 1 || sizeInterval > 86400) {
    fail(`--data-size-interval must be a number of seconds from 1 to 86400, e.g. 60 (got "${sizeSetting}")`);
  }
  let dataRoot: DataRoot;
  try {
    dataRoot = new DataRoot(values["data-root"] ?? process.env.BERTH_DATA_ROOT ?? "/var/lib/berth");
  } catch (err) {
    fail((err as Error).message);
  }
  const backupSetting = values["backup-dir"] ?? (process.env.BERTH_BACKUP_DIRS ? [process.env.BERTH_BACKUP_DIRS] : ["/var/lib/berth-backups"]);
  let backupDirs: BackupDirs;
  try {
    backupDirs = new BackupDirs(backupSetting.flatMap((d) => d.split(",")).map((d) => d.trim()).filter(Boolean));
  } catch (err) {
    fail((err as Error).message);
  }
  // --manager on run replaces the enrolled list (add or move managers without enrolling again).
  const managerSetting = values.manager ?? process.env.BERTH_MANAGER;
  const managerUrls = managerSetting !== undefined ? managerUrlsOf(managerSetting) : enrolledManagerUrls(creds);
  const plain = managerUrls.find((u) => !u.startsWith("https:"));
  if (managerSetting !== undefined && creds.caPem && plain) {
    fail(`this agent pinned its manager's CA at enrollment, so every --manager URL must be https:// (got ${plain})`);
  }
  // caPem travels with the credential to the link (ManagerLink), which trusts only it for https.
  const credential = { hostId: creds.hostId, secret: creds.secret, ...(creds.caPem ? { caPem: creds.caPem } : {}) };
  const agent = new Agent({
    managerUrls,
    credential,
    runtime: new DockerRuntime({ socketPath }),
    dataRoot,
    backupDirs,
    log,
    inventoryIntervalMs: interval * 1000,
    reconnectMaxMs: reconnectMax * 1000,
    fileReserveBytes,
    usageIntervalMs: usageInterval * 1000,
    dataSizeMinIntervalMs: sizeInterval * 1000,
  });
  try {
    await agent.start();
  } catch (err) {
    // e.g. a data root reached through a symlink: a configuration error, not worth restarting for.
    fail((err as Error).message, 78);
  }
  log.info({ host: creds.hostId, manager: managerUrls.join(","), dataRoot: dataRoot.root, docker: socketPath }, "agent started");
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => agent.stop());
  const end = await agent.done;
  const revokedReason = end.revoked ? end.message : undefined;
  if (revokedReason !== undefined) {
    log.error({ reason: revokedReason }, "agent stopped: the manager refused this host's credential; exiting with code 78. Re-enroll with `berth-agent enroll`");
  }
  // 78 = EX_CONFIG: systemd's RestartPreventExitStatus keeps a revoked agent from looping.
  process.exit(revokedReason !== undefined ? 78 : 0);
} else {
  fail(`unknown command "${cmd}"\n${USAGE}`);
}
