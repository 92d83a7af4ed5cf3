/**
 * A backup target picker with an "automatic" first choice (the manager picks):
 * the Move, Clone and Drain dialogs' "through which target" field.
 */
import type { BackupTarget } from "@berth/proto/berth/v1/backup_pb.js";
import { targetLabel } from "./use-targets.js";

export function TargetSelect(p: {
  label: string;
  value: string;
  onChange: (id: string) => void;
  /** The targets offered (already filtered to those that can do the job). */
  targets: readonly BackupTarget[];
  /** The targets are still being read. */
  loading: boolean;
  /** What the empty choice means, e.g. "Automatic: the first one both hosts reach". */
  automatic: string;
  hint?: string | false | undefined;
}) {
  return (
    <label className="field">
      <span className="label">{p.label}</span>
      <select value={p.value} onChange={(e) => p.onChange(e.target.value)} disabled={p.loading}>
        <option value="">{p.automatic}</option>
        {p.targets.map((t) => (
          <option key={t.id} value={t.id}>
            {targetLabel(t)}
          </option>
        ))}
      </select>
      {p.hint && <span className="hint">{p.hint}</span>}
    </label>
  );
}
