import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { toConnectError } from "../errors.js";
import type { Logger } from "../log.js";

/**
 * Converts domain errors into ConnectErrors exactly once, at the edge, for
 * unary calls and for errors thrown while a response stream is produced.
 * Unexpected errors are logged with their stack and answered as Internal.
 */
export function errorInterceptor(log: Logger): Interceptor {
  const convert = (err: unknown, procedure: string) => {
    const ce = toConnectError(err);
    if (ce.cause !== undefined && ce.code === 13) log.error({ err: ce.cause, procedure }, "unexpected error");
    return ce;
  };
  return (next) => async (req) => {
    try {
      // A message of a request stream (the agent link) that does not decode is the sender's error.
      if (req.stream) req = { ...req, message: undecodableIsInvalid(req.message) };
      const res = await next(req);
      if (!res.stream) return res;
      const procedure = req.method.name;
      return {
        ...res,
        message: (async function* () {
          try {
            yield* res.message;
          } catch (err) {
            throw convert(err, procedure);
          }
        })(),
      };
    } catch (err) {
      throw convert(err, req.method.name);
    }
  };
}

/** connect-es reports request bytes that do not decode as Internal ("parse binary: …"); they are InvalidArgument. */
async function* undecodableIsInvalid<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.Internal && /^parse binary:/.test(err.rawMessage)) {
      throw new ConnectError(`a message of the request stream is not valid protobuf (${err.rawMessage}); check the client's protobuf definitions`, Code.InvalidArgument);
    }
    throw err;
  }
}
