/**
 * Enrollment tokens carry what an agent needs to trust the manager:
 *
 *     enr_<secret>                      plaintext manager (loopback/dev)
 *     enr_<secret>.<ca sha-256>         TLS manager: SHA-256 of its CA certificate (DER), base64url
 *
 * The agent connects, checks that the manager's presented chain contains a
 * certificate with that fingerprint BEFORE sending the secret, then keeps that
 * CA as its only trust root (like `kubeadm join --discovery-token-ca-cert-hash`).
 * The fingerprint is public; only the secret part is stored (hashed).
 * The agent parses the same format in agent/src/link/pinning.ts.
 */
export function formatEnrollmentToken(secret: string, caFingerprint: string | undefined): string {
  return caFingerprint ? `${secret}.${caFingerprint}` : secret;
}

export function parseEnrollmentToken(token: string): { secret: string; caFingerprint?: string } {
  const dot = token.indexOf(".");
  if (dot < 0) return { secret: token };
  return { secret: token.slice(0, dot), caFingerprint: token.slice(dot + 1) };
}
