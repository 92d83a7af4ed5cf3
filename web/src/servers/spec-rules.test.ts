import { describe, expect, it } from "vitest";
import { emptyForm, FormError, specFromForm } from "./spec-form-model.js";
import { checkSpecRules } from "./spec-rules.js";

const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e as FormError);

describe("checkSpecRules (the contract's rules, before sending)", () => {
  it("names every problem of the form at once, on the field of the first", async () => {
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
    expect(err?.message.split("; ").map((p) => p.slice(0, p.indexOf(": ")))).toEqual(["spec.name", 'spec.env["1BAD"]', "spec.ports[0].container_port"]);
    expect(err?.message).toContain("spec.ports[0].container_port: must be greater than or equal to 1 and less than or equal to 65535");
  });

  it("lets a good spec through", async () => {
    const spec = specFromForm({ ...emptyForm(), name: "web-1", image: "nginx:1.27", env: "A=1", ports: [{ host: "8080", container: "80", udp: false }] });
    await expect(checkSpecRules(spec)).resolves.toBeUndefined();
  });
});
