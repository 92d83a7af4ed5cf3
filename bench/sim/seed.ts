/**
 * Seeds a manager database for the scale benchmark, through the manager's
 * own store (openStore: migrations; host.insert / server.insert batches) on
 * either engine, before the manager starts: N enrolled hosts (with their secrets, as enrollment would
 * leave them) and M servers per host, exactly as CreateServer records them
 * (validated spec defaults, phase Pending, generation 1). Going through the
 * API instead would make the setup of 100,000 servers take minutes of the
 * benchmark's budget without measuring anything it reports. Not for
 * production databases: it skips the ledger's `server.created` and
 * `host.enrolled` events.
 */
import { create } from "@bufbuild/protobuf";
import { DesiredState, Phase, RestartPolicy, ServerSpecSchema } from "@berth/proto/berth/v1/server_pb.js";
import { hashSecret, newId, newSecret } from "../../manager/src/ids.js";
import { containerName } from "../../manager/src/reconcile/reconciler.js";
import { specHash } from "../../manager/src/reconcile/spec-hash.js";
import type { WriteOp } from "../../manager/src/store/store.js";
import { openStore } from "../../manager/src/store/open.js";
import { initialStatus } from "../../manager/src/domain/records.js";

export interface SeededHost {
  hostId: string;
  secret: string;
  /** This host's servers, in creation order. */
  servers: SeededServer[];
}

export interface SeededServer {
  id: string;
  desired: DesiredState;
  /** The container berth would make for it: name and labels (manager, server, generation, spec hash). */
  container: { name: string; image: string; labels: Record<string, string> };
}

export const SIM_IMAGE = "berth-sim/app:1";

/**
 * Every `stoppedEvery`-th server of a host is declared stopped (its
 * container is created, not started): the event-churn benchmark's targets.
 */
export async function seedDatabase(opts: { storeUrl: string; agents: number; serversPerAgent: number; stoppedEvery: number }): Promise<SeededHost[]> {
  const store = await openStore(opts.storeUrl);
  const managerId = await store.clusterId();
  const hosts: SeededHost[] = [];
  const at = Date.now();
  try {
    for (let h = 0; h < opts.agents; h += 500) {
      const ops: WriteOp[] = [];
      for (let k = h; k < Math.min(opts.agents, h + 500); k++) {
        const hostId = newId("host");
        const secret = newSecret();
        ops.push({ op: "host.insert", id: hostId, name: `sim-${k}`, secretHash: hashSecret(secret), createdAt: at });
        const servers: SeededHost["servers"] = [];
        for (let i = 0; i < opts.serversPerAgent; i++) {
          const id = newId("srv");
          const desired = i % opts.stoppedEvery === 0 ? DesiredState.STOPPED : DesiredState.RUNNING;
          const name = `sim-${k}-${i}`;
          const spec = create(ServerSpecSchema, {
            name,
            hostId,
            image: SIM_IMAGE,
            command: ["serve", "--port", "8080"],
            env: { ROLE: "bench" },
            dataMountPath: "/data",
            restartPolicy: RestartPolicy.ON_FAILURE,
            desiredState: desired,
          });
          ops.push({
            op: "server.insert",
            server: {
              id,
              project: "default",
              name,
              hostId,
              generation: 1,
              spec,
              status: { ...initialStatus(), phase: Phase.PENDING, reason: "Created", message: "waiting for the reconciler" },
              dataInitialized: false,
              lifecycle: {},
              createdAt: at,
              updatedAt: at,
              deletedAt: null,
            },
          });
          const labels = { "berth.manager": managerId, "berth.server": id, "berth.generation": "1", "berth.spec-hash": specHash(spec) };
          servers.push({ id, desired, container: { name: containerName({ id, name }), image: SIM_IMAGE, labels } });
        }
        hosts.push({ hostId, secret, servers });
      }
      // One batch (one transaction) per 500 hosts.
      await store.commit(ops);
    }
  } finally {
    // The last connection to close checkpoints the WAL into the file.
    await store.close();
  }
  return hosts;
}
