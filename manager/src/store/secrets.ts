import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from "node:crypto";
import { chmodSync, closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, statSync, writeSync } from "node:fs";
import type { Command } from "@berth/proto/berth/v1/agent_pb.js";
import type { ServerSpec } from "@berth/proto/berth/v1/server_pb.js";
import { InvalidArgumentError } from "../errors.js";

/** What every reader gets instead of a secret env value; sent back in UpdateServer it keeps the stored value. */
export const SECRET_MASK = "********";
/** A sealed value in `spec_json` and in stored commands: `enc:v1:<base64url nonce|ciphertext|tag>`. */
const SEALED_PREFIX = "enc:v1:";

const KEY_BYTES = 32;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
/** The meta row proving which key sealed this database's secrets (checked at start). */
export const KEY_CHECK_META = "secret_key_check";
const KEY_CHECK_PLAIN = "berth secret key check";

/** The secret key cannot open what this database holds (or cannot be read at all). */
export class SecretKeyError extends Error {
  override readonly name = "SecretKeyError";
}

/**
 * Seals and opens secret env values (AES-256-GCM, random 96-bit nonce) and
 * keys the spec hash's stand-in for them (HMAC-SHA256). Both keys are derived
 * from the one 32-byte secret key with HKDF under distinct labels, so the hash
 * on a container label (readable by anyone with Docker access) reveals nothing
 * a brute force of the value could check without the key. Every ciphertext is
 * bound to its server and env key (GCM additional data): one server's sealed
 * value does not open as another's.
 */
export class SecretBox {
  private readonly encKey: Buffer;
  private readonly macKey: Buffer;

  constructor(key: Buffer) {
    if (key.length !== KEY_BYTES) throw new SecretKeyError(`a secret key is ${KEY_BYTES} bytes, got ${key.length}`);
    this.encKey = Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), "berth secret env aes-256-gcm", KEY_BYTES));
    this.macKey = Buffer.from(hkdfSync("sha256", key, Buffer.alloc(0), "berth spec hash hmac-sha256", KEY_BYTES));
  }

  /** A box with a fresh random key (`:memory:` databases, tests). */
  static ephemeral(): SecretBox {
    return new SecretBox(randomBytes(KEY_BYTES));
  }

  seal(plain: string, context: string): string {
    const nonce = randomBytes(NONCE_BYTES);
    const c = createCipheriv("aes-256-gcm", this.encKey, nonce);
    c.setAAD(Buffer.from(context));
    const body = Buffer.concat([c.update(plain, "utf8"), c.final()]);
    return SEALED_PREFIX + Buffer.concat([nonce, body, c.getAuthTag()]).toString("base64url");
  }

  /** The plaintext of `sealed`; throws SecretKeyError when it was sealed under another key or context. */
  open(sealed: string, context: string): string {
    if (!isSealed(sealed)) throw new SecretKeyError("not a sealed value");
    const raw = Buffer.from(sealed.slice(SEALED_PREFIX.length), "base64url");
    if (raw.length < NONCE_BYTES + TAG_BYTES) throw new SecretKeyError("a sealed value is truncated");
    const d = createDecipheriv("aes-256-gcm", this.encKey, raw.subarray(0, NONCE_BYTES));
    d.setAAD(Buffer.from(context));
    d.setAuthTag(raw.subarray(raw.length - TAG_BYTES));
    try {
      return Buffer.concat([d.update(raw.subarray(NONCE_BYTES, raw.length - TAG_BYTES)), d.final()]).toString("utf8");
    } catch {
      throw new SecretKeyError("a sealed value does not open with this secret key (another key sealed it, or it was altered)");
    }
  }

  /** Keyed digest of a plaintext: stable across re-sealing, useless without the key. */
  mac(plain: string): string {
    return createHmac("sha256", this.macKey).update(plain, "utf8").digest("hex");
  }
}

export function isSealed(v: string): boolean {
  return v.startsWith(SEALED_PREFIX);
}

