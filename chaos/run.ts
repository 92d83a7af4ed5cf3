/**
 * `npm run chaos -- --minutes M --seed S`: a fault campaign against real
 * processes and real Docker (see campaign.ts). Exits 1 when an invariant was
 * violated, printing how to replay the seed.
 */
import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";
import { formatReport, runCampaign } from "./campaign.js";

const USAGE = `Usage: npm run chaos -- [--minutes M] [--seed S] [--clients N] [--hosts N] [--name NAME] [--keep] [--keep-engines]

  --minutes M      how long faults and operations run (default 5); quiescing and checks come after
  --seed S         replay a campaign (default: a random seed, printed)
  --clients N      concurrent operator clients (default 4)
  --hosts N        hosts, each a private dockerd and an agent (default 2)
  --name NAME      prefix of the private dockerds (default chaos); two campaigns at once need two names
  --port-base P    first published host port (default 47100)
  --keep           keep the work directory (logs, database) even without violations
  --keep-engines   leave the private dockerds running for the next campaign
  --plant          self-test of the checker: after quiescing, remove a container and a data
                   directory behind a frozen agent's back; the run must then report violations

Needs root (a tmpfs for the manager's database, private dockerds). Exit code 1
when an invariant was violated.
`;

const { values } = parseArgs({
  options: {
    minutes: { type: "string" },
    seed: { type: "string" },
    clients: { type: "string" },
    hosts: { type: "string" },
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

const report = await runCampaign({
  minutes: num(values.minutes, 5, "minutes"),
  seed: values.seed ?? randomBytes(4).toString("hex"),
  clients: num(values.clients, 4, "clients"),
  hosts: num(values.hosts, 2, "hosts"),
  ...(values.name ? { name: values.name } : {}),
  ...(values["port-base"] ? { portBase: num(values["port-base"], 47_100, "port-base") } : {}),
  keep: values.keep ?? false,
  keepEngines: values["keep-engines"] ?? false,
  plant: values.plant ?? false,
});
process.stdout.write(`${formatReport(report)}\n`);
process.exit(report.violations.length ? 1 : 0);
