import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";

/** What `berth-agent enroll` stores: everything `run` needs to dial the manager. */
export interface Credentials {
  managerUrl: string;
  hostId: string;
  secret: string;
  managerId: string;
}

export function credentialPath(stateDir: string): string {
  return join(stateDir, "credentials.json");
}

/** Written with mode 0600: the secret lets anyone impersonate this host. */
export async function saveCredentials(stateDir: string, c: Credentials): Promise<string> {
  const p = credentialPath(stateDir);
  await mkdir(dirname(p), { recursive: true, mode: 0o700 });
  await writeFile(p, JSON.stringify(c, null, 2) + "\n", { mode: 0o600 });
  await chmod(p, 0o600);
  return p;
}

export async function loadCredentials(stateDir: string): Promise<Credentials> {
  const p = credentialPath(stateDir);
  let text: string;
  try {
    text = await readFile(p, "utf8");
  } catch {
    throw new Error(`no credentials at ${p}; enroll first: berth-agent enroll --manager URL --token TOKEN`);
  }
  const c = JSON.parse(text) as Partial<Credentials>;
  if (!c.managerUrl || !c.hostId || !c.secret) throw new Error(`${p} is incomplete; enroll again`);
  return c as Credentials;
}
