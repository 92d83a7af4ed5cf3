/**
 * A very small router: the path picks the page, the query holds the page's
 * filters. `navigate` pushes history; `replaceQuery` rewrites the query in
 * place (typing in a filter must not flood the back button).
 */
import { useSyncExternalStore } from "react";

const EVENT = "berth:navigate";

function subscribe(fn: () => void): () => void {
  window.addEventListener("popstate", fn);
  window.addEventListener(EVENT, fn);
  return () => {
    window.removeEventListener("popstate", fn);
    window.removeEventListener(EVENT, fn);
  };
}

export interface Location {
  path: string;
  search: string;
}

let cached: Location = { path: "", search: "" };
function snapshot(): Location {
  const { pathname, search } = window.location;
  if (cached.path !== pathname || cached.search !== search) cached = { path: pathname, search };
  return cached;
}

export function useLocation(): Location {
  return useSyncExternalStore(subscribe, snapshot);
}

export function navigate(to: string): void {
  if (to === window.location.pathname + window.location.search) return;
  window.history.pushState(null, "", to);
  window.dispatchEvent(new Event(EVENT));
}

/** Sets the query string of the current page without a new history entry. */
export function replaceQuery(search: string): void {
  if (search === window.location.search) return;
  window.history.replaceState(null, "", window.location.pathname + search);
  window.dispatchEvent(new Event(EVENT));
}

/** Sets or removes one query parameter, keeping the others. */
export function setParam(name: string, value: string | undefined, push = false): void {
  const p = new URLSearchParams(window.location.search);
  if (value) p.set(name, value);
  else p.delete(name);
  const s = p.toString();
  const search = s ? `?${s}` : "";
  if (push) navigate(window.location.pathname + search);
  else replaceQuery(search);
}