/** The additional data a server's env value is sealed under. */
function envContext(serverId: string, key: string): string {
  return `env\0${serverId}\0${key}`;
}

/**
 * The spec as it is written to the database: every value of a key in
 * `secret_env` sealed (values already sealed are kept as they are). Throws
 * when there is something to seal and no box: a secret is never written in
 * the clear.
 */
export function sealSpec(serverId: string, spec: ServerSpec, box: SecretBox | undefined): ServerSpec {
  if (spec.secretEnv.length === 0) return spec;
  let env: Record<string, string> | undefined;
  for (const k of spec.secretEnv) {
    const v = spec.env[k];
    if (v === undefined || isSealed(v)) continue;
    if (!box) throw new SecretKeyError("a secret env value must be sealed but the store has no secret key");
    env ??= { ...spec.env };
    env[k] = box.seal(v, envContext(serverId, k));
  }
  return env ? { ...spec, env } : spec;
}

/** The seal's context of a backup target's secret access key: it opens for that target only. */
export function backupTargetContext(targetId: string): string {
  return `backup-target:${targetId}`;
}

/** The plaintext of a stored secret value (for the spec hash and the agent). */
export function openEnvValue(box: SecretBox | undefined, serverId: string, key: string, value: string): string {
  if (!isSealed(value)) return value;
  if (!box) throw new SecretKeyError(`env ${key} of ${serverId} is sealed but no secret key is loaded`);
  return box.open(value, envContext(serverId, key));
}

/**
 * The command as the agent must get it: sealed env values opened. Stored
 * commands keep them sealed; this runs only on the way to the wire.
 */
export function openCommand(command: Command, box: SecretBox | undefined): Command {
  const loc = command.backup?.location?.kind;
  if (loc?.case === "s3" && isSealed(loc.value.secretAccessKey)) {
    if (!box) throw new SecretKeyError(`the secret of backup target ${loc.value.targetId} is sealed but no secret key is loaded`);
    const secretAccessKey = box.open(loc.value.secretAccessKey, backupTargetContext(loc.value.targetId));
    command = { ...command, backup: { ...command.backup!, location: { ...command.backup!.location!, kind: { case: "s3", value: { ...loc.value, secretAccessKey } } } } };
  }
  const job = command.install;
  if (job && Object.values(job.env).some(isSealed)) {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(job.env)) env[k] = openEnvValue(box, command.serverId, k, v);
    command = { ...command, install: { ...job, env } };
  }
  const c = command.container;
  if (!c || !Object.values(c.env).some(isSealed)) return command;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(c.env)) env[k] = openEnvValue(box, command.serverId, k, v);
  return { ...command, container: { ...c, env } };
}

/** The spec as every reader gets it: secret values replaced by SECRET_MASK. */
export function maskSpec(spec: ServerSpec): ServerSpec {
  if (spec.secretEnv.length === 0) return spec;
  const env = { ...spec.env };
  for (const k of spec.secretEnv) if (k in env) env[k] = SECRET_MASK;
  return { ...spec, env };
}

/**
 * The env a CreateServer/UpdateServer request means, given the stored spec
 * (undefined on create): SECRET_MASK for a key still flagged secret keeps the
 * stored (sealed) value; any other value is new plaintext. Refuses a flagged
 * key that is not in env, the mask where nothing is stored (or for a key no
 * longer flagged, whose stored value the API will not reveal), and values
 * shaped like sealed ones (a sealed value is never accepted from a caller:
 * the manager would open it into a container).
 */
