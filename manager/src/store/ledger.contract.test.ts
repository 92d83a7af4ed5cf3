/**
 * The store contract (store.ts) for the ledger, alerts, tokens and retention,
 * through the contract only, on the engine testStore() opens
 * (BERTH_TEST_STORE=sqlite|postgres). See store.contract.test.ts for batches,
 * servers and the write invariants.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { CommandSchema } from "@berth/proto/berth/v1/agent_pb.js";
import type { AlertRecord, EventInput, TokenRecord } from "../domain/records.js";
import { ConflictError, NotFoundError } from "../errors.js";
import { expectTyped, newServer, rejection, testStore } from "../../testing/store.js";
import type { Store, WriteOp } from "./store.js";

const HOST = "host_a";
let store: Store;
beforeEach(async () => {
  store = await testStore();
});
afterEach(() => store.close());

/** Appends events one batch each, returning their ids. */
async function append(events: (EventInput & { at?: number })[]): Promise<number[]> {
  const ids: number[] = [];
  for (const { at = 1, ...event } of events) ids.push((await store.commit([{ op: "event.append", event, at }])).events[0]!.id);
  return ids;
}
const messages = (es: { message: string }[]) => es.map((e) => e.message);

describe("events", () => {
  it("ids strictly increase in commit order, whatever the clock says; fields round-trip", async () => {
    const ids: number[] = [];
    for (let i = 0; i < 30; i++) {
      // Time going backwards must not matter: ids order events, not clocks.
      const r = await store.commit([
        { op: "event.append", event: { type: "t", message: `${i}a` }, at: 1000 - i },
        { op: "event.append", event: { type: "t", message: `${i}b` }, at: 1000 - i },
      ]);
      ids.push(...r.events.map((e) => e.id));
    }
    for (let i = 1; i < ids.length; i++) expect(ids[i]!).toBeGreaterThan(ids[i - 1]!);
    expect(await store.firstEventId()).toBe(ids[0]);
    expect(await store.lastEventId()).toBe(ids.at(-1));

    const [id] = await append([{ type: "server.created", project: "p", serverId: "srv_a", hostId: HOST, reason: "Created", message: "made", actor: "token:tok_1:ci", correlationId: "req_1", payload: { spec: { image: "x" }, n: [1, 2] }, at: 77 }]);
    const [e] = await store.listNewestFirst({ project: null, limit: 1 });
    expect(e).toEqual({ id, time: 77, type: "server.created", project: "p", serverId: "srv_a", hostId: HOST, reason: "Created", message: "made", actor: "token:tok_1:ci", correlationId: "req_1", payloadJson: '{"spec":{"image":"x"},"n":[1,2]}' });
  });

  it("an empty ledger: first and last ids are 0, reads are empty", async () => {
    expect(await store.firstEventId()).toBe(0);
    expect(await store.lastEventId()).toBe(0);
    expect(await store.listNewestFirst({ project: null, limit: 10 })).toEqual([]);
    expect(await store.readForward({ project: null, afterId: 0, upToId: 100, limit: 10 })).toEqual([]);
  });

  it("project scoping: a project sees its own events only; all-projects readers see every one, project-less included", async () => {
    await append([
      { type: "server.created", project: "a", message: "a1" },
      { type: "host.connected", message: "shared" },
      { type: "server.created", project: "b", message: "b1" },
      { type: "server.created", project: "a", message: "a2" },
    ]);
    expect(messages(await store.listNewestFirst({ project: "a", limit: 10 }))).toEqual(["a2", "a1"]);
    expect(messages(await store.listNewestFirst({ project: "b", limit: 10 }))).toEqual(["b1"]);
    expect(messages(await store.listNewestFirst({ project: null, limit: 10 }))).toEqual(["a2", "b1", "shared", "a1"]);
    expect(messages(await store.listNewestFirst({ project: "c", limit: 10 }))).toEqual([]);
    expect(messages(await store.readForward({ project: "a", afterId: 0, upToId: 1e9, limit: 10 }))).toEqual(["a1", "a2"]);
  });

  it("filters: server, host, dotted type prefix, actor (exact or up to a ':'), since inclusive, until exclusive", async () => {
    await append([
      { type: "command.issued", serverId: "srv_a", hostId: HOST, actor: "reconciler", message: "1", at: 10 },
      { type: "command.succeeded", serverId: "srv_a", hostId: HOST, actor: "agent", message: "2", at: 20 },
      { type: "commandx.other", serverId: "srv_b", hostId: "host_b", actor: "token:tok_x", message: "3", at: 30 },
      { type: "server.started", serverId: "srv_b", hostId: "host_b", actor: "token:tok_x:ci", message: "4", at: 40 },
      { type: "server.start_requested", serverId: "srv_b", actor: "token:tok_xy", message: "5", at: 50 },
      { type: "command", actor: "token:tok_x:ci:more", message: "6", at: 60 },
    ]);
    const q = async (f: Partial<Parameters<Store["listNewestFirst"]>[0]>) => messages(await store.listNewestFirst({ project: null, limit: 100, ...f })).reverse();
    expect(await q({ serverId: "srv_a" })).toEqual(["1", "2"]);
    expect(await q({ hostId: "host_b" })).toEqual(["3", "4"]);
    expect(await q({ typePrefix: "command." })).toEqual(["1", "2"]);
    expect(await q({ typePrefix: "command.s" })).toEqual(["2"]);
    expect(await q({ typePrefix: "command" })).toEqual(["1", "2", "3", "6"]);
    expect(await q({ typePrefix: "server.start" })).toEqual(["4", "5"]);
    expect(await q({ actor: "token:tok_x" })).toEqual(["3", "4", "6"]);
    expect(await q({ actor: "token:tok_x:ci" })).toEqual(["4", "6"]);
    expect(await q({ actor: "agent" })).toEqual(["2"]);
    expect(await q({ since: 20, until: 40 })).toEqual(["2", "3"]);
    expect(await q({ since: 20, until: 20 })).toEqual([]);
    expect(await q({ serverId: "srv_b", typePrefix: "server.", actor: "token:tok_x", since: 40 })).toEqual(["4"]);
    // Filters apply before the limit.
    expect(messages(await store.listNewestFirst({ project: null, serverId: "srv_a", limit: 1 }))).toEqual(["2"]);
  });

  it("a type prefix is a literal prefix: no wildcards", async () => {
    await append([
      { type: "a%b", message: "pct" },
      { type: "axb", message: "x" },
      { type: "a_c", message: "under" },
      { type: "abc", message: "abc" },
    ]);
    const q = async (typePrefix: string) => messages(await store.listNewestFirst({ project: null, typePrefix, limit: 10 })).reverse();
    expect(await q("a%")).toEqual(["pct"]);
    expect(await q("a_")).toEqual(["under"]);
    // Case matters, as in the types themselves.
    expect(await q("A")).toEqual([]);
    expect(messages(await store.listNewestFirst({ project: null, actor: "X", limit: 10 }))).toEqual([]);
  });

  it("newest-first keyset pages (beforeId) and forward reads (afterId, upToId] have no gaps or duplicates", async () => {
    const ids = await append(Array.from({ length: 23 }, (_, i) => ({ type: i % 2 ? "odd" : "even", message: String(i) })));
    for (const limit of [1, 5, 23, 50]) {
      const seen: number[] = [];
      let beforeId: number | undefined;
      for (let guard = 0; guard < 100; guard++) {
        const page = await store.listNewestFirst({ project: null, beforeId, limit });
        if (page.length === 0) break;
        expect(page.length).toBeLessThanOrEqual(limit);
        seen.push(...page.map((e) => e.id));
        beforeId = page.at(-1)!.id;
      }
      expect(seen, `page size ${limit}`).toEqual([...ids].reverse());

      const forward: number[] = [];
      let afterId = 0;
      for (let guard = 0; guard < 100; guard++) {
        const page = await store.readForward({ project: null, afterId, upToId: ids[19]!, limit });
        if (page.length === 0) break;
        forward.push(...page.map((e) => e.id));
        afterId = page.at(-1)!.id;
      }
      expect(forward, `forward, page size ${limit}`).toEqual(ids.slice(0, 20));
    }
    expect((await store.readForward({ project: null, typePrefix: "odd", afterId: ids[4]!, upToId: ids[10]!, limit: 10 })).map((e) => e.id)).toEqual([ids[5], ids[7], ids[9]]);
  });
});

