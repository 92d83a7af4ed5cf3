import { describe, expect, it } from "vitest";
import { emptyForm, FormError, specFromForm } from "./spec-form-model.js";
import { checkSpecRules } from "./spec-rules.js";

const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as FormError);

describe("checkSpecRules (the contract's rules, before sending)", () => {
  it("names every problem of the form at once, each on its field", async () => {
    const spec = specFromForm({
      ...emptyForm(),
      name: "Web Server",
      image: "nginx",
      env: "1BAD=x",
      ports: [{ host: "80", container: "70000", udp: false }],
    });
    const err = await errorOf(checkSpecRules(spec));
    expect(err).toBeInstanceOf(FormError);
    expect(err?.field).toBe("name");
    expect(err?.problems.map((p) => p.field)).toEqual(["name", "env", "ports.0.container"]);
    expect(err?.problems[2]?.message).toBe("must be greater than or equal to 1 and less than or equal to 65535");
  });

  it("puts a port's problem on its row of the form, past empty rows", async () => {
    const form = { ...emptyForm(), name: "web-1", image: "nginx:1.27", ports: [{ host: "", container: "", udp: false }, { host: "80", container: "70000", udp: false }] };
    const err = await errorOf(checkSpecRules(specFromForm(form), form));
    expect(err?.problems.map((p) => p.field)).toEqual(["ports.1.container"]);
  });

  it("lets a good spec through", async () => {
    const spec = specFromForm({ ...emptyForm(), name: "web-1", image: "nginx:1.27", env: "A=1", ports: [{ host: "8080", container: "80", udp: false }] });
    await expect(checkSpecRules(spec)).resolves.toBeUndefined();
  });
});
