import { afterEach, describe, expect, it } from "vitest";
import type { Store, WriteOp } from "../store/store.js";
import { hashSecret } from "../ids.js";
import { testStore } from "../../testing/store.js";
import { newToken, TokenTouches } from "./tokens.js";

/** A commit that records the touches it was given, failing while `failing` is set. */
function recorder() {
  const written: string[] = [];
  const state = { failing: false };
  const store = {
    async commit(ops: readonly WriteOp[]) {
      if (state.failing) throw new Error("SQLITE_FULL: database or disk is full");
      for (const o of ops) if (o.op === "token.touch") written.push(`${o.id}@${o.at}`);
      return { versions: new Map(), events: [], touchedServers: new Set<string>(), hostIds: new Set<string>() };
    },
  };
  return { store, written, state };
}

describe("TokenTouches", () => {
  it("writes a token's last use at most once a minute, also for calls that arrive together", async () => {
    const { store, written } = recorder();
    const t = new TokenTouches(store);
    await Promise.all([t.touch("tok_a", 0), t.touch("tok_a", 1), t.touch("tok_b", 1)]);
    await t.touch("tok_a", 59_999);
    await t.touch("tok_a", 60_000);
    expect(written).toEqual(["tok_a@0", "tok_b@1", "tok_a@60000"]);
  });

  it("never fails the call: a stamp that cannot be written is tried again at the next use", async () => {
    const { store, written, state } = recorder();
    const t = new TokenTouches(store);
    state.failing = true;
    await expect(t.touch("tok_a", 0)).resolves.toBeUndefined();
    state.failing = false;
    await t.touch("tok_a", 10);
    expect(written).toEqual(["tok_a@10"]);
  });
});

describe("newToken", () => {
  let store: Store | undefined;
  afterEach(async () => {
    await store?.close();
    store = undefined;
  });

  it("stores only the secret's hash: the token is found by it, and the secret is nowhere in the database", async () => {
    store = await testStore();
    const { token, secret, op } = newToken({ name: "ci", role: "operator", project: "web" }, "test", 5);
    await store.commit([op]);
    expect(secret).toMatch(/^brt_/);
    expect(await store.findTokenBySecretHash(hashSecret(secret))).toEqual(token);
    expect(JSON.stringify(op)).not.toContain(secret);
    const stored = await store.listTokens();
    expect(stored.map((t) => t.id)).toEqual([token.id]);
    expect(JSON.stringify(stored)).not.toContain(secret);
  });
});
