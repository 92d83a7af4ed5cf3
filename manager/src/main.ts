import { parseArgs } from "node:util";
import { buildManager } from "./manager.js";
import { createLogger } from "./log.js";

const USAGE = `berth-manager: keeps berth's servers as declared

Usage: berth-manager [flags]

Flags (environment variable in brackets, then default):
  --listen HOST:PORT     address to serve gRPC, gRPC-Web, Connect and the dashboard
                         [BERTH_LISTEN] 127.0.0.1:7000
  --db PATH              SQLite database file [BERTH_DB] ./data/berth.db
  --advertise-url URL    URL agents dial, used in enrollment commands
                         [BERTH_ADVERTISE_URL] http://<listen>
  --log-level LEVEL      trace|debug|info|warn|error [BERTH_LOG_LEVEL] info
  -h, --help             show this help
`;

const { values } = parseArgs({
  options: {
    listen: { type: "string" },
    db: { type: "string" },
    "advertise-url": { type: "string" },
    "log-level": { type: "string" },
    help: { type: "boolean", short: "h" },
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
const advertiseUrl = values["advertise-url"] ?? process.env.BERTH_ADVERTISE_URL;
const manager = buildManager({
  listen: values.listen ?? process.env.BERTH_LISTEN ?? "127.0.0.1:7000",
  dbPath: values.db ?? process.env.BERTH_DB ?? "./data/berth.db",
  ...(advertiseUrl ? { advertiseUrl } : {}),
  log,
});
const { url } = await manager.listen();
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
