import { create } from "@bufbuild/protobuf";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ServerSpecSchema, ServerStatusSchema } from "@berth/proto/berth/v1/server_pb.js";
import { InvalidArgumentError } from "../errors.js";
import { specHash } from "../reconcile/spec-hash.js";
import { openDatabase } from "./sqlite/database.js";
import { checkSecretKey, loadSecretKey, maskSpec, mergeSecretEnv, openCommand, SECRET_MASK, SecretBox, SecretKeyError, sealSpec } from "./secrets.js";
import { SqliteTables } from "./sqlite/tables.js";
import { initialStatus } from "../domain/records.js";
import { CommandSchema } from "@berth/proto/berth/v1/agent_pb.js";

const PASSWORD = "hunter2-correct-horse-battery";
const spec = (env: Record<string, string>, secretEnv: string[] = []) => create(ServerSpecSchema, { name: "db", image: "busybox", env, secretEnv });

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
function tmp(): string {
  const d = mkdtempSync(join(tmpdir(), "berth-secrets-"));
  dirs.push(d);
  return d;
}

describe("SecretBox", () => {
  it("opens what it sealed, only under the same key and context", () => {
    const box = SecretBox.ephemeral();
    const sealed = box.seal(PASSWORD, "env\0srv_a\0PW");
    expect(sealed).toMatch(/^enc:v1:[A-Za-z0-9_-]+$/);
    expect(sealed).not.toContain(PASSWORD);
    expect(box.open(sealed, "env\0srv_a\0PW")).toBe(PASSWORD);
    // A fresh nonce each time: the same value never seals the same way twice.
    expect(box.seal(PASSWORD, "env\0srv_a\0PW")).not.toBe(sealed);
    expect(() => box.open(sealed, "env\0srv_b\0PW")).toThrow(SecretKeyError);
    expect(() => SecretBox.ephemeral().open(sealed, "env\0srv_a\0PW")).toThrow(SecretKeyError);
    expect(() => box.open(`${sealed.slice(0, -2)}AA`, "env\0srv_a\0PW")).toThrow(SecretKeyError);
  });
});

describe("spec sealing, masking and merging", () => {
  const box = SecretBox.ephemeral();

  it("seals only the flagged keys; opening the command gives the agent the plaintext", () => {
    const sealed = sealSpec("srv_a", spec({ PW: PASSWORD, MODE: "x" }, ["PW"]), box);
    expect(sealed.env.MODE).toBe("x");
    expect(sealed.env.PW).toMatch(/^enc:v1:/);
    // Sealing again keeps a sealed value as it is.
    expect(sealSpec("srv_a", sealed, box).env.PW).toBe(sealed.env.PW);
    const cmd = create(CommandSchema, { id: "cmd_1", serverId: "srv_a", container: { env: sealed.env } });
    expect(openCommand(cmd, box).container!.env).toEqual({ PW: PASSWORD, MODE: "x" });
    // Without a key nothing is written in the clear.
    expect(() => sealSpec("srv_a", spec({ PW: PASSWORD }, ["PW"]), undefined)).toThrow(SecretKeyError);
  });

  it("masks secret values for every reader", () => {
    expect(maskSpec(spec({ PW: "enc:v1:abc", MODE: "x" }, ["PW"])).env).toEqual({ PW: SECRET_MASK, MODE: "x" });
  });

  const stored = spec({ PW: "enc:v1:stored", OLD: "enc:v1:old", MODE: "x" }, ["PW", "OLD"]);
  it.each([
    ["the mask keeps the stored sealed value", spec({ PW: SECRET_MASK, MODE: "y" }, ["PW"]), { PW: "enc:v1:stored", MODE: "y" }],
    ["a new value replaces it", spec({ PW: "new", MODE: "x" }, ["PW"]), { PW: "new", MODE: "x" }],
    ["flagging a plain value secret takes it as sent", spec({ MODE: "x" }, ["MODE"]), { MODE: "x" }],
  ])("UpdateServer: %s", (_name, next, env) => {
    expect(mergeSecretEnv(next, stored).env).toEqual(env);
  });

  it.each([
    ["a flagged key missing from env", spec({ MODE: "x" }, ["PW"]), undefined, "spec.secret_env"],
    ["the mask on create", spec({ PW: SECRET_MASK }, ["PW"]), undefined, 'spec.env["PW"]'],
    ["the mask for a key unflagged now", spec({ OLD: SECRET_MASK }, []), stored, 'spec.env["OLD"]'],
    ["the mask for a key that never was secret", spec({ MODE: SECRET_MASK }, ["MODE"]), stored, 'spec.env["MODE"]'],
    ["a sealed-looking value (another server's ciphertext)", spec({ X: "enc:v1:stolen" }), stored, 'spec.env["X"]'],
  ])("refuses %s", (_name, next, before, field) => {
    let err: unknown;
    try {
      mergeSecretEnv(next, before);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidArgumentError);
    expect((err as Error).message).toContain(field);
  });
});

