/**
 * The templates the caller sees (ListTemplates, every page): the project's
 * and the global ones, by name. Fetched when a view that needs them opens.
 */
import { useCallback, useEffect, useState } from "react";
import type { Template } from "@berth/proto/berth/v1/template_pb.js";
import { useSession } from "../app-context.js";

export interface Templates {
  templates: Template[] | undefined;
  error: unknown;
  refresh: () => Promise<void>;
}

export function useTemplates(): Templates {
  const { api } = useSession();
  const [state, setState] = useState<{ templates: Template[] | undefined; error: unknown }>({ templates: undefined, error: undefined });
  const refresh = useCallback(async () => {
    try {
      const all: Template[] = [];
      let pageToken = "";
      do {
        const res = await api.templates.listTemplates({ pageSize: 1000, pageToken }, { timeoutMs: 10_000 });
        all.push(...res.templates);
        pageToken = res.nextPageToken;
      } while (pageToken);
      setState({ templates: all, error: undefined });
    } catch (error) {
      setState((s) => ({ ...s, error }));
    }
  }, [api]);
  useEffect(() => void refresh(), [refresh]);
  return { ...state, refresh };
}

/** "global" or "project x". */
export function scopeOf(t: Template): string {
  return t.project === "" ? "global" : `project ${t.project}`;
}
