/**
 * A backup, restore or transfer under way on a server (status.operation): what, which
 * stage, how far, with a bar. `compact` fits the servers table's phase cell
 * (bytes in the tooltip); the drawer header shows them inline.
 */
import type { Operation } from "@berth/proto/berth/v1/server_pb.js";
import { useHosts } from "../app-context.js";
import { operationProgress } from "./backup-model.js";

export function OperationProgress({ op, compact = false }: { op: Operation; compact?: boolean }) {
  const { names } = useHosts();
  const { text, bytes, percent } = operationProgress(op, (id) => names.get(id) ?? id);
  const full = bytes ? `${text} (${bytes})` : text;
  // A transfer's tooltip also says where it leaves from.
  const title = op.kind === "transfer" && op.sourceHost ? `${full}, from ${names.get(op.sourceHost) ?? op.sourceHost}` : full;
  return (
    <span className={`op-progress${compact ? " compact" : ""}`} title={title} data-testid="operation-progress" data-kind={op.kind}>
      <span className="op-text">{compact ? text : full}</span>
      <span
        className={`op-bar${percent === undefined ? " unknown" : ""}`}
        role="progressbar"
        aria-label={text}
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={percent}
        aria-valuetext={full}
      >
        <span style={percent === undefined ? undefined : { width: `${percent}%` }} />
      </span>
    </span>
  );
}