describe("specHash of secret values", () => {
  it("is a keyed HMAC of the plaintext: the same after re-sealing, different under another key, never a plain hash", () => {
    const box = SecretBox.ephemeral();
    const a = sealSpec("srv_a", spec({ PW: PASSWORD }, ["PW"]), box);
    const b = sealSpec("srv_a", spec({ PW: PASSWORD }, ["PW"]), box);
    expect(a.env.PW).not.toBe(b.env.PW);
    const h = specHash(a, { serverId: "srv_a", box });
    expect(specHash(b, { serverId: "srv_a", box })).toBe(h);
    expect(specHash(sealSpec("srv_a", spec({ PW: "other" }, ["PW"]), box), { serverId: "srv_a", box })).not.toBe(h);
    // Someone reading the label cannot test a guess: a plain hash of the same spec differs.
    expect(specHash(spec({ PW: PASSWORD }))).not.toBe(h);
    const other = new SecretBox(Buffer.alloc(32, 7));
    expect(specHash(sealSpec("srv_a", spec({ PW: PASSWORD }, ["PW"]), other), { serverId: "srv_a", box: other })).not.toBe(h);
  });
});

describe("SqliteTables", () => {
  it("writes secret values sealed: the database file and its WAL never hold the plaintext", () => {
    const dir = tmp();
    const path = join(dir, "berth.db");
    const db = openDatabase(path);
    const store = new SqliteTables(db, SecretBox.ephemeral());
    const rec = {
      id: "srv_aaaaaaaaaaaaaaaaaaaa",
      project: "default",
      name: "db",
      hostId: "host_1",
      generation: 1,
      spec: spec({ PW: PASSWORD, MODE: "plain-visible" }, ["PW"]),
      status: create(ServerStatusSchema, initialStatus()),
      dataInitialized: false,
      lifecycle: {},
      createdAt: 1,
      updatedAt: 1,
      deletedAt: null,
    };
    store.insertServer(rec);
    store.updateServerSpec({ ...rec, spec: spec({ PW: `${PASSWORD}-2`, MODE: "plain-visible" }, ["PW"]), generation: 2 });
    const row = db.prepare("SELECT spec_json FROM servers").get() as { spec_json: string };
    expect(row.spec_json).not.toContain(PASSWORD);
    expect(row.spec_json).toContain("plain-visible");
    expect(store.getServer(rec.id)!.spec.env.PW).toMatch(/^enc:v1:/);
    for (const f of [path, `${path}-wal`]) {
      const bytes = readFileSync(f);
      expect(bytes.includes(PASSWORD)).toBe(false);
    }
    // The control: the same file does hold the plain value next to it.
    expect(readFileSync(`${path}-wal`).includes("plain-visible")).toBe(true);
    store.close();
  });
});

describe("secret key file", () => {
  it("is created 0600 (32 random bytes) whatever the umask, and read back the same", () => {
    const path = join(tmp(), "secret.key");
    const old = process.umask(0);
    try {
      const first = loadSecretKey(path, false);
      expect(first.created).toBe(true);
      expect(statSync(path).mode & 0o777).toBe(0o600);
      expect(readFileSync(path)).toHaveLength(32);
      const again = loadSecretKey(path, true);
      expect(again.created).toBe(false);
      const sealed = first.box.seal("v", "c");
      expect(again.box.open(sealed, "c")).toBe("v");
    } finally {
      process.umask(old);
    }
  });

  it("accepts 64 hex characters, warns when others may read it, refuses anything else", () => {
    const dir = tmp();
    const hex = join(dir, "hex.key");
    writeFileSync(hex, `${"ab".repeat(32)}\n`, { mode: 0o644 });
    const loaded = loadSecretKey(hex, true);
    expect(loaded.warning).toMatch(/mode 0644.*chmod 600/);
    const bad = join(dir, "bad.key");
    writeFileSync(bad, "short", { mode: 0o600 });
    expect(() => loadSecretKey(bad, false)).toThrow(/holds 5 bytes; it must hold 32 random bytes/);
  });

  it("is not invented anew when the database already holds sealed secrets", () => {
    const path = join(tmp(), "secret.key");
    expect(() => loadSecretKey(path, true)).toThrow(/is missing, and this database holds secrets sealed with a key; restore the key file/);
  });

  it("must be the key the database was sealed with", async () => {
    const meta = new Map<string, string>();
    const m = { get: async (k: string) => meta.get(k), set: async (k: string, v: string) => void meta.set(k, v) };
    const right = SecretBox.ephemeral();
    await checkSecretKey(m, right, "/k"); // first start: records the check
    await checkSecretKey(m, right, "/k");
    await expect(checkSecretKey(m, SecretBox.ephemeral(), "/wrong.key")).rejects.toThrow(/secret key \/wrong.key is not the key this database's secret env values were sealed with/);
  });
});
