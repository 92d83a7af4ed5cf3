import { DataRoot, type DataCheck } from "../../agent/src/data/data-root.js";

/**
 * A data root kept in memory, for SCALE RUNS ONLY: 5,000 simulated hosts ×
 * 20 servers would otherwise be 100,000 real directories, and every
 * inventory would stat them all. It keeps DataRoot's naming rules (only
 * `srv_…` ids) and answers like an empty directory per server; nothing
 * touches the file system. Behaviour tests use the real DataRoot.
 */
export class SimDataRoot extends DataRoot {
  private readonly dirs = new Map<string, number>();

  override async init(): Promise<string[]> {
    return [];
  }

  override async safePathFor(serverId: string): Promise<string> {
    return this.pathFor(serverId);
  }

  override async ensure(serverId: string): Promise<string> {
    const p = this.pathFor(serverId);
    if (!this.dirs.has(serverId)) this.dirs.set(serverId, Date.now());
    return p;
  }

  override async check(serverId: string): Promise<DataCheck> {
    this.pathFor(serverId);
    const at = this.dirs.get(serverId);
    return { serverId, exists: at !== undefined, sizeBytes: at !== undefined ? 4096 : 0, modifyTimeMs: at ?? 0 };
  }

  /** Sizes here never change: measured when created (else the agent's sizer would measure forever). */
  override measuredAt(serverId: string): number | undefined {
    return this.dirs.get(serverId);
  }

  /** Nothing to walk here: the inventory's check is the full one. */
  override async checkCached(serverId: string): Promise<DataCheck> {
    return this.check(serverId);
  }

  override async remove(serverId: string): Promise<void> {
    this.pathFor(serverId);
    this.dirs.delete(serverId);
  }

  override async list(): Promise<string[]> {
    return [...this.dirs.keys()];
  }

  override async diskSpace(): Promise<{ freeBytes: number; totalBytes: number }> {
    return { freeBytes: 900 * 2 ** 30, totalBytes: 1000 * 2 ** 30 };
  }
}