describe("alerts", () => {
  function alert(id: string, o: Partial<AlertRecord> = {}): AlertRecord {
    return { id, rule: "host_offline", subject: `host:${HOST}`, project: "", hostId: HOST, serverId: "", severity: "warning", state: "firing", message: "offline", firstSeen: 10, lastSeen: 10, resolvedAt: null, acknowledgedBy: "", acknowledgedAt: null, mutedUntil: null, ...o };
  }

  it("round-trip; touch, acknowledge, mute and resolve change what they say", async () => {
    const a = alert("alr_1", { project: "p", serverId: "srv_a", severity: "critical", mutedUntil: 99 });
    await store.commit([{ op: "alert.insert", alert: a }]);
    expect(await store.getAlert("alr_1")).toEqual(a);
    expect(await store.getAlert("alr_none")).toBeUndefined();

    await store.commit([{ op: "alert.touch", id: "alr_1", lastSeen: 20, message: "still offline", severity: "warning" }]);
    await store.commit([{ op: "alert.acknowledge", id: "alr_1", by: "token:tok_1", at: 21 }]);
    await store.commit([{ op: "alert.mute", id: "alr_1", until: 500 }]);
    expect(await store.getAlert("alr_1")).toEqual({ ...a, lastSeen: 20, message: "still offline", severity: "warning", acknowledgedBy: "token:tok_1", acknowledgedAt: 21, mutedUntil: 500 });
    await store.commit([{ op: "alert.mute", id: "alr_1", until: null }]);
    await store.commit([{ op: "alert.resolve", id: "alr_1", at: 30 }]);
    const resolved = (await store.getAlert("alr_1"))!;
    expect([resolved.state, resolved.resolvedAt, resolved.lastSeen, resolved.mutedUntil]).toEqual(["resolved", 30, 30, null]);
    // A resolved alert is not touched any more.
    await store.commit([{ op: "alert.touch", id: "alr_1", lastSeen: 40, message: "late", severity: "critical" }]);
    expect(await store.getAlert("alr_1")).toEqual(resolved);
    expectTyped(await rejection(store.commit([{ op: "alert.resolve", id: "alr_1", at: 41 }])), ConflictError, Code.Aborted);
    expectTyped(await rejection(store.commit([{ op: "alert.resolve", id: "alr_none", at: 41 }])), ConflictError, Code.Aborted);
  });

  // A second firing alert of one rule and subject is another evaluator's (another manager's)
  // insert that won: the evaluator treats ConflictError as "lost a race, decide again", so the
  // store says so (both engines passed the database's own unique-violation error through).
  it("one firing alert per rule and subject: a second is refused with ConflictError (Aborted) and writes nothing", async () => {
    await store.commit([{ op: "alert.insert", alert: alert("alr_1") }]);
    const err = await rejection(store.commit([{ op: "alert.insert", alert: alert("alr_2") }, { op: "event.append", event: { type: "alert.fired" }, at: 1 }]));
    expect(await store.getAlert("alr_2")).toBeUndefined();
    expect(await store.lastEventId()).toBe(0);
    expectTyped(err, ConflictError, Code.Aborted);
  });

  it("one firing alert per rule and subject: a second is refused and writes nothing; once resolved, a new one may fire", async () => {
    await store.commit([{ op: "alert.insert", alert: alert("alr_1") }]);
    await rejection(store.commit([{ op: "alert.insert", alert: alert("alr_2") }, { op: "event.append", event: { type: "alert.fired" }, at: 1 }]));
    expect(await store.getAlert("alr_2")).toBeUndefined();
    expect(await store.lastEventId()).toBe(0);
    // Another subject, or another rule on the subject, is another alert.
    await store.commit([{ op: "alert.insert", alert: alert("alr_3", { subject: "host:host_b" }) }, { op: "alert.insert", alert: alert("alr_4", { rule: "disk_low" }) }]);
    await store.commit([{ op: "alert.resolve", id: "alr_1", at: 20 }]);
    await store.commit([{ op: "alert.insert", alert: alert("alr_5", { firstSeen: 30, lastSeen: 30 }) }]);
    expect((await store.listFiringAlerts()).map((a) => a.id).sort()).toEqual(["alr_3", "alr_4", "alr_5"]);
  });

  it("a mute outlives a flap: the latest alert of a rule and subject gives it", async () => {
    expect(await store.latestMute("host_offline", `host:${HOST}`)).toBeNull();
    await store.commit([{ op: "alert.insert", alert: alert("alr_1", { firstSeen: 1, mutedUntil: 1000 }) }]);
    await store.commit([{ op: "alert.resolve", id: "alr_1", at: 2 }]);
    expect(await store.latestMute("host_offline", `host:${HOST}`)).toBe(1000);
    await store.commit([{ op: "alert.insert", alert: alert("alr_2", { firstSeen: 3, mutedUntil: null }) }]);
    expect(await store.latestMute("host_offline", `host:${HOST}`)).toBeNull();
    expect(await store.latestMute("host_offline", "host:other")).toBeNull();
  });

  it("listing: firing first (oldest first for listFiring), then history newest first; project scoping with shared rules; limit", async () => {
    await store.commit([
      { op: "alert.insert", alert: alert("alr_host", { firstSeen: 5, lastSeen: 50 }) },
      { op: "alert.insert", alert: alert("alr_orphan", { rule: "orphan_found", subject: "orphan:host_a/c1", firstSeen: 6, lastSeen: 60 }) },
      { op: "alert.insert", alert: alert("alr_p", { rule: "crash_loop", subject: "server:srv_a", project: "p", serverId: "srv_a", firstSeen: 7, lastSeen: 40 }) },
      { op: "alert.insert", alert: alert("alr_q", { rule: "crash_loop", subject: "server:srv_b", project: "q", serverId: "srv_b", firstSeen: 4, lastSeen: 45 }) },
      { op: "alert.insert", alert: alert("alr_old", { rule: "crash_loop", subject: "server:srv_c", project: "p", firstSeen: 1, lastSeen: 2 }) },
      { op: "alert.insert", alert: alert("alr_older", { rule: "crash_loop", subject: "server:srv_d", project: "p", firstSeen: 1, lastSeen: 1 }) },
    ]);
    await store.commit([{ op: "alert.resolve", id: "alr_old", at: 70 }]);
    await store.commit([{ op: "alert.resolve", id: "alr_older", at: 65 }]);
    expect((await store.listFiringAlerts()).map((a) => a.id)).toEqual(["alr_q", "alr_host", "alr_orphan", "alr_p"]);

    const list = async (f: Partial<Parameters<Store["listAlerts"]>[0]>) => (await store.listAlerts({ includeResolved: true, project: null, sharedRules: [], limit: 100, ...f })).map((a) => a.id);
    expect(await list({})).toEqual(["alr_orphan", "alr_host", "alr_q", "alr_p", "alr_old", "alr_older"]);
    expect(await list({ includeResolved: false })).toEqual(["alr_orphan", "alr_host", "alr_q", "alr_p"]);
    expect(await list({ project: "p" })).toEqual(["alr_p", "alr_old", "alr_older"]);
    expect(await list({ project: "p", sharedRules: ["host_offline"] })).toEqual(["alr_host", "alr_p", "alr_old", "alr_older"]);
    expect(await list({ project: "q", sharedRules: ["host_offline", "orphan_found"], includeResolved: false })).toEqual(["alr_orphan", "alr_host", "alr_q"]);
    expect(await list({ limit: 2 })).toEqual(["alr_orphan", "alr_host"]);
  });
});

