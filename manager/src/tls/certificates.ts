/**
 * The manager's TLS material: either files the operator provides
 * (`--tls-cert/--tls-key`) or, with `--tls-auto`, a private CA and a server
 * certificate created on first start next to the database and reused after.
 *
 * Node's crypto can make keys but not certificates, so `--tls-auto` drives the
 * `openssl` CLI (installed with apt-get when missing and running as root).
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes, X509Certificate } from "node:crypto";
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { isIP } from "node:net";
import { hostname, networkInterfaces } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** What the listener and the enrollment tokens need. */
export interface TlsMaterial {
  /** PEM: the server certificate followed by its chain up to the pinned CA. */
  cert: string;
  /** PEM private key of the server certificate. */
  key: string;
  /** PEM of the CA certificate agents pin (the last certificate of the chain). */
  caPem: string;
  /** SHA-256 of the CA certificate's DER, base64url: embedded in enrollment tokens. */
  caFingerprint: string;
  /** Where the files are, for the log and the operator. */
  files: { cert: string; key: string; ca?: string };
}

/** The PEM certificates of a bundle, in order. */
export function splitPemCertificates(pem: string): string[] {
  return pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((c) => `${c}\n`) ?? [];
}

/** SHA-256 of a certificate's DER encoding, base64url (43 characters). */
export function certificateFingerprint(pem: string): string {
  return createHash("sha256").update(new X509Certificate(pem).raw).digest("base64url");
}

/** The same fingerprint as `openssl x509 -fingerprint -sha256` prints it (AA:BB:...). */
export function fingerprintHex(fp: string): string {
  return Buffer.from(fp, "base64url").toString("hex").toUpperCase().match(/../g)!.join(":");
}

/**
 * Loads operator-provided files. The certificate file holds the server
 * certificate and its chain; the LAST certificate in it is the one agents pin,
 * so it should be the root CA (a self-signed certificate pins itself).
 */
export async function loadTlsFiles(certPath: string, keyPath: string): Promise<TlsMaterial> {
  const cert = await readFile(certPath, "utf8").catch((err: Error) => {
    throw new Error(`--tls-cert ${certPath}: ${err.message}`);
  });
  const key = await readFile(keyPath, "utf8").catch((err: Error) => {
    throw new Error(`--tls-key ${keyPath}: ${err.message}`);
  });
  const chain = splitPemCertificates(cert);
  if (chain.length === 0) throw new Error(`--tls-cert ${certPath} holds no PEM certificate`);
  const caPem = chain[chain.length - 1]!;
  return { cert, key, caPem, caFingerprint: certificateFingerprint(caPem), files: { cert: certPath, key: keyPath } };
}

/**
 * Names the server certificate must cover: the listen host (unless it is a
 * wildcard, then this machine's name and addresses), 127.0.0.1, ::1,
 * localhost, and `extra` (from --tls-san and the advertise URL).
 */
export function subjectAltNames(listenHost: string, extra: readonly string[]): string[] {
  const names = new Set<string>(["localhost", "127.0.0.1", "::1"]);
  const wildcard = listenHost === "" || listenHost === "0.0.0.0" || listenHost === "::";
  if (wildcard) {
    names.add(hostname());
    for (const addrs of Object.values(networkInterfaces())) {
      for (const a of addrs ?? []) if (!a.internal) names.add(a.address.replace(/%.*$/, ""));
    }
  } else {
    names.add(listenHost);
  }
  for (const n of extra) if (n.trim()) names.add(n.trim().replace(/^\[(.*)\]$/, "$1"));
  return [...names];
}

/** "DNS:localhost, IP Address:127.0.0.1" → ["localhost", "127.0.0.1"]. */
function sansOf(cert: X509Certificate): Set<string> {
  const out = new Set<string>();
  for (const part of (cert.subjectAltName ?? "").split(/,\s*/)) {
    const m = /^(?:DNS|IP Address):(.+)$/.exec(part);
    if (m) out.add(normalizeIp(m[1]!));
  }
  return out;
}

function normalizeIp(s: string): string {
  // X509Certificate prints IPv6 SANs expanded (0:0:0:0:0:0:0:1); compare in one form.
  if (isIP(s) === 6) return new URL(`http://[${s}]/`).hostname.replace(/^\[|\]$/g, "");
  return s;
}

const RENEW_BEFORE_MS = 30 * 24 * 3600 * 1000;
const CA_DAYS = 3650;
const SERVER_DAYS = 825;

