/**
 * The agent's `--manager` setting: one manager URL, or several separated by
 * commas (managers sharing one store; the link fails over between them in
 * the order given).
 */

/** A `--manager` value the agent cannot use; the message names the bad part. */
export class ManagerUrlError extends Error {
  override readonly name = "ManagerUrlError";
}

/**
 * Splits and checks `--manager URL[,URL...]`: each an absolute http:// or
 * https:// URL with a host and nothing after the port (the agent dials the
 * host, not a path). Returns them in order, normalised to `scheme://host:port`
 * as written (no trailing slash). Throws ManagerUrlError naming the first bad one.
 */
export function parseManagerUrls(value: string): string[] {
  const parts = value.split(",").map((p) => p.trim());
  if (parts.every((p) => p === "")) throw new ManagerUrlError("--manager is empty; give one URL or several separated by commas, e.g. https://manager-a.example:7000,https://manager-b.example:7000");
  const urls: string[] = [];
  for (const [i, part] of parts.entries()) {
    const which = parts.length > 1 ? `manager URL #${i + 1} ` : "--manager ";
    if (part === "") throw new ManagerUrlError(`${which}is empty in "${value}"; separate URLs with single commas`);
    let u: URL;
    try {
      u = new URL(part);
    } catch {
      throw new ManagerUrlError(`${which}"${part}" is not a URL; use e.g. https://manager.example:7000`);
    }
    if (u.protocol !== "http:" && u.protocol !== "https:") {
      throw new ManagerUrlError(`${which}"${part}" must start with http:// or https:// (got ${u.protocol})`);
    }
    if (!u.hostname) throw new ManagerUrlError(`${which}"${part}" names no host; use e.g. https://manager.example:7000`);
    if ((u.pathname !== "/" && u.pathname !== "") || u.search || u.hash || u.username || u.password) {
      throw new ManagerUrlError(`${which}"${part}" must be only scheme, host and port (the agent dials the host; a path, query or user is not used); use ${u.protocol}//${u.host}`);
    }
    const url = `${u.protocol}//${u.host}`;
    if (urls.includes(url)) throw new ManagerUrlError(`${which}"${part}" is listed twice; list each manager once`);
    urls.push(url);
  }
  return urls;
}
