/**
 * The manager's TLS material: either files the operator provides
 * (`--tls-cert/--tls-key`) or, with `--tls-auto`, a private CA and a server
 * certificate created on first start next to the database and reused after.
 *
 * Node's crypto makes keys but not certificates; `--tls-auto` builds them in
 * process with @peculiar/x509 over WebCrypto (ECDSA P-256). Names go into the
 * certificate as typed ASN.1 values, never through a text config, and nothing
 * is installed or run at run time.
 */
import { createHash, createPrivateKey, KeyObject, randomBytes, webcrypto, X509Certificate } from "node:crypto";
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { existsSync } from "node:fs";
import { isIP } from "node:net";
import { hostname, networkInterfaces } from "node:os";
import { join } from "node:path";

type X509 = typeof import("@peculiar/x509");
let x509Loaded: Promise<X509> | undefined;

/**
 * @peculiar/x509, loaded on first use: importing it (and the Reflect metadata
 * polyfill it needs) costs ~200 ms, which every process start paid, the
 * `token` and `backup` commands included, though only issuing a certificate
 * uses it.
 */
function loadX509(): Promise<X509> {
  x509Loaded ??= (async () => {
    // @peculiar/x509 resolves its parts through tsyringe, which needs the Reflect metadata API first.
    await import("reflect-metadata");
    const x509 = await import("@peculiar/x509");
    x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
    return x509;
  })();
  return x509Loaded;
}

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
const DAY_MS = 24 * 3600 * 1000;
/** ECDSA P-256 with SHA-256: what every TLS client (grpc-go, grpc-js, browsers, curl) accepts. */
const ALG = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;
/** A DNS name (or a wildcard one) as a SAN may hold it: letters, digits, '-', '.', '_', '*'. */
const DNS_NAME = /^(?:\*\.)?[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9_])?$/;

/**
 * The SAN entries for `names`: IP addresses as iPAddress, everything else as
 * dNSName. Throws naming the first value that is neither (a space, a comma,
 * a slash...), so a bad --tls-san stops the start with a message.
 */
export function sanEntries(names: readonly string[]): { type: "ip" | "dns"; value: string }[] {
  return names.map((n) => {
    if (isIP(n)) return { type: "ip", value: n };
    if (DNS_NAME.test(n) && !n.includes("..")) return { type: "dns", value: n };
    throw new Error(`"${n}" is neither a DNS name nor an IP address; fix --tls-san or --advertise-url`);
  });
}

/**
 * `--tls-auto`: a CA and a server certificate in `dir` (created 0700, keys
 * 0600). The CA is created once and kept, so enrolled agents keep trusting
 * the manager; the server certificate is re-issued by the same CA when it
 * misses one of `sans` or expires within 30 days.
 */
