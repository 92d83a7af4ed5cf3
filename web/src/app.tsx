/**
 * The shell: sign-in with a token, then the top bar (pages, live status,
 * firing alerts, who you are) and the page the path names.
 */
import { lazy, Suspense, useCallback, useEffect, useRef, useState, type FormEvent, type MouseEvent as ReactMouseEvent } from "react";
import type { Token } from "@berth/proto/berth/v1/access_pb.js";
import { SessionProvider, useFiringAlerts, useSession, useWatch } from "./app-context.js";
import { createApi, errorText } from "./api/client.js";
import { roleName, storedToken, storeToken } from "./api/session.js";
import { signInError } from "./api/sign-in.js";
import { AlertsPage } from "./alerts/alerts-page.js";
import { TargetsPage } from "./backups/targets-page.js";
import { EventsPage } from "./events/events-page.js";
import { HostsPage } from "./hosts/hosts-page.js";
import { OrphansPage } from "./orphans/orphans-page.js";
import { ServersPage } from "./servers/servers-page.js";
import { TemplatesPage } from "./templates/templates-page.js";
import { TokensPage } from "./tokens/tokens-page.js";
import { navigate, useLocation } from "./ui/router.js";
import { Toaster, useToast } from "./ui/toast.js";
import { useNow } from "./ui/clock.js";
import type { WatchSnapshot } from "./servers/server-watch.js";

/** The Explore page and its chart code are loaded when first opened. */
const ExplorePage = lazy(() => import("./explore/explore-page.js").then((m) => ({ default: m.ExplorePage })));

type Auth = { kind: "checking" } | { kind: "out"; message?: string } | { kind: "in"; token: string; me: Token };

export function App() {
  const [auth, setAuth] = useState<Auth>(() => (storedToken() ? { kind: "checking" } : { kind: "out" }));

  const signIn = useCallback(async (token: string, remember = false): Promise<string | undefined> => {
    try {
      const { token: me } = await createApi(token, () => {}).access.whoAmI({});
      if (!me) return "the manager did not say who this token is";
      storeToken(token, remember);
      setAuth({ kind: "in", token, me });
      return undefined;
    } catch (err) {
      return signInError(errorText(err));
    }
  }, []);

  const signOut = useCallback((message?: string) => {
    storeToken(undefined);
    setAuth({ kind: "out", ...(message ? { message } : {}) });
  }, []);

  useEffect(() => {
    if (auth.kind !== "checking") return;
    const t = storedToken()!;
    void signIn(t).then((err) => {
      if (err) {
        storeToken(undefined);
        setAuth({ kind: "out", message: err });
      }
    });
  }, [auth.kind, signIn]);

  return (
    <Toaster>
      {auth.kind === "checking" && <div className="splash">Connecting to berth…</div>}
      {auth.kind === "out" && <SignIn message={auth.message} onSignIn={signIn} />}
      {auth.kind === "in" && (
        <SessionProvider token={auth.token} me={auth.me} onSignOut={signOut}>
          <Shell />
        </SessionProvider>
      )}
    </Toaster>
  );
}

