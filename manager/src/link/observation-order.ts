/**
 * Orders one agent link's observations against each other.
 *
 * The agent numbers everything it reports (AgentMessage.seq) from one
 * counter, taken when the observation began: an inventory's number is taken
 * before it lists the engine, so a command result or Docker event sent while
 * the inventory was being built carries a higher number. The manager applies
 * messages in arrival order, and an inventory can arrive after a newer
 * observation of the same server: applied whole, it put a container that a
 * finished `ensure-removed` had just removed back into the manager's view, and
 * the reconciler re-issued the command every millisecond until a later
 * inventory corrected it (1,000–3,000 commands per soft delete).
 *
 * So, per server, the link remembers the number of the newest observation
 * applied from a command result or an event; an inventory leaves alone every
 * server observed after the inventory began. Numbers are per agent process
 * (they restart at 1 with the agent), so one ObservationOrder lives exactly as
 * long as one link; a new link starts with a fresh full inventory. A message
 * without a number (0: an older agent) is unordered and applied as it comes.
 */
export class ObservationOrder {
  /** Server id → number of the newest per-server observation applied. */
  private readonly newest = new Map<string, bigint>();

  /** An observation of `serverId` numbered `seq` (a command result or an event) was applied. */
  note(serverId: string, seq: bigint): void {
    if (seq === 0n) return;
    if ((this.newest.get(serverId) ?? 0n) < seq) this.newest.set(serverId, seq);
  }

  /**
   * The servers an inventory numbered `seq` must leave as they are: observed
   * after it began. Marks the inventory supersedes are forgotten (what is
   * kept stays bounded by the servers touched while one inventory was built).
   */
  newerThan(seq: bigint): Set<string> {
    const keep = new Set<string>();
    if (seq === 0n) return keep;
    for (const [serverId, n] of this.newest) {
      if (n > seq) keep.add(serverId);
      else this.newest.delete(serverId);
    }
    return keep;
  }
}
