import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkServerIdentity, connect, createServer } from "node:tls";
import { afterEach, describe, expect, it } from "vitest";
import { certificateFingerprint, ensureAutoTls, sanEntries, type TlsMaterial } from "./certificates.js";

/** Completes a TLS handshake to a server using `m`, trusting only its CA and checking `servername` (or an IP). */
async function handshake(m: TlsMaterial, name: string): Promise<void> {
  const server = createServer({ cert: m.cert, key: m.key }, (s) => s.end());
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  try {
    await new Promise<void>((resolve, reject) => {
      const s = connect({
        port: (server.address() as AddressInfo).port,
        host: "127.0.0.1",
        ca: m.caPem,
        // Verify the certificate against `name` instead of the address dialled.
        checkServerIdentity: (_host, cert) => checkServerIdentity(name, cert),
        ...(/^[\d.]+$|:/.test(name) ? {} : { servername: name }),
      });
      s.once("secureConnect", () => {
        s.destroy();
        resolve();
      });
      s.once("error", reject);
    });
  } finally {
    server.close();
  }
}

describe("--tls-auto: a private CA and server certificate made in process", () => {
  const dirs: string[] = [];
  const tmp = () => {
    const d = mkdtempSync(join(tmpdir(), "berth-tls-"));
    dirs.push(d);
    return join(d, "tls");
  };
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("creates a CA and a chain TLS clients accept for every SAN, with private keys 0600, without running any program", async () => {
    const dir = tmp();
    const path = process.env.PATH;
    // Nothing to exec: the old implementation ran openssl (and apt-get) from PATH.
    process.env.PATH = "";
    let m: TlsMaterial;
    try {
      m = await ensureAutoTls({ dir, sans: ["localhost", "127.0.0.1", "::1", "berth.example.com"], label: "127.0.0.1:7000" });
    } finally {
      process.env.PATH = path;
    }
    expect(statSync(join(dir, "ca-key.pem")).mode & 0o777).toBe(0o600);
    expect(statSync(join(dir, "server-key.pem")).mode & 0o777).toBe(0o600);
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const ca = new X509Certificate(m.caPem);
    expect(ca.ca).toBe(true);
    expect(ca.subject).toContain("CN=berth manager CA 127.0.0.1:7000");
    expect(ca.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1");
    const leaf = new X509Certificate(readFileSync(join(dir, "server.pem")));
    expect(leaf.ca).toBe(false);
    expect(leaf.checkIssued(ca) && leaf.verify(ca.publicKey)).toBe(true);
    expect(leaf.subjectAltName).toContain("IP Address:127.0.0.1");
    expect(leaf.subjectAltName).toContain("DNS:berth.example.com");
    expect(leaf.keyUsage).toContain("1.3.6.1.5.5.7.3.1");
    expect(m.caFingerprint).toBe(certificateFingerprint(m.caPem));
    for (const name of ["localhost", "127.0.0.1", "::1", "berth.example.com"]) await handshake(m, name);
    await expect(handshake(m, "other.example.com")).rejects.toThrow(/altnames/);
  });

  it("keeps the CA across starts and re-issues the server certificate for a new name or near expiry", async () => {
    const dir = tmp();
    const first = await ensureAutoTls({ dir, sans: ["localhost"], label: "a" });
    const same = await ensureAutoTls({ dir, sans: ["localhost"], label: "a" });
    expect(same.cert).toBe(first.cert);
    const more = await ensureAutoTls({ dir, sans: ["localhost", "10.1.2.3"], label: "a" });
    expect(more.caPem).toBe(first.caPem);
    expect(more.cert).not.toBe(first.cert);
    await handshake(more, "10.1.2.3");
    // 800 days on, the 825-day certificate is inside its 30-day renewal window.
    const later = await ensureAutoTls({ dir, sans: ["localhost", "10.1.2.3"], label: "a", now: new Date(Date.now() + 800 * 24 * 3600 * 1000) });
    expect(later.caPem).toBe(first.caPem);
    expect(later.cert).not.toBe(more.cert);
  });

  it("refuses names that are not DNS names or IP addresses (they were written unescaped into an openssl config)", async () => {
    expect(sanEntries(["localhost", "::1", "*.berth.example", "a_b.local"])).toEqual([
      { type: "dns", value: "localhost" },
      { type: "ip", value: "::1" },
      { type: "dns", value: "*.berth.example" },
      { type: "dns", value: "a_b.local" },
    ]);
    for (const bad of ["a b", "evil\nDNS.99 = attacker.example", "x,y", "a/b", "", "a..b", "é.example"]) {
      expect(() => sanEntries([bad]), bad).toThrow(/neither a DNS name nor an IP address/);
    }
    await expect(ensureAutoTls({ dir: tmp(), sans: ["localhost", "bad name"], label: "a" })).rejects.toThrow(/"bad name" is neither/);
  });
});
