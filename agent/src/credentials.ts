import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

/** What `berth-agent enroll` stores: everything `run` needs to dial the manager. */
export interface Credentials {
  /** The manager enrollment went through; an older agent that reads only this field still finds a manager. */
  managerUrl: string;
  /**
   * Every manager URL given at enrollment, in order, when there were several
   * (`--manager A,B`); `run` dials these, `managerUrl` is then one of them.
   */
  managerUrls?: string[];
  hostId: string;
  secret: string;
  managerId: string;
  /**
   * The manager's CA certificate (PEM file next to credentials.json), pinned
   * at enrollment from the token's fingerprint; the only trust root for https.
   */
  caFile?: string;
}

/** The managers `run` dials when no --manager overrides them: the enrolled list, or the one URL. */
export function enrolledManagerUrls(c: Pick<Credentials, "managerUrl" | "managerUrls">): string[] {
  return c.managerUrls && c.managerUrls.length > 0 ? [...c.managerUrls] : [c.managerUrl];
}

export function caPath(stateDir: string): string {
  return join(stateDir, "manager-ca.pem");
}

export function credentialPath(stateDir: string): string {
  return join(stateDir, "credentials.json");
}

/** Written with mode 0600: the secret lets anyone impersonate this host. `caPem` is stored beside it. */
export async function saveCredentials(stateDir: string, c: Credentials, caPem?: string): Promise<string> {
  const p = credentialPath(stateDir);
  await mkdir(dirname(p), { recursive: true, mode: 0o700 });
  if (caPem) {
    // Integrity matters, not secrecy: whoever can replace it can impersonate the manager.
    await writeFile(caPath(stateDir), caPem, { mode: 0o600 });
    c = { ...c, caFile: caPath(stateDir) };
  }
  await writeFile(p, JSON.stringify(c, null, 2) + "\n", { mode: 0o600 });
  await chmod(p, 0o600);
  return p;
}

/** The credentials and, when one was pinned, the manager's CA PEM. */
export async function loadCredentials(stateDir: string): Promise<Credentials & { caPem?: string }> {
  const p = credentialPath(stateDir);
  let text: string;
  try {
    text = await readFile(p, "utf8");
  } catch {
    throw new Error(`no credentials at ${p}; enroll first: berth-agent enroll --manager URL --token TOKEN`);
  }
  const c = JSON.parse(text) as Partial<Credentials>;
  if (!c.managerUrl || !c.hostId || !c.secret) throw new Error(`${p} is incomplete; enroll again`);
  if (!c.caFile) return c as Credentials;
  let caPem: string;
  try {
    caPem = await readFile(c.caFile, "utf8");
  } catch {
    throw new Error(`the manager's CA certificate ${c.caFile} (pinned at enrollment) is missing; enroll again`);
  }
  return { ...(c as Credentials), caPem };
}
