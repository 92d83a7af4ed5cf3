/**
 * One row of the ground-truth table. Memoized: it renders again only when its
 * own server record, selection, pending action, error, stuck mark, host name
 * or position changes (its Usage cell follows its usage sample by itself), so a live update touches one row.
 */
import { memo } from "react";
import { Phase, type Server } from "@berth/proto/berth/v1/server_pb.js";
import type { Abilities } from "../api/session.js";
import { RelTime, useNow } from "../ui/clock.js";
import { CopyField } from "../ui/copy.js";
import { formatBytes, formatClock, formatTime, tsMs } from "../ui/format.js";
import { Menu } from "../ui/menu.js";
import {
  ACTION_LABEL,
  ACTION_PENDING_LABEL,
  crashing,
  desiredName,
  formatUptime,
  isConverging,
  isDeleted,
  lastSeen,
  phaseBadge,
  phaseName,
  reasonText,
  runningSinceMs,
  stoppedOutsideBerth,
  stoppedWithoutContainer,
  targetPhase,
  type PendingAction,
  type ServerAction,
} from "./model.js";
import { OperationProgress } from "./operation-progress.js";
import { useServerUsage } from "./use-usage.js";
import type { UsageWatch } from "./usage-watch.js";
import { UsageCell } from "./usage-view.js";
import { CrashMark } from "./crash-mark.js";
import { diskQuotaUse } from "./limits-model.js";
import { allowedActions } from "./server-actions.js";
import { connectAddress, imageParts, portsText, shortId, type OptionalColumn } from "./table-query.js";

export const ROW_HEIGHT = 44;
/** A row's height as a card on a narrow screen (styles.css: `.servers-table.cards .vt-row`). */
export const CARD_HEIGHT = 112;

/** The one button shown in the row; the rest are in its menu. */
const PRIMARY: readonly ServerAction[] = ["restore", "start", "resume", "stop"];

export interface ServerRowProps {
  server: Server;
  index: number;
  top: number;
  selected: boolean;
  pending: PendingAction | undefined;
  error: string | undefined;
  stuck: boolean;
  hostName: string;
  /** The optional (internal) columns shown. */
  shown: ReadonlySet<OptionalColumn>;
  /** The page's usage stream: the Usage cell follows its own server's sample, the row does not re-render for it. */
  usage: UsageWatch;
  can: Abilities;
  onToggle: (id: string, shift: boolean) => void;
  onOpen: (id: string) => void;
  onAction: (s: Server, a: ServerAction) => void;
  onDismissError: (id: string) => void;
}