describe("tokens and projects", () => {
  const token = (id: string, o: Partial<TokenRecord> = {}): TokenRecord => ({ id, name: `name-${id}`, role: "viewer", project: "p", createdAt: 1, createdBy: "test", revokedAt: null, lastUsedAt: null, ...o });

  it("round-trip, found by secret hash only, listed oldest first and per project", async () => {
    expect(await store.countTokens()).toBe(0);
    await store.commit([
      { op: "token.insert", token: token("tok_b", { createdAt: 2, role: "operator", project: "games" }), secretHash: "hash-b" },
      { op: "token.insert", token: token("tok_a", { createdAt: 1 }), secretHash: "hash-a" },
      { op: "token.insert", token: token("tok_root", { createdAt: 3, role: "admin", project: null }), secretHash: "hash-root" },
    ]);
    expect(await store.countTokens()).toBe(3);
    expect(await store.getToken("tok_b")).toEqual(token("tok_b", { createdAt: 2, role: "operator", project: "games" }));
    expect((await store.findTokenBySecretHash("hash-root"))?.id).toBe("tok_root");
    expect((await store.findTokenBySecretHash("hash-root"))?.project).toBeNull();
    expect(await store.findTokenBySecretHash("hash-nope")).toBeUndefined();
    expect(await store.getToken("tok_none")).toBeUndefined();
    expect((await store.listTokens()).map((t) => t.id)).toEqual(["tok_a", "tok_b", "tok_root"]);
    expect((await store.listTokens({ project: "games" })).map((t) => t.id)).toEqual(["tok_b"]);
    expect(await store.listTokens({ project: "none" })).toEqual([]);
    // Projects are recorded (ensure is idempotent) without disturbing the tokens.
    await store.commit([{ op: "project.ensure", name: "games", at: 5 }, { op: "project.ensure", name: "new", at: 5 }]);
    expect(await store.countTokens()).toBe(3);
  });

  it("revokes once; a revoked token is still found (to say it was revoked); a use is recorded", async () => {
    await store.commit([{ op: "token.insert", token: token("tok_1"), secretHash: "h1" }]);
    await store.commit([{ op: "token.touch", id: "tok_1", at: 1000 }]);
    expect((await store.getToken("tok_1"))?.lastUsedAt).toBe(1000);
    await store.commit([{ op: "token.revoke", id: "tok_1", at: 50 }]);
    // Revoked by another call meanwhile: NotFoundError (RevokeToken treats it as done).
    expectTyped(await rejection(store.commit([{ op: "token.revoke", id: "tok_1", at: 60 }])), NotFoundError, Code.NotFound);
    expect((await store.findTokenBySecretHash("h1"))?.revokedAt).toBe(50);
  });
});

