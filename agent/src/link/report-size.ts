import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { ContainerInfoSchema, DataDirSchema, InventorySchema, type ContainerInfo, type DataDir } from "@berth/proto/berth/v1/agent_pb.js";

/**
 * What one inventory part may weigh at most (encoded). The manager refuses
 * messages over 4 MiB; a part stays well below so that one inventory of any
 * size goes through (six servers with 0.9 MB of env each once made a single
 * inventory of 5.4 MB that the manager refused forever, and the host's
 * servers all showed Unknown).
 */
export const INVENTORY_PART_BYTES = 1024 * 1024;

/**
 * A container that weighs more than this once env and command are left out
 * (labels of someone else's container can be anything) is reported with
 * berth's own labels only.
 */
export const MAX_CONTAINER_BYTES = 16 * 1024;

/**
 * A container as the manager is told about it in inventories, events and
 * command results: without `env` and `command`. The manager decides by
 * labels (spec hash), state, ports and mounts; the environment can be large
 * (up to the spec's env cap per server) and may hold secrets. AdoptOrphan
 * asks for them on demand (INSPECT_CONTAINER), which keeps them.
 */
export function reportable(info: ContainerInfo): ContainerInfo {
  if (Object.keys(info.env).length === 0 && info.command.length === 0 && encodedSize(info) <= MAX_CONTAINER_BYTES) return info;
  const out = create(ContainerInfoSchema, { ...info, env: {}, command: [] });
  if (encodedSize(out) > MAX_CONTAINER_BYTES) {
    out.labels = Object.fromEntries(Object.entries(info.labels).filter(([k]) => k.startsWith("berth.")));
    out.mounts = out.mounts.slice(0, 16);
    out.mountPoints = out.mountPoints.slice(0, 16);
    out.networks = out.networks.slice(0, 16);
    out.error = out.error.slice(0, 1024);
  }
  return out;
}

type InventoryInit = MessageInitShape<typeof InventorySchema>;

/** One inventory's content before it is split (containers already `reportable`). */
export interface InventoryContent {
  containers: ContainerInfo[];
  dataDirs: DataDir[];
  otherDataDirs: string[];
  unmanaged: ContainerInfo[];
  unmanagedOmitted: number;
  dockerReachable: boolean;
}

/**
 * Splits one inventory into parts of at most about `maxBytes` each (a single
 * item larger than that travels alone). Every part but the last has `more`
 * set; all carry `partOf`. An inventory that fits is one part with `more`
 * false, exactly what an agent without parts sent.
 */
export function splitInventory(inv: InventoryContent, partOf: string, maxBytes = INVENTORY_PART_BYTES): InventoryInit[] {
  const parts: InventoryInit[] = [];
  let cur = emptyPart();
  let size = 0;
  const room = (bytes: number) => {
    // Field tag + length prefix: a few bytes per item on top of its own encoding.
    const cost = bytes + 6;
    if (size > 0 && size + cost > maxBytes) {
      parts.push(cur);
      cur = emptyPart();
      size = 0;
    }
    size += cost;
  };
  for (const c of inv.containers) {
    room(encodedSize(c));
    cur.containers.push(c);
  }
  for (const c of inv.unmanaged) {
    room(encodedSize(c));
    cur.unmanaged.push(c);
  }
  for (const d of inv.dataDirs) {
    room(toBinary(DataDirSchema, d).length);
    cur.dataDirs.push(d);
  }
  for (const name of inv.otherDataDirs) {
    room(Buffer.byteLength(name));
    cur.otherDataDirs.push(name);
  }
  parts.push(cur);
  return parts.map((p, i) => ({
    ...p,
    partOf,
    more: i < parts.length - 1,
    dockerReachable: inv.dockerReachable,
    unmanagedOmitted: inv.unmanagedOmitted,
  }));
}

function emptyPart(): { containers: ContainerInfo[]; unmanaged: ContainerInfo[]; dataDirs: DataDir[]; otherDataDirs: string[] } {
  return { containers: [], unmanaged: [], dataDirs: [], otherDataDirs: [] };
}

function encodedSize(c: ContainerInfo): number {
  return toBinary(ContainerInfoSchema, c).length;
}