export async function ensureAutoTls(opts: { dir: string; sans: string[]; label: string; log?: (msg: string) => void; now?: Date }): Promise<TlsMaterial> {
  const { dir } = opts;
  const now = opts.now ?? new Date();
  const caPath = join(dir, "ca.pem");
  const caKeyPath = join(dir, "ca-key.pem");
  const certPath = join(dir, "server.pem");
  const keyPath = join(dir, "server-key.pem");
  // Checked before anything is written: a bad --tls-san stops the start.
  const sanList = sanEntries(opts.sans);
  await mkdir(dir, { recursive: true, mode: 0o700 });

  if (!existsSync(caPath) || !existsSync(caKeyPath)) {
    opts.log?.(`creating a private CA in ${dir}`);
    const x509 = await loadX509();
    const keys = await webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
    const ca = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serialNumber(),
      // A structured name: the label (the listen address) is a value, never parsed as a DN.
      name: [{ O: ["berth"] }, { CN: [`berth manager CA ${opts.label}`] }],
      notBefore: new Date(now.getTime() - 5 * 60_000),
      notAfter: new Date(now.getTime() + CA_DAYS * DAY_MS),
      keys,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    // The key first: a CA certificate without its key would be kept and never usable.
    await writePrivate(caKeyPath, pkcs8Pem(keys.privateKey));
    await writeFile(caPath, ca.toString("pem") + "\n");
  }
  const caPem = await readFile(caPath, "utf8");
  const ca = new X509Certificate(caPem);
  if (!(await serverCertUsable(certPath, keyPath, ca, opts.sans, now))) {
    opts.log?.(`issuing the server certificate for ${opts.sans.join(", ")}`);
    const caKey = await importSigningKey(await readFile(caKeyPath, "utf8"), caKeyPath);
    const x509 = await loadX509();
    const caCert = new x509.X509Certificate(caPem);
    const keys = await webcrypto.subtle.generateKey(ALG, true, ["sign", "verify"]);
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: serialNumber(),
      subject: [{ O: ["berth"] }, { CN: ["berth-manager"] }],
      issuer: caCert.subjectName,
      notBefore: new Date(now.getTime() - 5 * 60_000),
      notAfter: new Date(now.getTime() + SERVER_DAYS * DAY_MS),
      signingKey: caKey,
      publicKey: keys.publicKey,
      signingAlgorithm: ALG,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(caCert),
        new x509.SubjectAlternativeNameExtension(sanList),
      ],
    });
    await writePrivate(keyPath, pkcs8Pem(keys.privateKey));
    // The listener presents the whole chain, so agents can find the pinned CA in it.
    await writeFile(certPath, `${leaf.toString("pem")}\n${caPem}`);
  }
  const cert = await readFile(certPath, "utf8");
  const key = await readFile(keyPath, "utf8");
  return { cert, key, caPem, caFingerprint: certificateFingerprint(caPem), files: { cert: certPath, key: keyPath, ca: caPath } };
}

/** 16 random bytes, high bit clear: a positive serial (RFC 5280 4.1.2.2). */
function serialNumber(): string {
  const b = randomBytes(16);
  b[0] = (b[0]! & 0x7f) | 0x01;
  return b.toString("hex");
}

function pkcs8Pem(key: webcrypto.CryptoKey): string {
  return KeyObject.from(key).export({ type: "pkcs8", format: "pem" }) as string;
}

/** The CA's private key (PKCS#8 or SEC1 PEM, as earlier versions wrote it) as a WebCrypto signing key. */
async function importSigningKey(pem: string, path: string): Promise<webcrypto.CryptoKey> {
  try {
    const der = createPrivateKey(pem).export({ type: "pkcs8", format: "der" });
    return await webcrypto.subtle.importKey("pkcs8", der, ALG, false, ["sign"]);
  } catch (err) {
    throw new Error(`cannot use the CA key ${path} (an ECDSA P-256 key is expected): ${(err as Error).message}; move the tls directory away to create a new CA (agents then need new enrollment tokens)`);
  }
}

/** Writes a private key readable by its owner only, replacing any old file in one step. */
async function writePrivate(path: string, pem: string): Promise<void> {
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, pem, { mode: 0o600 });
  // The umask cannot widen 0600, but a file left by an older version could be wider: be exact.
  await chmod(tmp, 0o600);
  await rename(tmp, path);
}

async function serverCertUsable(certPath: string, keyPath: string, ca: X509Certificate, sans: string[], now: Date): Promise<boolean> {
  if (!existsSync(certPath) || !existsSync(keyPath)) return false;
  try {
    const leaf = new X509Certificate(splitPemCertificates(await readFile(certPath, "utf8"))[0]!);
    if (!leaf.checkIssued(ca) || !leaf.verify(ca.publicKey)) return false;
    if (Date.parse(leaf.validTo) - now.getTime() < RENEW_BEFORE_MS) return false;
    // The key on disk must be the certificate's (a crash between the two writes leaves them apart).
    if (!leaf.checkPrivateKey(createPrivateKey(await readFile(keyPath, "utf8")))) return false;
    const have = sansOf(leaf);
    return sans.every((n) => have.has(normalizeIp(n)));
  } catch {
    return false;
  }
}
