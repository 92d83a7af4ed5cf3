import { describe, expect, it } from "vitest";
import { InvalidArgumentError, NotFoundError } from "../errors.js";
import { projectFor, type Caller } from "./caller.js";

const allProjects: Caller = { tokenId: "tok_a", name: "root", role: "admin", project: null };
const alpha: Caller = { tokenId: "tok_b", name: "ci", role: "operator", project: "alpha" };

describe("projectFor: one project-name rule for every caller", () => {
  it.each([["../../etc"], ["x".repeat(5000)], ["a\nb"], ["UPPER"], ["-lead"], ["trail-"], ["sp ace"]])(
    "refuses %j from an all-projects admin, naming the field",
    (name) => {
      expect(() => projectFor(allProjects, name)).toThrow(InvalidArgumentError);
      expect(() => projectFor(allProjects, name)).toThrow(/not a valid project name/);
    },
  );

  it("accepts a valid name, and defaults to the default project", () => {
    expect(projectFor(allProjects, " web-2 ")).toBe("web-2");
    expect(projectFor(allProjects, "")).toBe("default");
  });

  it("keeps a scoped token in its project: another project, valid or not, is not found", () => {
    expect(projectFor(alpha, "")).toBe("alpha");
    expect(() => projectFor(alpha, "beta")).toThrow(NotFoundError);
    expect(() => projectFor(alpha, "../../etc")).toThrow(NotFoundError);
  });
});
