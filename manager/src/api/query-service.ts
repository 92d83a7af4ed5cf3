/**
 * QueryService (docs/explore.md, "Aggregates"): Aggregate counts servers,
 * hosts or ledger events per group and time bucket (query/aggregate.ts).
 * Field rules (protovalidate) are checked by the validate interceptor before
 * the handler runs; what they cannot say (a CEL expression, the window's
 * buckets) is checked by runAggregate.
 */
import type { ServiceImpl } from "@connectrpc/connect";
import { QueryService } from "@berth/proto/berth/v1/query_pb.js";
import { callerOf } from "../auth/caller.js";
import { aggregateScope, runAggregate, type AggregateDeps } from "../query/aggregate.js";

export type QueryServiceDeps = AggregateDeps;

export function createQueryService(deps: QueryServiceDeps): ServiceImpl<typeof QueryService> {
  return {
    async aggregate(req, ctx) {
      const caller = callerOf(ctx);
      return runAggregate(deps, aggregateScope(caller, req.project), req);
    },
  };
}
