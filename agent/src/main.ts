import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { Agent, AGENT_VERSION } from "./agent.js";
import { loadCredentials, saveCredentials } from "./credentials.js";
import { DataRoot } from "./data/data-root.js";
import { enroll, errorDetails } from "./link/manager-link.js";
import { fetchPinnedCa, parseEnrollmentToken, PinMismatchError } from "./link/pinning.js";
import { DockerRuntime } from "./runtime/docker-runtime.js";

const USAGE = `berth-agent: runs berth's servers on this Docker host

Usage:
  berth-agent enroll --manager URL --token TOKEN [--state-dir DIR]
  berth-agent run [--state-dir DIR] [--data-root DIR] [--docker-socket PATH]

Flags (environment variable in brackets, then default):
  --manager URL          manager URL, e.g. https://manager.example:7000 [BERTH_MANAGER]
  --token TOKEN          single-use enrollment token from CreateEnrollmentToken [BERTH_ENROLL_TOKEN].
                         A TLS manager's token carries its CA fingerprint: enroll checks it
                         before sending the token and keeps that CA as the only trust root
  --state-dir DIR        where the credential file lives [BERTH_STATE_DIR] /var/lib/berth-agent
  --data-root DIR        servers' data directories live under it [BERTH_DATA_ROOT] /var/lib/berth
  --docker-socket PATH   Docker API socket [DOCKER_HOST unix://...] /var/run/docker.sock
  --inventory-interval S full inventory period in seconds [BERTH_INVENTORY_INTERVAL] 30
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
    "docker-socket": { type: "string" },
    "inventory-interval": { type: "string" },
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

if (cmd === "enroll") {
  const managerUrl = values.manager ?? process.env.BERTH_MANAGER;
  const token = values.token ?? process.env.BERTH_ENROLL_TOKEN;
  if (!managerUrl) fail("enroll needs --manager URL");
  if (!token) fail("enroll needs --token TOKEN (from HostService.CreateEnrollmentToken)");
  const { caFingerprint } = parseEnrollmentToken(token);
  let url: URL;
  try {
    url = new URL(managerUrl);
  } catch {
    fail(`--manager "${managerUrl}" is not a URL; use e.g. https://manager.example:7000`);
  }
  if (caFingerprint && url.protocol !== "https:") {
    fail(`this enrollment token pins the manager's TLS certificate, so --manager must be an https:// URL (got ${managerUrl})`);
  }
  let caPem: string | undefined;
  if (caFingerprint) {
    try {
      caPem = await fetchPinnedCa(url.hostname.replace(/^\[|\]$/g, ""), Number(url.port || 443), caFingerprint);
      log.info({ manager: managerUrl }, "the manager's CA matches the enrollment token's fingerprint");
    } catch (err) {
      // 78 (EX_CONFIG) for a pin mismatch: retrying the same token and URL cannot help.
      fail(`refusing to enroll: ${(err as Error).message}`, err instanceof PinMismatchError ? 78 : 1);
    }
  }
  try {
    const r = await enroll(managerUrl, token, hostname(), AGENT_VERSION, caPem);
    const path = await saveCredentials(stateDir, { managerUrl, hostId: r.hostId, secret: r.secret, managerId: r.managerId }, caPem);
    process.stdout.write(`enrolled as ${r.hostId}; credentials in ${path}. Start the agent: berth-agent run --state-dir ${stateDir}\n`);
    process.exit(0);
  } catch (err) {
    const details = errorDetails(err as { details?: string });
    let hint = "";
    if (/altnames|does not match certificate/i.test(details)) {
      hint = `; the manager's certificate does not name "${url.hostname}": add it on the manager with --tls-san ${url.hostname} (or use a name it has)`;
    } else if (/certificate/i.test(details) && !caFingerprint) {
      hint = "; this token carries no CA fingerprint, so the manager's certificate must be trusted by this host (managers with --tls-auto issue tokens that pin their CA)";
    }
    fail(`enrollment failed: ${details}${hint}`, 1);
  }
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
  let dataRoot: DataRoot;
  try {
    dataRoot = new DataRoot(values["data-root"] ?? process.env.BERTH_DATA_ROOT ?? "/var/lib/berth");
  } catch (err) {
    fail((err as Error).message);
  }
  // caPem travels with the credential to the link (ManagerLink), which trusts only it for https.
  const credential = { hostId: creds.hostId, secret: creds.secret, ...(creds.caPem ? { caPem: creds.caPem } : {}) };
  const agent = new Agent({
    managerUrl: creds.managerUrl,
    credential,
    runtime: new DockerRuntime({ socketPath }),
    dataRoot,
    log,
    inventoryIntervalMs: interval * 1000,
  });
  try {
    await agent.start();
  } catch (err) {
    // e.g. a data root reached through a symlink: a configuration error, not worth restarting for.
    fail((err as Error).message, 78);
  }
  log.info({ host: creds.hostId, manager: creds.managerUrl, dataRoot: dataRoot.root, docker: socketPath }, "agent started");
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
