import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { pino } from "pino";
import { Agent, AGENT_VERSION } from "./agent.js";
import { loadCredentials, saveCredentials } from "./credentials.js";
import { DataRoot } from "./data/data-root.js";
import { enroll } from "./link/manager-link.js";
import { DockerRuntime } from "./runtime/docker-runtime.js";

const USAGE = `berth-agent: runs berth's servers on this Docker host

Usage:
  berth-agent enroll --manager URL --token TOKEN [--state-dir DIR]
  berth-agent run [--state-dir DIR] [--data-root DIR] [--docker-socket PATH]

Flags (environment variable in brackets, then default):
  --manager URL          manager URL, e.g. http://manager.example:7000 [BERTH_MANAGER]
  --token TOKEN          single-use enrollment token from CreateEnrollmentToken [BERTH_ENROLL_TOKEN]
  --state-dir DIR        where the credential file lives [BERTH_STATE_DIR] /var/lib/berth-agent
  --data-root DIR        servers' data directories live under it [BERTH_DATA_ROOT] /var/lib/berth
  --docker-socket PATH   Docker API socket [DOCKER_HOST unix://...] /var/run/docker.sock
  --inventory-interval S full inventory period in seconds [BERTH_INVENTORY_INTERVAL] 30
  --log-level LEVEL      trace|debug|info|warn|error [BERTH_LOG_LEVEL] info
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
  try {
    const r = await enroll(managerUrl, token, hostname(), AGENT_VERSION);
    const path = await saveCredentials(stateDir, { managerUrl, hostId: r.hostId, secret: r.secret, managerId: r.managerId });
    process.stdout.write(`enrolled as ${r.hostId}; credentials in ${path}. Start the agent: berth-agent run --state-dir ${stateDir}\n`);
    process.exit(0);
  } catch (err) {
    fail(`enrollment failed: ${(err as { details?: string }).details ?? String(err)}`, 1);
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
  const agent = new Agent({
    managerUrl: creds.managerUrl,
    credential: { hostId: creds.hostId, secret: creds.secret },
    runtime: new DockerRuntime({ socketPath }),
    dataRoot,
    log,
    inventoryIntervalMs: interval * 1000,
  });
  await agent.start();
  log.info({ host: creds.hostId, manager: creds.managerUrl, dataRoot: dataRoot.root, docker: socketPath }, "agent started");
  for (const sig of ["SIGINT", "SIGTERM"] as const) process.on(sig, () => agent.stop());
  const end = await agent.done;
  // 78 = EX_CONFIG: systemd's RestartPreventExitStatus keeps a revoked agent from looping.
  process.exit(end.revoked ? 78 : 0);
} else {
  fail(`unknown command "${cmd}"\n${USAGE}`);
}
