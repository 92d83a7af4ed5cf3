/** An API error as the manager worded it, with its gRPC code. */
import { useEffect, useRef } from "react";
import { Code, ConnectError } from "@connectrpc/connect";

export function ErrorBox({ error, what }: { error: unknown; what?: string }) {
  if (!error) return null;
  const e = ConnectError.from(error);
  return (
    <div className="error-box" role="alert">
      {what && <strong>{what}: </strong>}
      <span className="code-name">{Code[e.code]}</span> {e.rawMessage}
    </div>
  );
}

/** An error message already worded for people; scrolls itself into view (long forms). */
export function ErrorText({ text }: { text: string | undefined }) {
  const ref = useRef<HTMLParagraphElement>(null);
  useEffect(() => {
    ref.current?.scrollIntoView?.({ block: "nearest", behavior: "smooth" });
  }, [text]);
  if (!text) return null;
  return (
    <p className="error-box" role="alert" ref={ref}>
      {text}
    </p>
  );
}