function SignIn({ message, onSignIn }: { message: string | undefined; onSignIn: (token: string, remember: boolean) => Promise<string | undefined> }) {
  const [token, setToken] = useState("");
  const [remember, setRemember] = useState(false);
  const [error, setError] = useState(message);
  const [busy, setBusy] = useState(false);
  const submit = async (e: FormEvent) => {
    e.preventDefault();
    setBusy(true);
    const err = await onSignIn(token.trim(), remember);
    setBusy(false);
    setError(err);
  };
  return (
    <main className="signin">
      <form className="signin-card" onSubmit={submit} aria-labelledby="signin-title">
        <div className="brand large">
          <Logo /> berth
        </div>
        <h1 id="signin-title">Sign in</h1>
        <p className="muted">
          Paste a token (<code>brt_…</code>) of any role: viewer, operator or admin. <code>npm start</code> prints one and keeps it in{" "}
          <code>data/admin-token</code>; admins make more on the Tokens page.
        </p>
        <label className="field">
          <span className="label">Token</span>
          <input type="password" value={token} onChange={(e) => setToken(e.target.value)} autoComplete="off" spellCheck={false} placeholder="brt_…" autoFocus name="token" />
        </label>
        <label className="check">
          <input type="checkbox" checked={remember} onChange={(e) => setRemember(e.target.checked)} name="remember" /> Remember on this device (otherwise this tab only;
          signing out forgets it)
        </label>
        {error && (
          <p className="error-box" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="button primary wide" disabled={!token.trim() || busy}>
          {busy ? "Checking…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}

/**
 * The live-updates badge: "live", or how long the manager has been silent
 * (stale: the heartbeats stopped), or (re)connecting. When the manager
 * answers again after a silence, a toast says so and for how long it was gone.
 */
function WatchBadge({ watch }: { watch: WatchSnapshot }) {
  const toast = useToast();
  const [staleSince, setStaleSince] = useState<number | undefined>(undefined);
  useEffect(() => {
    if (watch.status === "stale" || watch.status === "reconnecting") setStaleSince((s) => s ?? watch.lastHeardMs);
    else if (watch.status === "live" && staleSince !== undefined) {
      if (staleSince > 0) toast("info", `Live again: the manager answers (it was silent for ${Math.max(1, Math.round((Date.now() - staleSince) / 1000))} s)`);
      setStaleSince(undefined);
    }
  }, [watch.status, watch.lastHeardMs, staleSince, toast]);
  return (
    <span className={`conn conn-${watch.status}`} data-testid="watch-status" title={watch.error ?? "live updates from the manager"} role="status">
      <span className="dot" aria-hidden="true" />
      {watch.status === "live" ? (
        "live"
      ) : watch.status === "stale" ? (
        <>
          stale · <Silence since={watch.lastHeardMs} />
        </>
      ) : watch.status === "connecting" ? (
        "connecting…"
      ) : (
        "reconnecting…"
      )}
    </span>
  );
}

/** "14 s" since `since`, ticking. */
function Silence({ since }: { since: number }) {
  const now = useNow();
  return <>{Math.max(1, Math.round((Math.max(now, Date.now() - 1000) - since) / 1000))} s</>;
}

const PAGES = [
  { path: "/servers", label: "Servers" },
  { path: "/templates", label: "Templates" },
  { path: "/hosts", label: "Hosts" },
  { path: "/alerts", label: "Alerts" },
  { path: "/events", label: "Events" },
  { path: "/explore", label: "Explore" },
  { path: "/targets", label: "Backup targets" },
  { path: "/orphans", label: "Orphans", infra: true },
  { path: "/tokens", label: "Tokens", admin: true },
];

function Shell() {
  const { me, can, signOut } = useSession();
  const loc = useLocation();
  const watch = useWatch();
  const { alerts } = useFiringAlerts();
  useEffect(() => {
    if (loc.path === "/" || loc.path === "/index.html") navigate("/servers" + loc.search);
  }, [loc.path, loc.search]);
  const page = PAGES.find((p) => loc.path === p.path || loc.path.startsWith(`${p.path}/`));
  useEffect(() => {
    document.title = page ? `${page.label} · berth` : "berth";
  }, [page]);
  const nav = usePagesMenu(loc.path);
  return (
    <div className="app">
      <a className="skip-link" href="#main" onClick={skipToContent}>
        {page?.path === "/servers" ? "Skip to servers" : "Skip to content"}
      </a>
      <header className="topbar">
        <a
          className="brand"
          href="/servers"
          aria-label="berth"
          onClick={(e) => {
            e.preventDefault();
            navigate("/servers");
          }}
        >
          <Logo /> <span className="brand-name">berth</span>
        </a>
        {/* Narrow screens: the pages are behind this button (styles.css hides it on wide ones). */}
        <button
          ref={nav.button}
          type="button"
          className="button small ghost nav-toggle"
          aria-expanded={nav.open}
          aria-controls="pages-nav"
          onClick={() => nav.setOpen(!nav.open)}
        >
          <span className="nav-toggle-icon" aria-hidden="true">
            ☰
          </span>
          <span className="nav-toggle-label">{page?.label ?? "Pages"}</span>
          {alerts.length > 0 && (
            <>
              <span className="nav-count" aria-hidden="true">
                {alerts.length}
              </span>
              <span className="sr-only">, {alerts.length} alerts firing</span>
            </>
          )}
        </button>
        <nav className={`nav${nav.open ? " open" : ""}`} aria-label="Pages" id="pages-nav" ref={nav.panel}>
          {PAGES.filter((p) => (!p.infra || can.infra) && (!p.admin || can.admin)).map((p) => (
            <a
              key={p.path}
              href={p.path}
              aria-current={page?.path === p.path ? "page" : undefined}
              onClick={(e) => {
                if (e.metaKey || e.ctrlKey || e.shiftKey) return;
                e.preventDefault();
                nav.setOpen(false);
                navigate(p.path);
              }}
            >
              {p.label}
              {p.path === "/alerts" && alerts.length > 0 && (
                <span className="nav-count" aria-label={`${alerts.length} firing`}>
                  {alerts.length}
                </span>
              )}
            </a>
          ))}
        </nav>
        <span className="grow" />
        <WatchBadge watch={watch} />
        <span className="whoami" data-testid="whoami" title={`token ${me.id}`}>
          <span className="who">{me.name}</span>
          <span className={`role role-${roleName(me.role)}`}>{roleName(me.role)}</span>
          <span className="muted">{me.project || "all projects"}</span>
        </span>
        <button type="button" className="button small ghost" onClick={() => signOut()}>
          Sign out
        </button>
      </header>
      {watch.status === "stale" && (
        <div className="stale-banner" role="alert" data-testid="stale-banner">
          No word from the manager for <Silence since={watch.lastHeardMs} />: what you see is what it last said, and may be out of date. berth keeps listening and
          reconnects by itself.
        </div>
      )}
      <main className="main" id="main" tabIndex={-1}>
        {page?.path === "/servers" && <ServersPage />}
        {page?.path === "/templates" && <TemplatesPage />}
        {page?.path === "/hosts" && <HostsPage />}
        {page?.path === "/alerts" && <AlertsPage />}
        {page?.path === "/events" && <EventsPage />}
        {page?.path === "/explore" && (
          <Suspense fallback={<p className="muted page">Loading Explore…</p>}>
            <ExplorePage />
          </Suspense>
        )}
        {page?.path === "/targets" && <TargetsPage />}
        {page?.path === "/orphans" && <OrphansPage />}
        {page?.path === "/tokens" && <TokensPage />}
        {!page && loc.path !== "/" && (
          <section className="page">
            <h1>Not found</h1>
            <p>
              There is no page at <code>{loc.path}</code>.{" "}
              <a href="/servers" onClick={(e) => (e.preventDefault(), navigate("/servers"))}>
                Go to the servers
              </a>
              .
            </p>
          </section>
        )}
      </main>
    </div>
  );
}

/** The skip link's target: the page's table when it marks one (`data-skip-target`), else the page. */
function skipToContent(e: ReactMouseEvent<HTMLAnchorElement>) {
  e.preventDefault();
  const main = document.getElementById("main");
  (main?.querySelector<HTMLElement>("[data-skip-target]") ?? main)?.focus();
}

/**
 * The pages menu of narrow screens: open or closed; Escape closes it (focus
 * back on its button), so does a click outside it or a new page.
 */
function usePagesMenu(path: string) {
  const [open, setOpen] = useState(false);
  const button = useRef<HTMLButtonElement>(null);
  const panel = useRef<HTMLElement>(null);
  useEffect(() => setOpen(false), [path]);
  useEffect(() => {
    if (!open) return;
    const onKey = (e: KeyboardEvent) => {
      if (e.key !== "Escape") return;
      e.stopPropagation();
      setOpen(false);
      button.current?.focus();
    };
    const onDown = (e: MouseEvent) => {
      const t = e.target as Node;
      if (!panel.current?.contains(t) && !button.current?.contains(t)) setOpen(false);
    };
    window.addEventListener("keydown", onKey, true);
    document.addEventListener("mousedown", onDown);
    return () => {
      window.removeEventListener("keydown", onKey, true);
      document.removeEventListener("mousedown", onDown);
    };
  }, [open]);
  return { open, setOpen, button, panel };
}

function Logo() {
  return (
    <svg viewBox="0 0 16 16" width="20" height="20" aria-hidden="true">
      <rect width="16" height="16" rx="3.5" fill="currentColor" />
      <path d="M4 11.5h8M5 8.5h6M6 5.5h4" stroke="var(--logo-ink, #fff)" strokeWidth="1.6" strokeLinecap="round" />
    </svg>
  );
}
