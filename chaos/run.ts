/**
 * `npm run chaos -- --minutes M --seed S`: a fault campaign against real
 * processes and real Docker (see campaign.ts). Exits 1 when an invariant was
 * violated, printing how to replay the seed.
 */
import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";
import { formatReport, runCampaign } from "./campaign.js";

const USAGE = `Usage: npm run chaos -- [--minutes M] [--seed S] [--clients N] [--hosts N] [--store sqlite|postgres] [--managers N]
                      [--name NAME] [--keep] [--keep-engines]

  --minutes M      how long faults and operations run (default 5); quiescing and checks come after
  --seed S         replay a campaign (default: a random seed, printed)
  --clients N      concurrent operator clients (default 4)
  --hosts N        hosts, each a private dockerd and an agent (default 2)
  --store S        sqlite (default): one manager, its database on a tmpfs of its own;
                   postgres: a private PostgreSQL server (initdb + pg_ctl, loopback) started
                   for the campaign, one database, every manager on it with one secret key file
  --managers N     managers on the one database (default 1; more than one needs --store postgres).
                   Agents are enrolled with every manager's URL (through a proxy per agent and
                   manager) and fail over; operators spread their calls over the live managers
  faults: manager-kill (kill -9, restarted on its port; with several managers, one at random),
          agent-kill, link-cut (with several managers, sometimes the link to one only),
          dockerd-restart, container-stop/kill/rm, data-delete; on sqlite db-disk-full (the
          tmpfs filled); on postgres database-restart (pg_ctl restart -m fast, or stopped
          5-30 s then started) instead: a full disk is a SQLite-file fault, not injected there
  --name NAME      prefix of the private dockerds (default chaos); two campaigns at once need two names
  --port-base P    first published host port (default 47100)
  --keep           keep the work directory (logs, database) even without violations
  --keep-engines   leave the private dockerds running for the next campaign
  --plant          self-test of the checker: after quiescing, remove a container and a data
                   directory behind a frozen agent's back; the run must then report violations

Needs root (a tmpfs for the manager's database, private dockerds, PostgreSQL run as
the postgres user). Exit code 1 when an invariant was violated, 2 on a usage error.
`;

const { values } = parseArgs({
  options: {
    minutes: { type: "string" },
    seed: { type: "string" },
    clients: { type: "string" },
    hosts: { type: "string" },
    store: { type: "string" },
    managers: { type: "string" },
    name: { type: "string" },
    "port-base": { type: "string" },
    keep: { type: "boolean" },
    "keep-engines": { type: "boolean" },
    plant: { type: "boolean" },
    help: { type: "boolean", short: "h" },
  },
});
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const num = (v: string | undefined, d: number, what: string): number => {
  if (v === undefined) return d;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) {
    process.stderr.write(`chaos: --${what} must be a positive number\n\n${USAGE}`);
    process.exit(2);
  }
  return n;
};

const store = values.store ?? "sqlite";
if (store !== "sqlite" && store !== "postgres") {
  process.stderr.write(`chaos: --store must be sqlite or postgres, not "${store}"\n\n${USAGE}`);
  process.exit(2);
}
const managers = num(values.managers, 1, "managers");
if (!Number.isInteger(managers) || (managers > 1 && store !== "postgres")) {
  process.stderr.write(`chaos: --managers ${values.managers} needs --store postgres (SQLite is one manager's database) and a whole number\n\n${USAGE}`);
  process.exit(2);
}

const report = await runCampaign({
  minutes: num(values.minutes, 5, "minutes"),
  seed: values.seed ?? randomBytes(4).toString("hex"),
  clients: num(values.clients, 4, "clients"),
  hosts: num(values.hosts, 2, "hosts"),
  store,
  managers,
  ...(values.name ? { name: values.name } : {}),
  ...(values["port-base"] ? { portBase: num(values["port-base"], 47_100, "port-base") } : {}),
  keep: values.keep ?? false,
  keepEngines: values["keep-engines"] ?? false,
  plant: values.plant ?? false,
});
process.stdout.write(`${formatReport(report)}\n`);
process.exit(report.violations.length ? 1 : 0);
