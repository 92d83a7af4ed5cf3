import { readdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { DescFile, DescService } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { PERMISSIONS, permissionFor, type Permission } from "./permissions.js";

const GEN = fileURLToPath(new URL("../../../proto/gen", import.meta.url));

/** Every service of every generated file, found on disk so a new proto file cannot be missed. */
async function allServices(): Promise<DescService[]> {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name));
      else if (e.name.endsWith("_pb.ts")) files.push(join(dir, e.name));
    }
  };
  walk(GEN);
  const services: DescService[] = [];
  for (const f of files) {
    const mod = (await import(pathToFileURL(f).href)) as Record<string, unknown>;
    for (const [name, v] of Object.entries(mod)) {
      if (name.startsWith("file_")) services.push(...(v as DescFile).services);
    }
  }
  return services;
}

const procedures = async () => (await allServices()).flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`));

describe("permission table", () => {
  it("has an entry for every method of every service descriptor", async () => {
    const all = await procedures();
    expect(all.length).toBeGreaterThanOrEqual(38);
    const missing = all.filter((p) => !(p in PERMISSIONS));
    expect(missing).toEqual([]);
  });

  it("has no entry for a method that does not exist", async () => {
    const all = new Set(await procedures());
    expect(Object.keys(PERMISSIONS).filter((p) => !all.has(p))).toEqual([]);
  });

  it("opens only health and reflection, and leaves only AgentService to agent auth", () => {
    const by = (auth: Permission["auth"]) => Object.keys(PERMISSIONS).filter((k) => PERMISSIONS[k]!.auth === auth);
    expect(by("open").every((k) => /^grpc\.(health|reflection)\./.test(k))).toBe(true);
    expect(by("agent").sort()).toEqual(["berth.v1.AgentService/Connect", "berth.v1.AgentService/Enroll"]);
    expect(by("token").every((k) => k.startsWith("berth.v1."))).toBe(true);
  });

  it("gives reads to viewers, lifecycle to operators, and destruction and credentials to admins", () => {
    const role = (p: string) => {
      const perm = PERMISSIONS[p]!;
      return perm.auth === "token" ? perm.role : perm.auth;
    };
    for (const m of ["GetServer", "ListServers", "WatchServers", "TailLogs"]) expect(role(`berth.v1.ServerService/${m}`)).toBe("viewer");
    for (const m of ["CreateServer", "UpdateServer", "StartServer", "StopServer", "PauseServer", "ResumeServer", "RestartServer", "RebuildServer", "DeleteServer", "RestoreServer"]) {
      expect(role(`berth.v1.ServerService/${m}`)).toBe("operator");
    }
    expect(role("berth.v1.ServerService/PurgeServer")).toBe("admin");
    expect(role("berth.v1.HostService/ListHosts")).toBe("viewer");
    expect(role("berth.v1.HostService/ResyncHost")).toBe("operator");
    expect(role("berth.v1.HostService/CreateEnrollmentToken")).toBe("admin");
    expect(role("berth.v1.HostService/RemoveHost")).toBe("admin");
    expect(role("berth.v1.AccessService/WhoAmI")).toBe("viewer");
    for (const m of ["CreateToken", "ListTokens", "RevokeToken"]) expect(role(`berth.v1.AccessService/${m}`)).toBe("admin");
    for (const m of ["ListEvents", "WatchEvents"]) expect(role(`berth.v1.EventService/${m}`)).toBe("viewer");
    expect(role("berth.v1.AlertService/ListAlerts")).toBe("viewer");
    expect(role("berth.v1.AlertService/AcknowledgeAlert")).toBe("operator");
    for (const m of ["ListOrphans", "AdoptOrphan", "DestroyOrphan"]) expect(role(`berth.v1.OrphanService/${m}`)).toBe("admin");
  });

  it("counts exactly the state-changing calls against the rate limit", () => {
    // Render and Preview compute an answer and change nothing.
    // WriteFile is one call per 1 MiB chunk of an upload: counting it would cap uploads at --rate-limit MiB/s.
    const uncounted = new Set(["berth.v1.FileService/WriteFile"]);
    // Queries compute an answer and change nothing (their cost is bounded by the filter budget instead).
    for (const q of ["berth.v1.QueryService/Aggregate", "berth.v1.SavedQueryService/RunSavedQuery"]) uncounted.add(q);
    for (const [p, perm] of Object.entries(PERMISSIONS)) {
      if (perm.auth !== "token") continue;
      const reads = /\/(Get|List|Watch|Tail|WhoAmI|Stat|Read|Render|Preview)/.test(p) || uncounted.has(p);
      expect([p, perm.mutates]).toEqual([p, !reads]);
    }
  });

  it("refuses what it does not know (fail closed)", () => {
    expect(permissionFor("berth.v1.ServerService", "Nope")).toBeUndefined();
    expect(permissionFor("berth.v1.ServerService", "constructor")).toBeUndefined();
    expect(permissionFor("berth.v1.ServerService", "GetServer")).toEqual({ auth: "token", role: "viewer", mutates: false });
  });
});
