/**
 * Undecodable request messages answer InvalidArgument, not Internal.
 *
 * connect-es decodes a unary (or server-streaming) request's protobuf bytes
 * before any interceptor runs, and reports bytes that are not a valid message
 * as `Internal: parse binary: …` — a server fault, by the gRPC convention.
 * For berth it is the caller's: a client sent garbage. (JSON bodies already
 * answer InvalidArgument.) So each such handler is wrapped: it reads the
 * request (berth's requests are small and capped at 4 MiB by readMaxBytes),
 * tries to decode the message, and when that fails hands the handler an
 * empty message instead, with the decoding error in a request header that
 * `rejectUndecodable` (first in the interceptor chain) turns into
 * InvalidArgument. Streams of requests (the agent link) are handled in
 * `api/errors.ts`, where each message is decoded as it is read.
 */
import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import type { UniversalHandler, UniversalServerRequest } from "@connectrpc/connect/protocol";
import { InvalidArgumentError } from "../errors.js";

/** Set by the guard, read by the interceptor; a client's own value is dropped. */
const MARK = "x-berth-undecodable-request";

const BINARY = /^application\/(?:proto|grpc|grpc\+proto|grpc-web|grpc-web\+proto|connect\+proto)$/;

/** Wraps every unary and server-streaming handler of `router` (call after registering the services). */
export function guardRequestDecoding(router: ConnectRouter, maxBytes: number): void {
  const handlers = router.handlers as UniversalHandler[];
  for (let i = 0; i < handlers.length; i++) {
    const h = handlers[i]!;
    if (h.method.methodKind !== "unary" && h.method.methodKind !== "server_streaming") continue;
    const guarded = (req: UniversalServerRequest) => guard(h, req, maxBytes);
    handlers[i] = Object.assign(guarded, h);
  }
}

/** Answers InvalidArgument for a request the guard could not decode. */
export function rejectUndecodable(): Interceptor {
  return (next) => async (req) => {
    const problem = req.header.get(MARK);
    if (problem !== null) throw new InvalidArgumentError("request", `not a valid ${req.method.input.typeName} message (${problem}); check the client's protobuf definitions`);
    return next(req);
  };
}

async function guard(h: UniversalHandler, req: UniversalServerRequest, maxBytes: number) {
  const header = new Headers(req.header);
  header.delete(MARK);
  const type = (header.get("content-type") ?? "").split(";")[0]!.trim().toLowerCase();
  const body = req.body;
  if (req.method !== "POST" || !BINARY.test(type) || !isAsyncIterable(body)) return h({ ...req, header });
  // Declared too large: connect answers ResourceExhausted without reading it.
  if (Number(header.get("content-length") ?? 0) > maxBytes + 5) return h({ ...req, header });
  const { bytes, rest } = await readAtMost(body, maxBytes + 1);
  // Too large: connect answers ResourceExhausted itself (it gets the whole body, read or not).
  if (rest) return h({ ...req, header, body: prepend(bytes, rest) });
  const enveloped = type !== "application/proto";
  let payload = bytes;
  if (enveloped) {
    // One envelope: flags (1 byte), length (4 bytes), message. Compressed or odd ones are left to connect.
    if (bytes.length < 5 || (bytes[0]! & 0x01) !== 0) return h({ ...req, header, body: once(bytes) });
    payload = bytes.subarray(5, 5 + new DataView(bytes.buffer, bytes.byteOffset).getUint32(1));
  }
  try {
    fromBinary(h.method.input, payload);
    return h({ ...req, header, body: once(bytes) });
  } catch (err) {
    header.set(MARK, (err instanceof Error ? err.message : String(err)).replace(/[\r\n]/g, " ").slice(0, 200));
    const empty = toBinary(h.method.input, create(h.method.input));
    const replacement = enveloped ? envelope(empty) : empty;
    header.set("content-length", String(replacement.length));
    return h({ ...req, header, body: once(replacement) });
  }
}

function envelope(message: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + message.length);
  new DataView(out.buffer).setUint32(1, message.length);
  out.set(message, 5);
  return out;
}

/** Reads up to `limit` bytes; `rest` is the unread remainder when the body is longer. */
async function readAtMost(body: AsyncIterable<Uint8Array>, limit: number): Promise<{ bytes: Uint8Array; rest?: AsyncIterator<Uint8Array> }> {
  const it = body[Symbol.asyncIterator]();
  const chunks: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const r = await it.next();
    if (r.done) return { bytes: Buffer.concat(chunks) };
    chunks.push(r.value);
    n += r.value.length;
    if (n >= limit) return { bytes: Buffer.concat(chunks), rest: it };
  }
}

async function* prepend(first: Uint8Array, rest: AsyncIterator<Uint8Array>): AsyncIterable<Uint8Array> {
  try {
    yield first;
    for (let r = await rest.next(); !r.done; r = await rest.next()) yield r.value;
  } finally {
    // Connect stops reading a body that is too large: release the request stream as it would.
    await rest.return?.();
  }
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

function isAsyncIterable(v: unknown): v is AsyncIterable<Uint8Array> {
  return typeof v === "object" && v !== null && Symbol.asyncIterator in v;
}
