/**
 * The standard gRPC health checking protocol (grpc.health.v1.Health).
 *
 * Load balancers, Kubernetes gRPC probes and grpc_health_probe speak it.
 * Protocol: https://github.com/grpc/grpc/blob/master/doc/health-checking.md
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import {
  Health,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "@berth/proto/grpc/health/v1/health_pb.js";

export { ServingStatus };

/**
 * Serving status per service. The empty name `""` is the server as a whole
 * and starts as SERVING; named services are unknown until `set`.
 */
export class HealthStatus {
  readonly #statuses = new Map<string, ServingStatus>([["", ServingStatus.SERVING]]);
  /** Wakes every pending `watch` on any change; each re-reads its own service. */
  readonly #waiters = new Set<() => void>();

  /** Sets the status of `service` (`""` for the whole server). */
  set(service: string, status: ServingStatus): void {
    if (this.#statuses.get(service) === status) return;
    this.#statuses.set(service, status);
    for (const wake of [...this.#waiters]) wake();
  }

  /** The status of `service`, or undefined if it was never set. */
  get(service: string): ServingStatus | undefined {
    return this.#statuses.get(service);
  }

  /**
   * Yields the current status of `service`, then each change, until `signal`
   * aborts. An unknown service yields SERVICE_UNKNOWN rather than failing, as
   * the protocol requires, so a watcher can wait for a service to come up.
   *
   * Changes that happen faster than the consumer reads are coalesced into the
   * latest status; the protocol only promises the client eventually sees it.
   */
  async *watch(service: string, signal: AbortSignal): AsyncGenerator<ServingStatus> {
    let sent: ServingStatus | undefined;
    while (!signal.aborted) {
      const current = this.#statuses.get(service) ?? ServingStatus.SERVICE_UNKNOWN;
      if (current !== sent) {
        sent = current;
        yield current;
      }
      await this.#nextChange(signal);
    }
  }

  #nextChange(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      // The signal may have fired while the caller was suspended at a yield.
      if (signal.aborted) return resolve();
      const wake = (): void => {
        this.#waiters.delete(wake);
        signal.removeEventListener("abort", wake);
        resolve();
      };
      this.#waiters.add(wake);
      signal.addEventListener("abort", wake, { once: true });
    });
  }
}

/** Registers `grpc.health.v1.Health` on `router`, answering from `status`. */
export function registerHealth(router: ConnectRouter, status: HealthStatus): void {
  router.service(Health, {
    check(request) {
      const current = status.get(request.service);
      if (current === undefined) {
        throw new ConnectError(`unknown service: ${request.service}`, Code.NotFound);
      }
      return { status: current };
    },
    async *watch(request, context) {
      for await (const current of status.watch(request.service, context.signal)) {
        yield { status: current };
      }
    },
  });
}
