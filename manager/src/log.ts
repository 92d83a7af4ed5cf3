import { pino, type DestinationStream, type Logger } from "pino";

export type { Logger };

/** `json`: one JSON object per line (pino). `pretty`: for people. `auto`: pretty on a terminal, else json. */
export type LogFormat = "auto" | "json" | "pretty";

/** Structured logs on stdout (pino): JSON, or a readable line per record when a person watches. */
export function createLogger(level: string, name: string, format: LogFormat = "json"): Logger {
  const pretty = format === "pretty" || (format === "auto" && process.stdout.isTTY === true);
  const opts = { level, name, base: { pid: process.pid } };
  return pretty ? pino(opts, prettyStream(process.stdout, process.stdout.isTTY === true)) : pino(opts);
}

const LEVELS: Record<number, [string, string]> = {
  10: ["TRACE", "\x1b[90m"],
  20: ["DEBUG", "\x1b[36m"],
  30: ["INFO ", "\x1b[32m"],
  40: ["WARN ", "\x1b[33m"],
  50: ["ERROR", "\x1b[31m"],
  60: ["FATAL", "\x1b[35m"],
};
const OMIT = new Set(["level", "time", "pid", "hostname", "name", "msg", "err"]);

/**
 * A pino destination that turns each JSON record into one line:
 * `12:03:04.120 INFO  berth-manager: phase changed server=srv_… host=host_… to=Running`,
 * with an error's stack below it. Small on purpose (no pino-pretty): the
 * JSON lines stay the format for machines.
 */
export function prettyStream(out: { write(s: string): unknown }, color: boolean): DestinationStream {
  return {
    write(line: string) {
      let rec: Record<string, unknown>;
      try {
        rec = JSON.parse(line) as Record<string, unknown>;
      } catch {
        out.write(line);
        return;
      }
      out.write(formatRecord(rec, color));
    },
  };
}

/** One pino record as a readable line (exported for tests). */
export function formatRecord(rec: Record<string, unknown>, color: boolean): string {
  const [label, tint] = LEVELS[Number(rec.level)] ?? [String(rec.level).padEnd(5), ""];
  const time = new Date(Number(rec.time ?? Date.now()));
  const hhmmss = `${pad(time.getHours())}:${pad(time.getMinutes())}:${pad(time.getSeconds())}.${String(time.getMilliseconds()).padStart(3, "0")}`;
  const paint = (s: string, c: string) => (color && c ? `${c}${s}\x1b[0m` : s);
  const fields = Object.entries(rec)
    .filter(([k, v]) => !OMIT.has(k) && v !== undefined)
    .map(([k, v]) => `${paint(k, "\x1b[90m")}=${typeof v === "string" && !/[\s"=]/.test(v) && v !== "" ? v : JSON.stringify(v)}`);
  let text = `${paint(hhmmss, "\x1b[90m")} ${paint(label, tint)} ${rec.name ? `${String(rec.name)}: ` : ""}${String(rec.msg ?? "")}`;
  if (fields.length) text += ` ${fields.join(" ")}`;
  const err = rec.err as { message?: string; stack?: string } | undefined;
  if (err) text += `\n    ${(err.stack ?? err.message ?? JSON.stringify(err)).replace(/\n/g, "\n    ")}`;
  return `${text}\n`;
}

function pad(n: number): string {
  return String(n).padStart(2, "0");
}