/**
 * `--tls-auto`: a CA and a server certificate in `dir` (created 0700). The
 * CA is created once and kept, so enrolled agents keep trusting the manager;
 * the server certificate is re-issued by the same CA when it misses one of
 * `sans` or expires within 30 days.
 */
export async function ensureAutoTls(opts: { dir: string; sans: string[]; label: string; log?: (msg: string) => void }): Promise<TlsMaterial> {
  const { dir } = opts;
  const caPath = join(dir, "ca.pem");
  const caKeyPath = join(dir, "ca-key.pem");
  const certPath = join(dir, "server.pem");
  const keyPath = join(dir, "server-key.pem");
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await ensureOpenssl();

  const work = await mkdtemp(join(dir, ".issue-"));
  try {
    const config = join(work, "openssl.cnf");
    await writeFile(config, opensslConfig(opts.sans));
    if (!existsSync(caPath) || !existsSync(caKeyPath)) {
      opts.log?.(`creating a private CA in ${dir}`);
      await run("openssl", [
        "req", "-x509", "-new", "-config", config, "-extensions", "ca_ext",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", caKeyPath, "-out", caPath, "-days", String(CA_DAYS),
        "-set_serial", `0x${randomBytes(16).toString("hex")}`,
        "-subj", `/O=berth/CN=berth manager CA ${opts.label}`,
      ]);
      await chmod(caKeyPath, 0o600);
    }
    const caPem = await readFile(caPath, "utf8");
    const ca = new X509Certificate(caPem);
    if (!(await serverCertUsable(certPath, keyPath, ca, opts.sans))) {
      opts.log?.(`issuing the server certificate for ${opts.sans.join(", ")}`);
      const csr = join(work, "server.csr");
      await run("openssl", [
        "req", "-new", "-config", config,
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", keyPath, "-out", csr, "-subj", "/O=berth/CN=berth-manager",
      ]);
      await chmod(keyPath, 0o600);
      const leaf = join(work, "server-leaf.pem");
      await run("openssl", [
        "x509", "-req", "-in", csr, "-CA", caPath, "-CAkey", caKeyPath,
        "-set_serial", `0x${randomBytes(16).toString("hex")}`, "-days", String(SERVER_DAYS),
        "-extfile", config, "-extensions", "server_ext", "-out", leaf,
      ]);
      // The listener presents the whole chain, so agents can find the pinned CA in it.
      await writeFile(certPath, (await readFile(leaf, "utf8")) + caPem);
    }
    const cert = await readFile(certPath, "utf8");
    const key = await readFile(keyPath, "utf8");
    return { cert, key, caPem, caFingerprint: certificateFingerprint(caPem), files: { cert: certPath, key: keyPath, ca: caPath } };
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function serverCertUsable(certPath: string, keyPath: string, ca: X509Certificate, sans: string[]): Promise<boolean> {
  if (!existsSync(certPath) || !existsSync(keyPath)) return false;
  try {
    const leaf = new X509Certificate(splitPemCertificates(await readFile(certPath, "utf8"))[0]!);
    if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) return false;
    if (Date.parse(leaf.validTo) - Date.now() < RENEW_BEFORE_MS) return false;
    const have = sansOf(leaf);
    return sans.every((n) => have.has(normalizeIp(n)));
  } catch {
    return false;
  }
}

function opensslConfig(sans: string[]): string {
  const alt = sans.map((n, i) => (isIP(n) ? `IP.${i + 1} = ${n}` : `DNS.${i + 1} = ${n}`));
  return `[req]
distinguished_name = dn
prompt = no

[dn]
CN = berth

[ca_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash

[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = @alt

[alt]
${alt.join("\n")}
`;
}

/** Makes sure the openssl CLI is there, installing Debian's package as root when it is not. */
async function ensureOpenssl(): Promise<void> {
  if (await hasOpenssl()) return;
  if (process.getuid?.() === 0 && existsSync("/usr/bin/apt-get")) {
    await run("apt-get", ["install", "-y", "--no-install-recommends", "openssl"], { env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } }).catch(
      async () => {
        await run("apt-get", ["update"]);
        await run("apt-get", ["install", "-y", "--no-install-recommends", "openssl"], { env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" } });
      },
    );
    if (await hasOpenssl()) return;
  }
  throw new Error("--tls-auto needs the openssl command (apt-get install openssl), or pass your own --tls-cert and --tls-key");
}

async function hasOpenssl(): Promise<boolean> {
  try {
    await run("openssl", ["version"]);
    return true;
  } catch {
    return false;
  }
}
