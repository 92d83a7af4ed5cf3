/**
 * Test support for driving the real AgentService.Connect handler in process:
 * a host record with a known secret, a reconciler that does nothing, and an
 * agent stream (what an agent sends in, what the manager answers) without
 * any transport in between.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { createHandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { AgentMessageSchema, AgentService, type AgentMessage, type ManagerMessage } from "@berth/proto/berth/v1/agent_pb.js";
import { hashSecret, newSecret } from "../src/ids.js";
import { AsyncQueue } from "../src/link/async-queue.js";
import type { Reconciler } from "../src/reconcile/reconciler.js";
import type { Store } from "../src/store/store.js";

/** The body of one AgentMessage: inventory, heartbeat, commandResult, containerEvent, ... */
export type AgentBody = NonNullable<MessageInitShape<typeof AgentMessageSchema>["body"]>;

/** Inserts host `id` (named `name`) with a fresh secret; resolves with the secret its agent authenticates with. */
export async function addHost(store: Store, id: string, name = id): Promise<string> {
  const secret = newSecret();
  await store.commit([{ op: "host.insert", id, name, secretHash: hashSecret(secret), createdAt: 1 }]);
  return secret;
}

/** A reconciler that ignores every notification: for tests of the handler alone. */
export function stubReconciler(): Reconciler {
  return { enqueue: () => {}, enqueueHost: () => {}, noteCommandFinished: () => {}, noteExit: () => {} } as unknown as Reconciler;
}

/** One agent's side of a Connect stream opened on the handler. */
export interface AgentStream {
  /** Sends one message; `seq` numbers it as an observation (AgentMessage.seq), 0 when omitted. */
  send(body: AgentBody, seq?: bigint): void;
  /** The manager's messages (the first is the welcome); rejects with the handler's error. */
  output: AsyncIterator<ManagerMessage>;
  /** Ends what the agent sends, as an agent closing its stream. */
  close(): void;
  /** Messages sent and not yet read by the handler: what the transport would be holding for it. */
  unread(): number;
}

/**
 * Opens AgentService.Connect on `service` as host `hostId` authenticating with
 * `secret` (`Bearer <hostId>.<secret>`, as agents do).
 */
export function openAgentStream(service: ServiceImpl<typeof AgentService>, hostId: string, secret: string): AgentStream {
  const ctx = createHandlerContext({
    service: AgentService,
    method: AgentService.method.connect,
    protocolName: "grpc",
    requestMethod: "POST",
    url: "http://test/berth.v1.AgentService/Connect",
    requestHeader: { authorization: `Bearer ${hostId}.${secret}` },
  });
  const input = new AsyncQueue<AgentMessage>();
  // ServiceImpl types what a handler yields as init shapes; AgentService's yields built messages.
  const output = service.connect(input, ctx)[Symbol.asyncIterator]() as AsyncIterator<ManagerMessage>;
  return {
    send: (body, seq) => void input.push(create(AgentMessageSchema, seq === undefined ? { body } : { body, seq })),
    output,
    close: () => input.close(),
    unread: () => input.held.items,
  };
}
