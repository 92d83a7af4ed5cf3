import { describe, expect, it } from "vitest";
import { projectNetworkName } from "./project-network.js";

describe("projectNetworkName", () => {
  it.each([
    ["alpha", /^berth-alpha-[0-9a-f]{8}$/],
    ["Team Alpha!", /^berth-team-alpha-[0-9a-f]{8}$/],
    ["../../etc", /^berth-etc-[0-9a-f]{8}$/],
    ["---", /^berth-project-[0-9a-f]{8}$/],
    ["x".repeat(5000), /^berth-x{40}-[0-9a-f]{8}$/],
  ])("%j gives a Docker-safe name", (project, re) => {
    const name = projectNetworkName("mgr_a", project);
    expect(name).toMatch(re);
    // What the agent accepts (agent/src/runtime/project-network.ts).
    expect(name).toMatch(/^berth-[a-z0-9][a-z0-9_.-]{0,99}$/);
  });

  it("differs between projects that read alike and between managers", () => {
    expect(projectNetworkName("mgr_a", "Alpha")).not.toBe(projectNetworkName("mgr_a", "alpha"));
    expect(projectNetworkName("mgr_a", "alpha")).not.toBe(projectNetworkName("mgr_b", "alpha"));
    expect(projectNetworkName("mgr_a", "alpha")).toBe(projectNetworkName("mgr_a", "alpha"));
  });
});
