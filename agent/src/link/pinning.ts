/**
 * First contact with a TLS manager. The enrollment token carries the SHA-256
 * of the manager's CA certificate (`enr_<secret>.<fingerprint>`, the format
 * of manager/src/tls/enrollment-token.ts). Before the secret is sent, the agent
 * opens a TLS connection, finds the certificate with that fingerprint in the
 * chain the manager presents, and from then on trusts only that CA: the
 * enrollment call itself already verifies the manager against it.
 */
import { createHash, X509Certificate } from "node:crypto";
import { connect, type PeerCertificate, type DetailedPeerCertificate } from "node:tls";

export function parseEnrollmentToken(token: string): { secret: string; caFingerprint?: string } {
  const dot = token.indexOf(".");
  if (dot < 0) return { secret: token };
  return { secret: token.slice(0, dot), caFingerprint: token.slice(dot + 1) };
}

/** SHA-256 of a certificate's DER, base64url: the token's fingerprint format. */
export function fingerprintOf(der: Buffer): string {
  return createHash("sha256").update(der).digest("base64url");
}

export class PinMismatchError extends Error {}

/**
 * Connects to `host:port` over TLS without trusting anything yet, and returns
 * the PEM of the presented certificate whose SHA-256 is `fingerprint`.
 * Throws PinMismatchError when the manager presents no such certificate:
 * whoever answers is not the manager that issued the token.
 */
export async function fetchPinnedCa(host: string, port: number, fingerprint: string, timeoutMs = 10_000): Promise<string> {
  const chain = await new Promise<DetailedPeerCertificate[]>((resolve, reject) => {
    const socket = connect({
      host,
      port,
      ...(isIpLiteral(host) ? {} : { servername: host }),
      // Nothing is trusted yet: the fingerprint check below is the trust decision.
      rejectUnauthorized: false,
      ALPNProtocols: ["h2"],
    });
    const timer = setTimeout(() => socket.destroy(new Error(`no TLS handshake with ${host}:${port} within ${timeoutMs} ms`)), timeoutMs);
    socket.once("secureConnect", () => {
      clearTimeout(timer);
      const certs: DetailedPeerCertificate[] = [];
      let c: DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
      const seen = new Set<string>();
      while (c?.raw && !seen.has(c.fingerprint256)) {
        seen.add(c.fingerprint256);
        certs.push(c);
        c = c.issuerCertificate;
      }
      socket.end();
      resolve(certs);
    });
    socket.once("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`TLS connection to ${host}:${port} failed: ${err.message}; is the manager serving TLS (--tls-auto)?`));
    });
  });
  const match = chain.find((c: PeerCertificate) => fingerprintOf(c.raw) === fingerprint);
  if (!match) {
    throw new PinMismatchError(
      `the manager at ${host}:${port} presented no certificate with the CA fingerprint in the enrollment token ` +
        `(sha256 ${hex(fingerprint)}); it is not the manager that issued the token, or something in between intercepts the connection. ` +
        "The token was NOT sent. Check the --manager URL, or create a new token on the right manager",
    );
  }
  return new X509Certificate(match.raw).toString();
}

function hex(fp: string): string {
  return Buffer.from(fp, "base64url").toString("hex").toUpperCase().match(/../g)?.join(":") ?? fp;
}

function isIpLiteral(host: string): boolean {
  return /^[\d.]+$/.test(host) || host.includes(":");
}