export function mergeSecretEnv(next: ServerSpec, stored: ServerSpec | undefined): ServerSpec {
  const flagged = new Set(next.secretEnv);
  for (const k of next.secretEnv) {
    if (!(k in next.env)) throw new InvalidArgumentError("spec.secret_env", `${k} is not a key of env; add it to env or remove it from secret_env`);
  }
  let env: Record<string, string> | undefined;
  for (const [k, v] of Object.entries(next.env)) {
    if (isSealed(v)) throw new InvalidArgumentError(`spec.env["${k}"]`, `values starting with "${SEALED_PREFIX}" are reserved for sealed secrets; send the plain value`);
    if (v !== SECRET_MASK) continue;
    const old = stored?.env[k];
    const wasSecret = stored?.secretEnv.includes(k) ?? false;
    if (!flagged.has(k) || !wasSecret || old === undefined) {
      throw new InvalidArgumentError(
        `spec.env["${k}"]`,
        wasSecret
          ? `"${SECRET_MASK}" keeps a stored secret only while ${k} stays in secret_env; send the value to store it unflagged`
          : `"${SECRET_MASK}" stands for a stored secret value and ${k} has none; send the value`,
      );
    }
    env ??= { ...next.env };
    env[k] = old;
  }
  return env ? { ...next, env } : next;
}

/**
 * Reads the 32-byte secret key at `path`, creating it (0600, random) when it
 * is missing and the database holds nothing sealed yet (`databaseHasSecrets`
 * false). Accepts 32 raw bytes or 64 hex characters (`openssl rand -hex 32`).
 * Returns a warning to log when others may read the file.
 */
export function loadSecretKey(path: string, databaseHasSecrets: boolean): { box: SecretBox; created: boolean; warning?: string } {
  if (!existsSync(path)) {
    if (databaseHasSecrets) {
      throw new SecretKeyError(
        `secret key file ${path} is missing, and this database holds secrets sealed with a key; restore the key file backed up with the database ` +
          `(or point --secret-key-file / BERTH_SECRET_KEY_FILE at it). Starting with a new key would leave those secrets unreadable.`,
      );
    }
    const key = randomBytes(KEY_BYTES);
    const tmp = `${path}.${process.pid}.tmp`;
    const fd = openSync(tmp, "wx", 0o600);
    try {
      writeSync(fd, key);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    chmodSync(tmp, 0o600);
    renameSync(tmp, path);
    return { box: new SecretBox(key), created: true };
  }
  let raw: Buffer;
  try {
    raw = readFileSync(path);
  } catch (err) {
    throw new SecretKeyError(`cannot read secret key file ${path}: ${(err as Error).message}`);
  }
  const text = raw.toString("latin1").trim();
  const key = raw.length === KEY_BYTES ? raw : /^[0-9a-fA-F]{64}$/.test(text) ? Buffer.from(text, "hex") : undefined;
  if (!key) throw new SecretKeyError(`secret key file ${path} holds ${raw.length} bytes; it must hold 32 random bytes (or 64 hex characters: openssl rand -hex 32)`);
  const mode = statSync(path).mode & 0o777;
  const warning = mode & 0o077 ? `secret key file ${path} has mode ${mode.toString(8).padStart(4, "0")}: others may read it; chmod 600 it` : undefined;
  return { box: new SecretBox(key), created: false, ...(warning ? { warning } : {}) };
}

/**
 * Proves `box` holds the key this database's secrets were sealed with, by the
 * check value stored at the first start with a key. Throws SecretKeyError
 * otherwise: a manager with the wrong key would send undecryptable garbage to
 * containers, so it must not start.
 */
export async function checkSecretKey(meta: { get(key: string): Promise<string | undefined>; set(key: string, value: string): Promise<void> }, box: SecretBox, keyPath: string): Promise<void> {
  const stored = await meta.get(KEY_CHECK_META);
  if (stored === undefined) {
    await meta.set(KEY_CHECK_META, box.seal(KEY_CHECK_PLAIN, "key-check"));
    return;
  }
  try {
    if (box.open(stored, "key-check") === KEY_CHECK_PLAIN) return;
  } catch {
    // Falls through to the message below.
  }
  throw new SecretKeyError(
    `secret key ${keyPath} is not the key this database's secret env values were sealed with; start with the key file backed up with this database ` +
      `(--secret-key-file / BERTH_SECRET_KEY_FILE). The manager refuses to start rather than send containers values it cannot decrypt.`,
  );
}
