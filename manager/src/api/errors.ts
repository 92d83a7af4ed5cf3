import type { Interceptor } from "@connectrpc/connect";
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
