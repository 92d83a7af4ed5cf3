/** "3/5 · restart in 8 s" beside a "Crashing" badge (status.crash), ticking; "restarting…" once the restart is under way. */
import type { CrashState } from "@berth/proto/berth/v1/server_pb.js";
import { useNow } from "../ui/clock.js";
import { tsMs } from "../ui/format.js";

export function CrashMark({ crash }: { crash: CrashState }) {
  const now = useNow();
  const at = tsMs(crash.nextRestartTime);
  const left = at === undefined ? undefined : Math.max(0, Math.ceil((at - Math.max(now, Date.now() - 1000)) / 1000));
  return (
    <span className="mark crashing" data-testid="crash-mark" title={`crash ${crash.recent} of ${crash.limit} in 10 minutes: at ${crash.limit}, berth stops restarting it (Failed/CrashLoop)`}>
      {crash.recent}/{crash.limit} · {left === undefined || left === 0 ? "restarting…" : `restart in ${left} s`}
    </span>
  );
}
