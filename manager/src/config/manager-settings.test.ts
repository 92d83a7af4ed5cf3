import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DEFAULT_LIMITS } from "../auth/limits.js";
import { DEFAULT_EVALUATOR } from "../alerts/evaluator.js";
import { DEFAULT_THRESHOLDS } from "../alerts/rules.js";
import { DEFAULT_RETENTION } from "../ledger/retention.js";
import { DEFAULT_HTTP_LIMITS } from "../http/listen.js";
import { DEFAULT_CONTAINER_LOGS } from "../reconcile/reconciler.js";
import { DEFAULT_AGENT_LINK } from "../link/agent-hub.js";
import { DEFAULT_HOST_LEASE } from "../cluster/host-ownership.js";
import { httpLimitsFrom, ledgerConfigFrom, limitsFrom, loadManagerSettings, MANAGER_SETTINGS, managerUsage } from "./manager-settings.js";
import { ConfigError, envName, readConfigFile, type AnySetting } from "./settings.js";
import { MANAGER_VERSION } from "./version.js";

const noFile = (): string => {
  throw new Error("no file expected");
};
const files = (content: Record<string, string>) => (path: string) => {
  if (!(path in content)) throw new Error(`ENOENT: no such file, open '${path}'`);
  return content[path]!;
};

describe("manager settings: one table for flags, environment, config file and --help", () => {
  it("defaults are the manager's real defaults", () => {
    const v = loadManagerSettings([], {}, noFile).values;
    expect(v.listen).toBe("127.0.0.1:7000");
    expect(v.store).toBe("sqlite://./data/berth.db");
    expect(v.db).toBeUndefined();
    expect(limitsFrom(v)).toEqual(DEFAULT_LIMITS);
    expect(httpLimitsFrom(v)).toEqual(DEFAULT_HTTP_LIMITS);
    const l = ledgerConfigFrom(v);
    expect(l.eventMaxAgeSeconds! * 1000).toBe(DEFAULT_RETENTION.maxAgeMs);
    expect(l.commandMaxAgeSeconds! * 1000).toBe(DEFAULT_RETENTION.commandMaxAgeMs);
    expect(l.enrollmentTokenMaxAgeSeconds! * 1000).toBe(DEFAULT_RETENTION.enrollmentTokenMaxAgeMs);
    expect(l.eventMaxRows).toBe(DEFAULT_RETENTION.maxRows);
    expect(l.alertHostOfflineSeconds! * 1000).toBe(DEFAULT_THRESHOLDS.hostOfflineMs);
    expect(l.alertNotConvergedSeconds! * 1000).toBe(DEFAULT_THRESHOLDS.notConvergedMs);
    expect(l.alertDiskFreePercent! / 100).toBe(DEFAULT_THRESHOLDS.diskFreeFraction);
    expect(l.alertIntervalSeconds! * 1000).toBe(DEFAULT_EVALUATOR.intervalMs);
    expect(v["delete-retention"]).toBe(24 * 3600);
    expect(v["crash-backoff"]).toBe(10);
    expect(v["heartbeat-interval"]).toBe(DEFAULT_AGENT_LINK.heartbeatIntervalSeconds);
    expect(v["agent-timeout"]).toBe(DEFAULT_AGENT_LINK.agentTimeoutSeconds);
    // Renewed every third of the term: the defaults are 15 s and 5 s.
    expect(v["host-term"] * 1000).toBe(DEFAULT_HOST_LEASE.ttlMs);
    expect((v["host-term"] * 1000) / 3).toBe(DEFAULT_HOST_LEASE.renewMs);
    expect({ maxSizeBytes: v["container-log-max-size"], maxFiles: v["container-log-max-files"] }).toEqual(DEFAULT_CONTAINER_LOGS);
    // Unset: the reconciler's per-kind deadlines (start 180 s, restart 240 s) apply.
    expect(v["start-timeout"]).toBeUndefined();
    expect(v.webhook).toEqual([]);
    expect(v["tls-auto"]).toBe(false);
  });

  it("the version matches manager/package.json", () => {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
    expect(MANAGER_VERSION).toBe(pkg.version);
  });

  it("precedence: flag > environment > config file > default", () => {
    const file = files({ "/etc/berth.json": JSON.stringify({ listen: "127.0.0.1:1111", "rate-limit": 5, "log-level": "debug" }) });
    const env = { BERTH_CONFIG: "/etc/berth.json", BERTH_LISTEN: "127.0.0.1:2222", BERTH_RATE_LIMIT: "6" };
    const all = loadManagerSettings(["--listen", "127.0.0.1:3333"], env, file);
    expect(all.values.listen).toBe("127.0.0.1:3333");
    expect(all.sources.listen).toBe("flag");
    expect(all.values["rate-limit"]).toBe(6);
    expect(all.sources["rate-limit"]).toBe("env");
    expect(all.values["log-level"]).toBe("debug");
    expect(all.sources["log-level"]).toBe("file");
    expect(all.values["rate-burst"]).toBe(50);
    expect(all.sources["rate-burst"]).toBe("default");
    expect(all.file).toBe("/etc/berth.json");

    const noFlag = loadManagerSettings([], env, file);
    expect(noFlag.values.listen).toBe("127.0.0.1:2222");
    const onlyFile = loadManagerSettings(["--config", "/etc/berth.json"], {}, file);
    expect(onlyFile.values.listen).toBe("127.0.0.1:1111");
  });

  it("a list from a higher source replaces a lower one; env lists are comma-separated", () => {
    const file = files({ "/c.json": JSON.stringify({ webhook: ["https://a.example/hook"] }) });
    expect(loadManagerSettings(["--config", "/c.json"], {}, file).values.webhook).toEqual(["https://a.example/hook"]);
    expect(loadManagerSettings(["--config", "/c.json"], { BERTH_WEBHOOK: "https://b.example/1, https://b.example/2" }, file).values.webhook).toEqual([
      "https://b.example/1",
      "https://b.example/2",
    ]);
    expect(
      loadManagerSettings(["--config", "/c.json", "--webhook", "https://c.example/x", "--webhook", "https://c.example/y"], { BERTH_WEBHOOK: "https://b.example/1" }, file).values
        .webhook,
    ).toEqual(["https://c.example/x", "https://c.example/y"]);
  });

  it("reads `key = value` config files, with comments, quotes and repeated list keys", () => {
    const text = [
      "# berth-manager settings",
      "listen = 0.0.0.0:7000",
      'db = "/var/lib/berth-manager/berth.db"',
      "tls-auto = true",
      "tls-san = manager.example",
      "tls-san = 10.0.0.5, berth.internal",
      "alert-disk-free = 12.5   # percent",
      "",
    ].join("\n");
    const v = loadManagerSettings(["--config", "/etc/berth-manager.conf"], {}, files({ "/etc/berth-manager.conf": text })).values;
    expect(v.listen).toBe("0.0.0.0:7000");
    expect(v.db).toBe("/var/lib/berth-manager/berth.db");
    expect(v.store).toBe("sqlite:///var/lib/berth-manager/berth.db");
    expect(v["tls-auto"]).toBe(true);
    expect(v["tls-san"]).toEqual(["manager.example", "10.0.0.5", "berth.internal"]);
    expect(v["alert-disk-free"]).toBe(12.5);
  });

  it("--store (BERTH_STORE) selects the store; --db PATH is sqlite://PATH; both together name both", () => {
    const store = (argv: string[], env: NodeJS.ProcessEnv = {}) => loadManagerSettings(argv, env, noFile).values.store;
    expect(store(["--store", "sqlite:///var/lib/b.db"])).toBe("sqlite:///var/lib/b.db");
    expect(store([], { BERTH_STORE: "sqlite://./x.db" })).toBe("sqlite://./x.db");
    expect(store(["--db", "/srv/b.db"])).toBe("sqlite:///srv/b.db");
    expect(store([], { BERTH_DB: ":memory:" })).toBe("sqlite://:memory:");
    // Parsed at start, refused later by the store itself when this build lacks it.
    expect(store(["--store", "postgres://berth@db/berth"])).toBe("postgres://berth@db/berth");
    const both = "use either --store (BERTH_STORE) or --db (BERTH_DB), not both; --db PATH is short for --store sqlite://PATH";
    expect(() => store(["--store", "sqlite:///a.db", "--db", "/b.db"])).toThrow(new ConfigError(both));
    expect(() => store(["--db", "/b.db"], { BERTH_STORE: "sqlite:///a.db" })).toThrow(new ConfigError(both));
    expect(() => store(["--store", "redis://u:pw@h/0"])).toThrow(
      new ConfigError(
        'invalid --store (BERTH_STORE) "redis://u:…@h/0" on the command line: unknown store "redis:"; use sqlite:///abs/path/berth.db, sqlite://./relative/berth.db or postgres://user@host:5432/database',
      ),
    );
    expect(() => store(["--store", "postgres://db/berth"])).toThrow(/invalid --store \(BERTH_STORE\) "postgres:\/\/db\/berth" on the command line: names no user; use postgres:\/\/user@host:5432\/database/);
    expect(() => loadManagerSettings(["--tls-auto", "--store", "sqlite://:memory:"], {}, noFile)).toThrow(/--tls-auto keeps its CA next to the SQLite database file/);
  });

  it("the agent link's timers: the silence timeout covers at least two heartbeats; the host term is at least 3 s", () => {
    const load = (argv: string[]) => loadManagerSettings(argv, {}, noFile).values;
    expect(load(["--heartbeat-interval", "1", "--agent-timeout", "3"])).toMatchObject({ "heartbeat-interval": 1, "agent-timeout": 3 });
    expect(() => load(["--agent-timeout", "9"])).toThrow(new ConfigError("--agent-timeout (9 s) must be at least twice --heartbeat-interval (5 s): a host would be marked offline whenever one heartbeat was late"));
    expect(() => load(["--heartbeat-interval", "0"])).toThrow(/invalid --heartbeat-interval \(BERTH_HEARTBEAT_INTERVAL\) "0" on the command line: must be a whole number of seconds >= 1/);
    expect(() => load(["--agent-timeout", "1.5"])).toThrow(/--agent-timeout/);
    expect(load(["--host-term", "3"])["host-term"]).toBe(3);
    expect(() => load(["--host-term", "2"])).toThrow(/invalid --host-term \(BERTH_HOST_TERM\) "2" on the command line: must be a whole number of seconds >= 3/);
  });

  it("booleans accept 1/0, true/false, yes/no in the environment", () => {
    expect(loadManagerSettings([], { BERTH_INSECURE: "1" }, noFile).values.insecure).toBe(true);
    expect(loadManagerSettings([], { BERTH_INSECURE: "no" }, noFile).values.insecure).toBe(false);
    expect(() => loadManagerSettings([], { BERTH_INSECURE: "maybe" }, noFile)).toThrow(/invalid --insecure \(BERTH_INSECURE\) "maybe" in the environment: must be true or false/);
  });

  it("invalid values stop with a message naming the setting, its variable and where the value came from", () => {
    const bad = (argv: string[], env: NodeJS.ProcessEnv = {}, read: (p: string) => string = noFile) => {
      try {
        loadManagerSettings(argv, env, read);
      } catch (err) {
        expect(err).toBeInstanceOf(ConfigError);
        return (err as Error).message;
      }
      throw new Error("expected a ConfigError");
    };
    expect(bad(["--rate-limit", "0"])).toBe('invalid --rate-limit (BERTH_RATE_LIMIT) "0" on the command line: must be a whole number >= 1');
    expect(bad([], { BERTH_START_TIMEOUT: "soon" })).toBe('invalid --start-timeout (BERTH_START_TIMEOUT) "soon" in the environment: must be a whole number');
    expect(bad(["--listen", "7000"])).toMatch(/^invalid --listen \(BERTH_LISTEN\) "7000" on the command line: must be host:port/);
    expect(bad(["--log-level", "loud"])).toMatch(/invalid --log-level .*use trace, debug, info, warn or error/);
    expect(bad(["--webhook", "ftp://x.example/"])).toMatch(/invalid --webhook \(BERTH_WEBHOOK\).*must be an http:\/\/ or https:\/\/ URL/);
    expect(bad(["--alert-disk-free", "101"])).toMatch(/must be a percentage from 0 to 100/);
    expect(bad(["--bogus"])).toBe("unknown flag --bogus; --help lists every setting");
    expect(bad(["--listen"])).toMatch(/--listen needs a value/);
    expect(bad(["serve"])).toMatch(/unexpected argument/);
    // Secrets are never echoed.
    expect(bad(["--metrics-token", "short"])).toBe('invalid --metrics-token (BERTH_METRICS_TOKEN) "…" on the command line: must be at least 16 characters (e.g. openssl rand -hex 16)');
    // Config file problems name the file (and the line).
    const file = files({ "/c.json": '{"rate-burst": "lots"}', "/c.conf": "listen 0.0.0.0:7000\n", "/u.json": '{"rate_limit": 3}', "/x.json": "{nope" });
    expect(bad(["--config", "/c.json"], {}, file)).toBe('invalid --rate-burst (BERTH_RATE_BURST) "lots" in /c.json: must be a whole number');
    expect(bad(["--config", "/c.conf"], {}, file)).toMatch(/^\/c\.conf:1: expected "key = value"/);
    expect(bad(["--config", "/u.json"], {}, file)).toMatch(/unknown setting "rate_limit" in \/u\.json \(did you mean "rate-limit"\?\)/);
    expect(bad(["--config", "/x.json"], {}, file)).toMatch(/the config file \/x\.json is not valid JSON/);
    expect(bad(["--config", "/missing.json"], {}, file)).toMatch(/cannot read the config file \/missing\.json/);
    expect(bad([], { BERTH_CONFIG: "/c.json" }, files({ "/c.json": '{"config": "/other.json"}' }))).toMatch(/unknown setting "config"/);
    // Settings that only make sense together.
    expect(bad(["--tls-auto", "--tls-cert", "a.pem", "--tls-key", "k.pem"])).toMatch(/either --tls-auto or --tls-cert/);
    expect(bad(["--tls-cert", "a.pem"])).toMatch(/--tls-cert and --tls-key go together/);
    expect(bad(["--tls-auto", "--advertise-url", "http://m.example:7000"])).toMatch(/must be https:\/\/ when the manager serves TLS/);
  });

  it("--help lists every setting with its flag, environment variable and default", () => {
    const help = managerUsage();
    for (const [name, s] of Object.entries(MANAGER_SETTINGS) as [string, AnySetting][]) {
      expect(help).toContain(`--${name}`);
      const env = envName(name, s);
      if (env) expect(help).toContain(env);
      if (s.default !== undefined && typeof s.default !== "boolean" && !Array.isArray(s.default)) expect(help).toContain(`default ${String(s.default)}`);
    }
  });

  it("a config file may not name flag-only settings", () => {
    expect(() => readConfigFile(MANAGER_SETTINGS, "/h.json", () => '{"help": true}')).toThrow(/unknown setting "help"/);
  });
});
