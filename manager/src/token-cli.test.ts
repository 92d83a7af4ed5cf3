import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { requirePostgres, useTestDatabase } from "../../test/harness/postgres-tests.js";
import { hashSecret } from "./ids.js";
import { openStore } from "./store/open.js";
import { runTokenCommand } from "./token-cli.js";

/** Runs the command in-process and returns its exit code and what it printed. */
async function tokenCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const out = vi.spyOn(process.stdout, "write").mockImplementation((chunk) => ((stdout += String(chunk)), true));
  const err = vi.spyOn(process.stderr, "write").mockImplementation((chunk) => ((stderr += String(chunk)), true));
  try {
    const code = await runTokenCommand(args, env);
    return { code, stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

describe("berth-manager token: which store", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "berth-token-cli-"));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("--store sqlite://PATH, BERTH_STORE and --db PATH all reach the same database", async () => {
    const path = join(dir, "berth.db");
    const created = await tokenCli(["create", "--role", "admin", "--name", "via-store", "--store", `sqlite://${path}`]);
    expect(created.code).toBe(0);
    expect(created.stdout).toMatch(/^brt_\S+\n$/);
    expect(created.stderr).toContain(`created admin token tok_`);
    expect(created.stderr).toContain(` in ${path}.`);
    expect((await tokenCli(["create", "--role", "admin", "--name", "via-env"], { BERTH_STORE: `sqlite://${path}` })).code).toBe(0);
    expect((await tokenCli(["create", "--role", "admin", "--name", "via-db"], { BERTH_DB: path })).code).toBe(0);

    const listed = await tokenCli(["list", "--db", path]);
    expect(listed.code).toBe(0);
    expect(listed.stdout.trim().split("\n").map((l) => l.split("\t")[4]).sort()).toEqual(["via-db", "via-env", "via-store"]);
    // The secret the CLI printed works against what a manager opens.
    const opened = await openStore(`sqlite://${path}`);
    try {
      expect((await opened.findTokenBySecretHash(hashSecret(created.stdout.trim())))?.name).toBe("via-store");
    } finally {
      await opened.close();
    }
  });

  it("--store and --db together, or an unknown kind of store, is a usage error (exit 2) that touches nothing", async () => {
    const path = join(dir, "berth.db");
    const both = await tokenCli(["list", "--store", `sqlite://${path}`, "--db", path]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/^berth-manager token list: use either --store \(BERTH_STORE\) or --db \(BERTH_DB\), not both; --db PATH is short for --store sqlite:\/\/PATH\n\nUsage:\n  berth-manager token create/);
    const mixed = await tokenCli(["list", "--store", `sqlite://${path}`], { BERTH_DB: path });
    expect(mixed.code).toBe(2);
    expect(mixed.stderr).toContain("use either --store (BERTH_STORE) or --db (BERTH_DB), not both");

    const unknown = await tokenCli(["create", "--role", "admin", "--store", "mysql://root:hunter2@h/berth"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(
      /^berth-manager token create: invalid --store \(BERTH_STORE\) "mysql:\/\/root:…@h\/berth": unknown store "mysql:"; use sqlite:\/\/\/abs\/path\/berth\.db, sqlite:\/\/\.\/relative\/berth\.db or postgres:\/\/user@host:5432\/database\n\nUsage:/,
    );
    expect(unknown.stderr).not.toContain("hunter2");
    expect(unknown.stdout).toBe("");
  });

  it("revoke refuses the token from then on and records it once; revoking again changes nothing", async () => {
    const path = join(dir, "berth.db");
    const secret = (await tokenCli(["create", "--role", "operator", "--project", "web", "--name", "ci", "--db", path])).stdout.trim();
    const id = (await tokenCli(["list", "--db", path])).stdout.split("\t")[0]!;
    const first = await tokenCli(["revoke", id, "--db", path]);
    const again = await tokenCli(["revoke", id, "--db", path]);
    expect([first.code, again.code]).toEqual([0, 0]);
    expect(again.stderr).toBe(`token ${id} "ci" is revoked\n`);
    expect((await tokenCli(["list", "--db", path])).stdout).toMatch(new RegExp(`^${id}\toperator\tweb\trevoked \\d{4}-`));
    const opened = await openStore(`sqlite://${path}`);
    try {
      expect((await opened.findTokenBySecretHash(hashSecret(secret)))?.revokedAt).not.toBeNull();
      const events = await opened.listNewestFirst({ project: null, typePrefix: "token.", limit: 10 });
      expect(events.map((e) => [e.type, e.actor, e.correlationId])).toEqual([
        ["token.revoked", "cli", id],
        ["token.created", "cli", id],
      ]);
    } finally {
      await opened.close();
    }
    expect((await tokenCli(["revoke", "tok_nope", "--db", path])).code).toBe(2);
  });
});

const pg = requirePostgres();

describe.skipIf(!pg.url)("berth-manager token on PostgreSQL", () => {
  const db = useTestDatabase("berth_token_cli");

  it("--store postgres://… and BERTH_STORE: create, list and revoke in the database a manager opens", async () => {
    const created = await tokenCli(["create", "--role", "admin", "--name", "pg-admin", "--store", db.url]);
    expect(created.code).toBe(0);
    expect(created.stdout).toMatch(/^brt_\S+\n$/);
    expect(created.stderr).toMatch(new RegExp(`created admin token tok_\\w+ "pg-admin" .* in postgres://.*/${db.name}\\.`));
    const secret = created.stdout.trim();
    const id = (await tokenCli(["list"], { BERTH_STORE: db.url })).stdout.split("\t")[0]!;
    expect((await tokenCli(["revoke", id, "--store", db.url])).code).toBe(0);
    expect((await tokenCli(["list", "--store", db.url])).stdout).toMatch(new RegExp(`^${id}\tadmin\t\\*\trevoked \\d{4}-.*\tpg-admin\n$`));
    const opened = await openStore(db.url);
    try {
      expect((await opened.findTokenBySecretHash(hashSecret(secret)))?.revokedAt).not.toBeNull();
      const events = await opened.listNewestFirst({ project: null, typePrefix: "token.", limit: 10 });
      expect(events.map((e) => [e.type, e.actor, e.correlationId])).toEqual([
        ["token.revoked", "cli", id],
        ["token.created", "cli", id],
      ]);
    } finally {
      await opened.close();
    }
  });
});
