/**
 * Linux capabilities of a server's container. Docker's default set is
 * CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL, SETGID, SETUID, SETPCAP,
 * NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE and SETFCAP.
 * berth keeps what ordinary servers use (entrypoints that chown their data
 * and drop to a service user with gosu/su-exec, binding ports below 1024,
 * signalling their children) and drops the rest. docs/security.md gives the
 * reason for each.
 */

/**
 * Dropped from every container unless the spec gives one back (and it is in
 * ADDABLE_CAPABILITIES). Sorted, Docker's spelling (no CAP_ prefix).
 */
export const DROPPED_CAPABILITIES = ["AUDIT_WRITE", "FSETID", "MKNOD", "NET_RAW", "SETFCAP", "SETPCAP", "SYS_CHROOT"] as const;

/**
 * What a spec may give back. Never MKNOD (a device node left in a data
 * directory opens the host's disks to whoever can reach the file on the
 * host) nor SETFCAP (file capabilities, like setuid bits, are privileges a
 * host user could pick up). Nothing outside Docker's default set is ever
 * added. The contract (ServerSpec.cap_add) carries the same list.
 */
export const ADDABLE_CAPABILITIES: readonly string[] = ["AUDIT_WRITE", "FSETID", "NET_RAW", "SETPCAP", "SYS_CHROOT"];

/**
 * The capabilities to drop for a spec that gives back `capAdd`. Throws
 * (naming what may be given back) when `capAdd` holds anything else: the
 * agent enforces the allow-list itself, whatever the manager sends.
 */
export function capabilitiesToDrop(capAdd: readonly string[] = []): string[] {
  const refused = capAdd.filter((c) => !ADDABLE_CAPABILITIES.includes(c));
  if (refused.length > 0) {
    throw new Error(`capabilities ${refused.join(", ")} cannot be added; a server may only get back ${ADDABLE_CAPABILITIES.join(", ")}`);
  }
  return DROPPED_CAPABILITIES.filter((c) => !capAdd.includes(c));
}
