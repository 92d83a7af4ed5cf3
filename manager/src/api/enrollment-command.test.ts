import { describe, expect, it } from "vitest";
import { agentInvocation, enrollmentCommand } from "./host-service.js";

describe("the Add-host command", () => {
  it("an installed manager prints berth-agent, enroll and run sharing one --state-dir; a reachable URL needs no note", () => {
    const agent = agentInvocation("file:///opt/berth/manager/dist/berth-manager.mjs", "/opt/berth");
    expect(enrollmentCommand(agent, "https://m.example:7000", "enr_a.b")).toEqual({
      command: "berth-agent enroll --manager https://m.example:7000 --token enr_a.b --state-dir /var/lib/berth-agent && berth-agent run --state-dir /var/lib/berth-agent",
      notes: [],
    });
  });

  it("a manager on loopback says only an agent on its machine reaches it", () => {
    for (const url of ["http://127.0.0.1:7000", "http://localhost:7000", "http://[::1]:7000"]) {
      expect(enrollmentCommand({ bin: "berth-agent" }, url, "enr_a.b").notes).toEqual([expect.stringMatching(/^The manager listens on loopback .*only an agent on this machine can reach it/)]);
    }
  });

  it("a manager run from a checkout prints the checkout's agent through npx, from its root (quoted when it needs to be)", () => {
    const agent = agentInvocation("file:///home/me/my berth/manager/src/manager.ts", "/home/me/my berth");
    const { command, notes } = enrollmentCommand(agent, "https://m.example:7000", "enr_a.b");
    expect(command).toBe("cd '/home/me/my berth' && npx berth-agent enroll --manager https://m.example:7000 --token enr_a.b --state-dir /var/lib/berth-agent && npx berth-agent run --state-dir /var/lib/berth-agent");
    expect(notes).toEqual([expect.stringMatching(/runs from the checkout at \/home\/me\/my berth/)]);
  });

  it("a bundle run inside a checkout (the agent's sources beside it) prints the checkout's agent too", () => {
    expect(agentInvocation("file:///home/me/berth/manager/test-dist/berth-manager.mjs", "/home/me/berth", true)).toEqual({ bin: "npx berth-agent", cwd: "/home/me/berth" });
    expect(agentInvocation("file:///home/me/berth/manager/test-dist/berth-manager.mjs", "/home/me/berth", false)).toEqual({ bin: "berth-agent" });
  });

  it("an advertised URL that is not a URL is said, not printed silently", () => {
    expect(enrollmentCommand({ bin: "berth-agent" }, "not a url", "enr_a.b").notes).toEqual([expect.stringMatching(/is not a URL an agent can dial/)]);
    expect(enrollmentCommand({ bin: "berth-agent" }, "it's", "x").command).toContain("--manager 'it'\\''s'");
  });
});