export const ServerRow = memo(function ServerRow(p: ServerRowProps) {
  const s = p.server;
  const st = s.status;
  const name = s.spec?.name ?? s.id;
  const converging = isConverging(s);
  const deleted = isDeleted(s);
  const actions = p.pending ? [] : allowedActions(s, p.can);
  const primary = PRIMARY.find((a) => actions.includes(a));
  const badge = phaseBadge(s);
  const outside = stoppedOutsideBerth(s);
  const seenBefore = lastSeen(s);
  const rest = actions.filter((a) => a !== primary);
  const observedGen = st?.observedGeneration ?? 0n;
  const busy = st?.operation ? "operating" : p.stuck ? "stuck" : converging ? "converging" : "";
  const address = connectAddress(s, p.hostName);
  const image = imageParts(s.spec?.image ?? "");
  const classes = ["vt-row", p.selected ? "selected" : "", deleted ? "deleted" : "", busy].filter(Boolean).join(" ");
  return (
    <div
      className={classes}
      role="row"
      aria-rowindex={p.index + 2}
      aria-selected={p.selected}
      data-server-id={s.id}
      data-server-name={name}
      data-phase={phaseName(st?.phase)}
      style={{ transform: `translateY(${p.top}px)` }}
      // The whole row opens the drawer (the name is the keyboard's way in); its controls keep their own clicks.
      onClick={(e) => {
        if ((e.target as HTMLElement).closest("button, a, input, label, select, [role=menu], [role=menuitem]")) return;
        if (window.getSelection()?.toString()) return; // selecting text to copy is not a click on the row
        p.onOpen(s.id);
      }}
    >
      <div role="cell" className="c-select">
        {p.can.operate && (
          <input
            type="checkbox"
            checked={p.selected}
            aria-label={`Select ${name}`}
            onChange={() => {}}
            onClick={(e) => p.onToggle(s.id, e.shiftKey)}
          />
        )}
      </div>
      <div role="cell" className="c-name">
        <button type="button" className="link strong" onClick={() => p.onOpen(s.id)} title={`${name} (${s.id})`}>
          {name}
        </button>
      </div>
      <div role="cell" className="c-host" title={s.spec?.hostId}>
        {p.hostName}
      </div>
      <div role="cell" className="c-project">{s.project}</div>
      <div role="cell" className="c-image mono" title={s.spec?.image}>
        <span className="image-repo">{image.repo}</span>
        <span className="image-tag">{image.tag}</span>
      </div>
      {p.shown.has("container") && (
        <div role="cell" className="c-container mono" title={st?.containerId}>
          {st?.containerId ? shortId(st.containerId) : <span className="muted">none</span>}
        </div>
      )}
      <div role="cell" className="c-phase">
        <span
          className={`badge tone-${badge.tone}`}
          title={outside ? `${st?.message} (at ${formatClock(tsMs(st?.lastChangeTime))})` : [st?.reason, st?.message].filter(Boolean).join(": ") || undefined}
          data-testid="phase-badge"
        >
          {badge.text}
        </span>
        {p.pending ? (
          <span className="mark pending" title={`${p.pending.action} requested; waiting for the host to confirm`}>
            <span className="spinner" aria-hidden="true" />
            {p.pending.action === "update" ? "applying…" : ACTION_PENDING_LABEL[p.pending.action]}
          </span>
        ) : st?.operation ? (
          <OperationProgress op={st.operation} compact />
        ) : st?.crash && crashing(s) ? (
          <CrashMark crash={st.crash} />
        ) : converging && p.stuck ? (
          <span className="mark stuck" title={`not converged for longer than the alert threshold: should be ${targetPhase(s)}`}>
            stuck → {targetPhase(s)}
          </span>
        ) : converging ? (
          <span className="mark converging" title={`converging: observed differs from desired (${desiredName(s.spec?.desiredState)})`}>
            <span className="spinner" aria-hidden="true" />→ {targetPhase(s)}
          </span>
        ) : seenBefore ? (
          <span className="reason last-seen" title={`its host is away; last seen ${seenBefore} before`}>
            last seen {seenBefore}
          </span>
        ) : outside || stoppedWithoutContainer(s) ? null : st?.reason && st.reason !== phaseName(st.phase) ? (
          <span
            className={`reason${p.stuck ? " stuck" : st.phase === Phase.FAILED ? " failed" : ""}`}
            title={[st.message, p.stuck ? "(not converged for longer than the alert threshold)" : ""].filter(Boolean).join(" ")}
            data-testid="phase-reason"
          >
            {reasonText(st.reason)}
          </span>
        ) : null}
      </div>
      <div role="cell" className="c-connect" title={address ? `${address}${(s.spec?.ports.length ?? 0) > 1 ? ` (every port: ${portsText(s)})` : ""}` : "no published port"}>
        {address ? <CopyField value={address} label={`Connect address of ${name}`} /> : <span className="muted">no port</span>}
        {(s.spec?.ports.length ?? 0) > 1 && <span className="muted more-ports">+{s.spec!.ports.length - 1}</span>}
      </div>
      <div role="cell" className="c-uptime">
        <Uptime since={runningSinceMs(s)} />
      </div>
      {p.shown.has("usage") && (
        <div role="cell" className="c-usage" data-testid="usage-cell">
          <LiveUsageCell watch={p.usage} id={s.id} running={st?.phase === Phase.RUNNING} />
        </div>
      )}
      {p.shown.has("desired") && (
        <div role="cell" className="c-desired">
          {desiredName(s.spec?.desiredState)}
        </div>
      )}
      {p.shown.has("observed") && (
        <div role="cell" className="c-observed">
          {st?.containerState || <span className="muted">—</span>}
        </div>
      )}
      <div role="cell" className="c-data">
        {st?.dataExists ? (
          <DataSize server={s} />
        ) : (
          <span className="muted">none</span>
        )}
      </div>
      {p.shown.has("generation") && (
        <div role="cell" className={`c-gen mono${observedGen !== s.generation ? " lagging" : ""}`} title={`generation ${s.generation}, observed ${observedGen}`}>
          {observedGen.toString()}/{s.generation.toString()}
        </div>
      )}
      <div role="cell" className="c-changed">
        {p.error ? (
          <span className="row-error" role="alert" title={p.error}>
            <button type="button" className="icon-button" aria-label="Dismiss error" onClick={() => p.onDismissError(s.id)}>
              ×
            </button>
            {p.error}
          </span>
        ) : (
          <>
            <RelTime ms={tsMs(st?.lastChangeTime)} className="when" />
            <span className="cause" title={st?.lastChangeCause}>
              {st?.lastChangeCause}
            </span>
          </>
        )}
      </div>
      {p.shown.has("ports") && (
        <div role="cell" className="c-ports mono" title={portsText(s)}>
          {portsText(s)}
        </div>
      )}
      <div role="cell" className="c-actions">
        {primary && (
          <button type="button" className={`button small${primary === "stop" ? "" : " primary-soft"}`} onClick={() => p.onAction(s, primary)}>
            {outside && primary === "start" ? "Start again" : ACTION_LABEL[primary]}
          </button>
        )}
        {rest.length > 0 && (
          <Menu
            label={`More actions for ${name}`}
            items={rest.map((a) => ({ label: ACTION_LABEL[a], danger: a === "delete" || a === "purge", onSelect: () => p.onAction(s, a) }))}
          >
            ⋯
          </Menu>
        )}
      </div>
    </div>
  );
});

/** The data directory's size; in the warning tone near or over the server's disk quota, the title saying so. */
function DataSize({ server }: { server: Server }) {
  const size = server.status?.dataSizeBytes ?? 0n;
  const quota = diskQuotaUse(server);
  return (
    <span className={quota ? `data-quota${quota.warn ? " warn" : ""}` : undefined} title={quota?.title ?? "data directory present"} data-testid="data-size">
      {size > 0n ? formatBytes(size) : "present"}
    </span>
  );
}

/** The Usage cell, subscribed to its server's sample alone: a new sample re-renders this cell, not the row. */
function LiveUsageCell({ watch, id, running }: { watch: UsageWatch; id: string; running: boolean }) {
  return <UsageCell sample={useServerUsage(watch, id)} running={running} />;
}

/** How long it has been running, ticking; "—" when it is not running. */
function Uptime({ since }: { since: number | undefined }) {
  const now = useNow();
  if (since === undefined) return <span className="muted">—</span>;
  return (
    <time dateTime={new Date(since).toISOString()} title={`running since ${formatTime(since)}`}>
      {formatUptime(Math.max(now, Date.now() - 1000) - since)}
    </time>
  );
}
