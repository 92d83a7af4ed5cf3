/**
 * Decides which image-pull progress reports become ledger events: at most
 * one per server per `everyMs`, and always the last one (`done`), so a pull
 * of a large image leaves a readable trail instead of thousands of rows.
 */
export class PullProgressThrottle {
  private readonly last = new Map<string, number>();

  constructor(private readonly everyMs = 2_000) {}

  shouldRecord(serverId: string, done: boolean, now: number): boolean {
    if (done) {
      this.last.delete(serverId);
      return true;
    }
    const prev = this.last.get(serverId);
    if (prev !== undefined && now - prev < this.everyMs) return false;
    this.last.set(serverId, now);
    return true;
  }
}
