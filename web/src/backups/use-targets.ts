/**
 * The backup targets (ListBackupTargets), fetched when a view that needs them
 * opens: the Backups tab, the targets page, the move, clone and drain dialogs.
 */
import { useCallback, useEffect, useState } from "react";
import type { BackupTarget } from "@berth/proto/berth/v1/backup_pb.js";
import { useSession } from "../app-context.js";

/** Attempts at listing the targets before the view shows the error (1 s, 2 s, 4 s apart). */
const TARGET_ATTEMPTS = 4;

export interface Targets {
  targets: BackupTarget[] | undefined;
  error: unknown;
  refresh: () => Promise<void>;
}

export function useTargets(): Targets {
  const { api } = useSession();
  const [state, setState] = useState<{ targets: BackupTarget[] | undefined; error: unknown }>({ targets: undefined, error: undefined });
  const refresh = useCallback(async () => {
    // A passing failure (the manager restarting, a refused connection) must not leave a form
    // unusable until the view is opened again: try a few times before showing it.
    for (let attempt = 1; ; attempt++) {
      try {
        setState({ targets: (await api.backups.listBackupTargets({}, { timeoutMs: 10_000 })).targets, error: undefined });
        return;
      } catch (error) {
        if (attempt >= TARGET_ATTEMPTS) {
          setState((s) => ({ ...s, error }));
          return;
        }
        await new Promise((r) => setTimeout(r, 1000 * 2 ** (attempt - 1)));
      }
    }
  }, [api]);
  useEffect(() => void refresh(), [refresh]);
  return { ...state, refresh };
}

/** "local: /var/backups (shared)", "offsite: s3://bucket/prefix". */
export function targetLabel(t: BackupTarget): string {
  if (t.kind.case === "directory") return `${t.name}: ${t.kind.value.path}${t.kind.value.shared ? " (shared)" : ""}`;
  if (t.kind.case === "s3") return `${t.name}: s3://${t.kind.value.bucket}/${t.kind.value.prefix}`;
  return t.name;
}