describe("retention: bounded deletions of old rows", () => {
  it("events older than a cutoff go oldest first, at most `limit` a call", async () => {
    const ids = await append(Array.from({ length: 10 }, (_, i) => ({ type: "t", message: String(i), at: 100 + i })));
    expect(await store.pruneEventsOlderThan(105, 3)).toBe(3);
    expect(await store.firstEventId()).toBe(ids[3]);
    expect(await store.pruneEventsOlderThan(105, 3)).toBe(2);
    expect(await store.pruneEventsOlderThan(105, 3)).toBe(0);
    expect(messages(await store.readForward({ project: null, afterId: 0, upToId: 1e9, limit: 100 }))).toEqual(["5", "6", "7", "8", "9"]);
    expect(await store.lastEventId()).toBe(ids[9]);
  });

  it("events beyond the newest `keep` go oldest first, at most `limit` a call", async () => {
    const ids = await append(Array.from({ length: 10 }, (_, i) => ({ type: "t", message: String(i) })));
    expect(await store.pruneEventsBeyondCount(20, 100)).toBe(0);
    expect(await store.pruneEventsBeyondCount(4, 4)).toBe(4);
    expect(await store.pruneEventsBeyondCount(4, 4)).toBe(2);
    expect(await store.pruneEventsBeyondCount(4, 4)).toBe(0);
    expect((await store.listNewestFirst({ project: null, limit: 100 })).map((e) => e.id)).toEqual(ids.slice(6).reverse());
    // New events still get ids after the pruned ones.
    const [next] = await append([{ type: "t" }]);
    expect(next).toBeGreaterThan(ids[9]!);
  });

  it("finished commands go, except each server's latest finished one and every open one", async () => {
    const cmd = (id: string, serverId: string, createdAt: number): WriteOp => ({ op: "command.insert", command: create(CommandSchema, { id, serverId }), hostId: HOST, createdAt, deadlineAt: createdAt + 100 });
    const fin = (id: string, at: number): WriteOp => ({ op: "command.finish", id, state: "succeeded", at, reason: "", message: "" });
    await store.commit([{ op: "server.insert", server: newServer({ id: "srv_a", hostId: HOST }) }, { op: "server.insert", server: newServer({ id: "srv_b", hostId: HOST }) }]);
    for (let i = 1; i <= 4; i++) await store.commit([cmd(`cmd_a${i}`, "srv_a", i * 10), fin(`cmd_a${i}`, i * 10 + 1)]);
    await store.commit([cmd("cmd_b1", "srv_b", 10), fin("cmd_b1", 11)]);
    await store.commit([cmd("cmd_a5", "srv_a", 50)]); // open

    expect(await store.pruneFinishedCommands(1000, 2)).toBe(2);
    expect(await store.pruneFinishedCommands(1000, 2)).toBe(1);
    expect(await store.pruneFinishedCommands(1000, 2)).toBe(0);
    expect((await store.lastFinishedCommand("srv_a"))?.id).toBe("cmd_a4");
    expect((await store.lastFinishedCommand("srv_b"))?.id).toBe("cmd_b1");
    expect((await store.openCommandForServer("srv_a"))?.id).toBe("cmd_a5");
    for (const id of ["cmd_a1", "cmd_a2", "cmd_a3"]) expect(await store.getCommand(id), id).toBeUndefined();

    // Only those finished before the cutoff.
    await store.commit([fin("cmd_a5", 60)]);
    expect(await store.pruneFinishedCommands(41, 10)).toBe(0);
    expect(await store.pruneFinishedCommands(42, 10)).toBe(1);
    expect(await store.getCommand("cmd_a4")).toBeUndefined();
  });

  it("enrollment tokens used or expired before the cutoff go; usable ones stay", async () => {
    await store.commit([
      { op: "enrollment.insert", id: "enr_used", tokenHash: "h_used", createdAt: 1, expiresAt: 1000 },
      { op: "enrollment.insert", id: "enr_expired", tokenHash: "h_expired", createdAt: 1, expiresAt: 50 },
      { op: "enrollment.insert", id: "enr_live", tokenHash: "h_live", createdAt: 1, expiresAt: 1000 },
      { op: "enrollment.insert", id: "enr_used_late", tokenHash: "h_used_late", createdAt: 1, expiresAt: 1000 },
    ]);
    await store.commit([{ op: "enrollment.use", id: "enr_used", hostId: HOST, at: 10 }, { op: "enrollment.use", id: "enr_used_late", hostId: "host_b", at: 200 }]);
    expect(await store.pruneEnrollmentTokens(100, 1)).toBe(1);
    expect(await store.pruneEnrollmentTokens(100, 10)).toBe(1);
    expect(await store.pruneEnrollmentTokens(100, 10)).toBe(0);
    expect(await store.getEnrollmentToken("h_used")).toBeUndefined();
    expect(await store.getEnrollmentToken("h_expired")).toBeUndefined();
    expect(await store.getEnrollmentToken("h_live")).toEqual({ id: "enr_live", expiresAt: 1000, usedAt: null });
    expect((await store.getEnrollmentToken("h_used_late"))?.usedAt).toBe(200);
  });

  it("resolved alerts resolved before the cutoff go, oldest first, at most `limit` a call; firing ones stay", async () => {
    const a = (id: string, subject: string): WriteOp => ({
      op: "alert.insert",
      alert: { id, rule: "r", subject, project: "", hostId: "", serverId: "", severity: "warning", state: "firing", message: "", firstSeen: 1, lastSeen: 1, resolvedAt: null, acknowledgedBy: "", acknowledgedAt: null, mutedUntil: null },
    });
    await store.commit([a("alr_1", "s1"), a("alr_2", "s2"), a("alr_3", "s3"), a("alr_firing", "s4")]);
    await store.commit([{ op: "alert.resolve", id: "alr_2", at: 10 }, { op: "alert.resolve", id: "alr_1", at: 20 }, { op: "alert.resolve", id: "alr_3", at: 90 }]);
    expect(await store.pruneResolvedAlerts(50, 1)).toBe(1);
    expect(await store.getAlert("alr_2")).toBeUndefined();
    expect(await store.pruneResolvedAlerts(50, 5)).toBe(1);
    expect(await store.pruneResolvedAlerts(50, 5)).toBe(0);
    expect((await store.getAlert("alr_3"))?.state).toBe("resolved");
    expect((await store.getAlert("alr_firing"))?.state).toBe("firing");
  });
});
