import { readPages } from "./store/pages.js";
import { existsSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AgentService, CommandKind } from "@berth/proto/berth/v1/agent_pb.js";
import { HostService } from "@berth/proto/berth/v1/host_pb.js";
import { ServerService } from "@berth/proto/berth/v1/server_pb.js";
import { FileService } from "@berth/proto/berth/v1/file_pb.js";
import { UsageService } from "@berth/proto/berth/v1/usage_pb.js";
import { AccessService } from "@berth/proto/berth/v1/access_pb.js";
import { EventService } from "@berth/proto/berth/v1/event_pb.js";
import { QueryService } from "@berth/proto/berth/v1/query_pb.js";
import { AlertService } from "@berth/proto/berth/v1/alert_pb.js";
import { BackupService } from "@berth/proto/berth/v1/backup_pb.js";
import { TemplateService } from "@berth/proto/berth/v1/template_pb.js";
import { OrphanService } from "@berth/proto/berth/v1/orphan_pb.js";
import { ScheduleService } from "@berth/proto/berth/v1/schedule_pb.js";
import { createScheduleService } from "./api/schedule-service.js";
import { Scheduler } from "./schedules/scheduler.js";
import { scheduleExecutor } from "./schedules/executor.js";
import { createAccessService } from "./api/access-service.js";
import { createAgentService } from "./api/agent-service.js";
import { errorInterceptor } from "./api/errors.js";
import { guardRequestDecoding, rejectUndecodable } from "./api/decode-guard.js";
import { validateRequests } from "./api/validate.js";
import { authInterceptor } from "./auth/interceptor.js";
import { AccessLimits, DEFAULT_LIMITS, type LimitsConfig } from "./auth/limits.js";
import { closeStreamsOfRevokedTokens } from "./auth/revocations.js";
import { ManagerPresence, PRESENCE_PREFIX } from "./auth/presence.js";
import { newToken } from "./auth/tokens.js";
import { HealthStatus, registerHealth, ServingStatus } from "./api/health.js";
import { agentInvocation, createHostService } from "./api/host-service.js";
import { createOrphanService } from "./api/orphan-service.js";
import { OrphanDetector } from "./orphans/detector.js";
import { NetworkInventory } from "./orphans/network-inventory.js";
import { registerReflection } from "./api/reflection.js";
import { file_google_rpc_error_details } from "@berth/proto/google/rpc/error_details_pb.js";
import { createServerService } from "./api/server-service.js";
import { listen, type HttpLimits, type Listener } from "./http/listen.js";
import { guardRequests } from "./http/request-guard.js";
import { createObservability, type Observability } from "./metrics/observability.js";
import { MANAGER_VERSION } from "./config/version.js";
import { staticFiles } from "./http/static-files.js";
import { Ledger } from "./ledger/ledger.js";
import { createLedgerServices, type LedgerConfig } from "./ledger/services.js";
import { createEventService } from "./api/event-service.js";
import { createSavedQueryService, type AggregateFn } from "./api/saved-query-service.js";
import { SavedQueryAlerts, savedQueryAlertViews, savedQueryRunner } from "./query/saved-alerts.js";
import { SavedQueryService } from "@berth/proto/berth/v1/query_pb.js";
import { createAlertService } from "./api/alert-service.js";
import { createBackupService } from "./api/backup-service.js";
import { createTemplateService } from "./api/template-service.js";
import { ensureBuiltinTemplates } from "./templates/builtin.js";
import { createFileService } from "./api/file-service.js";
import { createUsageService } from "./api/usage-service.js";
import { createQueryService } from "./api/query-service.js";
import { aggregateScope, runAggregate } from "./query/aggregate.js";
import { UsageFeed } from "./usage/usage-feed.js";
import { BackupRemoval } from "./api/backup-removal.js";
import { BackupRetention } from "./backups/retention.js";
import { HostDrains, type TransferStarter } from "./hosts/drain.js";
import { ServerMoves } from "./transfers/moves.js";
import { NotFoundError } from "./errors.js";
import { BackupHealth } from "./backups/health.js";
import { TransferHealth } from "./transfers/health.js";
import { BackupPolicies } from "./backups/overdue.js";
import { AgentHub, DEFAULT_AGENT_LINK } from "./link/agent-hub.js";
import { LeaderLease } from "./cluster/leader.js";
import { HostOwnership } from "./cluster/host-ownership.js";
import { ClusterPresence, type HostPresence } from "./cluster/presence.js";
import { serveHostRequests } from "./cluster/host-requests.js";
import { newId } from "./ids.js";
import type { Logger } from "./log.js";
import { Reconciler, type ContainerLogDefaults } from "./reconcile/reconciler.js";
import { wakeForRemoteCommits } from "./reconcile/remote-commits.js";
import { SQLITE_CONCURRENCY } from "./reconcile/queue.js";
import { openStore, type StoreMeta } from "./store/open.js";
import { checkSecretKey, KEY_CHECK_META, loadSecretKey, openCommand, SecretBox, SecretKeyError } from "./store/secrets.js";
import type { Store } from "./store/store.js";
import { startSftp } from "./sftp/start.js";
import { describeStoreUrl, parseStoreUrl, sqliteStoreUrl, storeFilesDir, type StoreUrl } from "./store/store-url.js";
import type { TlsMaterial } from "./tls/certificates.js";

export interface ManagerConfig {
  /** host:port to listen on; port 0 picks a free one. */
  listen: string;
  /** The store, as `--store` takes it (store/store-url.ts); wins over `dbPath`. */
  store?: string;
  /** SQLite file path, or ":memory:": short for `store: "sqlite://<dbPath>"`. */
  dbPath?: string;
  /**
   * The 32-byte key sealing secret env values (docs/security.md); default
   * `<db dir>/secret.key`, created 0600 on first start. With ":memory:" and no
   * file, a fresh key lives only in memory.
   */
  secretKeyFile?: string;
  /** URL agents are told to dial in enrollment commands; defaults to http://<listen>. */
  advertiseUrl?: string;
  /** Directory of the built dashboard. */
  webRoot?: string;
  /** Seconds between an agent's heartbeats, told to each agent in its Welcome (default 5). */
  heartbeatIntervalSeconds?: number;
  /** An agent silent this long is disconnected and its host marked offline (default 15; at least twice the heartbeat interval). */
  agentTimeoutSeconds?: number;
  /** PostgreSQL: the term of this manager's hold on a host (default 15), renewed every third of it (cluster/host-ownership.ts). */
  hostTermSeconds?: number;
  /** Deadline of a start (create, pull, start) before the server is Failed/StartTimeout. */
  startTimeoutSeconds?: number;
  /** How long a soft-deleted server's record is kept before it is dropped (data stays). */
  deleteRetentionSeconds?: number;
  /** First delay before restarting a crashed container; doubles per recent crash. */
  crashBackoffSeconds?: number;
  /** How long a transfer's target host may be away before the transfer fails (default 20). */
  transferOfflineGraceSeconds?: number;
  /** Every server is reconciled at least this often (default 300). */
  resyncIntervalSeconds?: number;
  /** Containers' json-file log rotation when their spec sets none (default 10 MiB x 3). */
  containerLogs?: ContainerLogDefaults;
  /** Pids limit of a container whose spec sets none (--default-pids-limit; default 512; 0: none). */
  defaultPidsLimit?: number;
  /** Serve TLS only (ALPN h2 / http/1.1) with this material; plaintext when absent. */
  tls?: TlsMaterial;
  /** Connection limits of the port (per-IP connections, HTTP/2 streams, timeouts); defaults in http/listen.ts. */
  http?: Partial<HttpLimits>;
  /** Per-token limits; defaults: 20 changes/s, bursts of 50, 32 open streams. */
  limits?: Partial<LimitsConfig>;
  /** Event retention, alert thresholds, webhooks. */
  ledger?: LedgerConfig;
  /** When set, GET /metrics needs `authorization: Bearer <metricsToken>`. */
  metricsToken?: string;
  /** Seconds between database write probes (health, /readyz); default 5. */
  dbProbeIntervalSeconds?: number;
  /** Containers younger than this are not listed as orphans (default 60). */
  orphanGraceSeconds?: number;
  /** FileService: the most bytes one uploaded, archived or extracted file may hold (--file-max-upload-bytes; default 8 GiB). */
  fileMaxUploadBytes?: number;
  /** /metrics exports each running server's usage too (--metrics-server-usage). */
  metricsServerUsage?: boolean;
  /** Seconds between backup retention runs (default 600). */
  backupRetentionIntervalSeconds?: number;
  /**
   * The SFTP endpoint (docs/console-and-files.md): its HOST:PORT, and the file
   * keeping its host key (default `<db dir>/sftp_host_ed25519_key`; required
   * with PostgreSQL, where managers share no directory). Off when unset.
   */
  sftp?: { listen: string; hostKeyFile?: string };
  /** Starts server transfers for host drains (hosts/drain.ts); default: the manager's own TransferServer (transfers/moves.ts). */
  transferStarter?: TransferStarter;
  /** Seconds between host drain passes (default 5; a drain starting or a transfer ending wakes it at once). */
  drainIntervalSeconds?: number;
  /** Host directories outside the data root AdoptOrphan's move_data may copy (default none). */
  adoptablePaths?: string[];
  /** Seconds between runs of the saved queries that have an alert, on the leader (default 30). */
  savedQueryIntervalSeconds?: number;
  /** Replaces QueryService.Aggregate's work for aggregate saved queries (tests); default query/aggregate.ts runAggregate. */
  aggregate?: AggregateFn;
  log: Logger;
}

export interface Manager {
  readonly store: Store;
  /**
   * The secret of the admin token created because the database had no token
   * at all (first start, made by `listen()` before the port is bound);
   * undefined on later starts. Shown once, never stored.
   */
  readonly initialAdminToken: string | undefined;
  readonly managerId: string;
  /**
   * The leader lease of this manager process (holder: a fresh instance id
   * per process). Alert evaluation (orphan alerts included), webhook
   * delivery and retention run only while it leads.
   */
  readonly leader: LeaderLease;
  readonly reconciler: Reconciler;
  readonly hub: AgentHub;
  /** Metrics, the write probe and readiness. */
  readonly observability: Observability;
  /** Starts serving; resolves with the bound address (and the SFTP endpoint's, when configured). */
  listen(): Promise<{ host: string; port: number; url: string; sftp?: { host: string; port: number; fingerprint: string } }>;
  close(): Promise<void>;
}

/** Request size cap. */
const READ_MAX_BYTES = 4 * 1024 * 1024;
/**
 * How this manager's enrollment command runs the agent: the sources (or a bundle
 * made in the checkout: manager/test-dist, the integration tests') sit two levels
 * under the checkout, whose agent sources are beside them.
 */
function agentInvocationHere() {
  const root = fileURLToPath(new URL("../..", import.meta.url)).replace(/\/$/, "");
  return agentInvocation(import.meta.url, root, existsSync(join(root, "agent", "src", "main.ts")));
}

const DEFAULT_WEB_ROOT = fileURLToPath(new URL("../../web/dist", import.meta.url));
const PLACEHOLDER_WEB_ROOT = fileURLToPath(new URL("../../web/public", import.meta.url));

/**
 * The secret key for this database: loaded (or created on first start) and
 * checked against the database's key check, so a wrong or missing key stops
 * the manager here with a message saying which file to restore (openStore
 * closes the database then).
 */
async function openSecretKey(config: ManagerConfig, url: StoreUrl, meta: StoreMeta, log: Logger): Promise<SecretBox> {
  const dir = storeFilesDir(url);
  const path = config.secretKeyFile ?? (dir === undefined ? undefined : join(dir, "secret.key"));
  if (!path && url.engine === "postgres") {
    // Several managers share the database, so they must share the key: an ephemeral one per
    // process would seal values the other managers cannot open.
    throw new SecretKeyError(
      "a PostgreSQL store needs --secret-key-file PATH (BERTH_SECRET_KEY_FILE): the same 32-byte key on every manager of this database " +
        "(created 0600 at PATH on the first start if the database holds no secrets yet; copy that file to the other managers)",
    );
  }
  if (!path) return SecretBox.ephemeral();
  const loaded = loadSecretKey(path, (await meta.get(KEY_CHECK_META)) !== undefined);
  if (loaded.warning) log.warn({ file: path }, loaded.warning);
  if (loaded.created) log.info({ file: path }, "created the secret key sealing secret env values; back it up apart from the database (docs/install.md)");
  await checkSecretKey(meta, loaded.box, path);
  return loaded.box;
}

/**
 * Where the SFTP host key is kept: --sftp-host-key-file, or beside the SQLite
 * database; undefined (a key for this process only) with ":memory:". Several
 * managers of one PostgreSQL database must present the same key, so it is
 * required there.
 */
function sftpHostKeyFile(cfg: { hostKeyFile?: string }, url: StoreUrl): string | undefined {
  if (cfg.hostKeyFile) return cfg.hostKeyFile;
  const dir = storeFilesDir(url);
  if (dir !== undefined) return join(dir, "sftp_host_ed25519_key");
  if (url.engine === "postgres") {
    throw new SecretKeyError("--sftp-listen with a PostgreSQL store needs --sftp-host-key-file PATH (BERTH_SFTP_HOST_KEY_FILE): the same host key on every manager, so SFTP clients see one host (created 0600 at PATH on first start; copy it to the other managers)");
  }
  return undefined;
}

/** Builds a manager without binding a port, so tests can start it on port 0. */
export async function buildManager(config: ManagerConfig): Promise<Manager> {
  const log = config.log;
  const health = new HealthStatus();
  health.set("", ServingStatus.NOT_SERVING);
  if (config.store === undefined && config.dbPath === undefined) throw new Error("ManagerConfig needs store or dbPath");
  const heartbeatIntervalSeconds = config.heartbeatIntervalSeconds ?? DEFAULT_AGENT_LINK.heartbeatIntervalSeconds;
  const agentTimeoutMs = (config.agentTimeoutSeconds ?? DEFAULT_AGENT_LINK.agentTimeoutSeconds) * 1000;
  if (!(heartbeatIntervalSeconds > 0 && agentTimeoutMs >= 2 * heartbeatIntervalSeconds * 1000)) {
    throw new RangeError(`agent timeout (${agentTimeoutMs / 1000} s) must be at least twice the heartbeat interval (${heartbeatIntervalSeconds} s), which must be above 0`);
  }
  const storeUrl = parseStoreUrl(config.store ?? sqliteStoreUrl(config.dbPath!));
  // Checked before the store opens: a PostgreSQL manager without a shared host key stops here.
  const sftpKeyFile = config.sftp ? sftpHostKeyFile(config.sftp, storeUrl) : undefined;
  let secrets: SecretBox | undefined;
  const store = await openStore(storeUrl, {
    onWarning: (message) => log.warn({ store: describeStoreUrl(storeUrl) }, message),
    secrets: async (meta) => (secrets = await openSecretKey(config, storeUrl, meta, log)),
    onListenerError: (err) => log.error({ err }, "a listener of committed writes failed; the write stands, the listener missed it"),
    checkpointInWorker: true,
  });
  const opened = { contract: store, description: store.description };
  const managerId = await store.clusterId();
  // Nothing is connected at start, whatever the previous run left in the table. Best effort:
  // on a full disk the manager must still start and serve reads (health says NOT_SERVING
  // until a write succeeds); the column is a record, connections are the hub's.
  try {
    await store.commit([{ op: "host.offlineUnowned", at: Date.now() }]);
  } catch (err) {
    log.warn({ err }, "could not mark hosts offline at start (is the database disk full?); serving reads, writes resume once the database is writable");
  }
  const hub = new AgentHub((c) => openCommand(c, secrets));
  const ledger = new Ledger(store, Date.now, log);
  // Batches committed through the store contract reach listeners and watches here (issue 16).
  ledger.follow(opened.contract);
  let initialAdminToken: string | undefined;
  const networks = new NetworkInventory();
  // Work that must run once among the managers of one database runs on the lease's holder; on
  // SQLite (one manager per file) the lease is simply always this manager's.
  const leader = new LeaderLease({ store: opened.contract, holder: newId("mi"), log });
  // Several managers (PostgreSQL): the manager holding a host's agent stream owns the host
  // (cluster/host-ownership.ts). SQLite has one manager per file: every host is its own.
  const ownership = opened.contract.engine === "postgres" ? new HostOwnership({ store: opened.contract, holder: leader.holder, log, isLeader: () => leader.isLeader, ...hostTerm(config.hostTermSeconds) }) : undefined;
  // Another manager took a host whose stream is still here: end it (the agent is with the other one).
  ownership?.onLost((hostId) => hub.disconnect(hostId, "another manager owns this host now"));
  // Which hosts are connected: with several managers, here or to another manager of the database;
  // with one, the hub's streams are the whole truth.
  const clusterPresence = ownership ? new ClusterPresence({ store: opened.contract, local: hub, holder: leader.holder, log }) : undefined;
  const presence: HostPresence = clusterPresence ?? hub;
  const orphans = new OrphanDetector({ store: opened.contract, isConnected: (id) => presence.isConnected(id), managerId, networks, ...(config.orphanGraceSeconds !== undefined ? { graceMs: config.orphanGraceSeconds * 1000 } : {}) });
  const backupHealth = new BackupHealth(opened.contract, log);
  const backupPolicies = new BackupPolicies(opened.contract, log);
  const transferHealth = new TransferHealth(opened.contract, log);
  const ledgerServices = createLedgerServices({
    store: opened.contract,
    ledger,
    isConnected: (id) => presence.isConnected(id),
    log,
    managerId,
    config: config.ledger,
    orphans: () => orphans.alertViews(),
    backupFailures: () => backupHealth.failures(),
    backupPolicies: () => backupPolicies.policies(),
    transferFailures: () => transferHealth.failures(),
    savedQueries: () => savedQueryAlertViews(opened.contract),
  });
  leader.onChange((leading) => (leading ? ledgerServices.start() : ledgerServices.stop()));
  const backupRetention = new BackupRetention({
    store: opened.contract,
    removal: new BackupRemoval({ store: opened.contract, hub, presence, ledger, now: Date.now }),
    log,
    ...(config.backupRetentionIntervalSeconds !== undefined ? { intervalMs: config.backupRetentionIntervalSeconds * 1000 } : {}),
  });
  leader.onChange((leading) => (leading ? backupRetention.start() : void backupRetention.stop()));
  // Host drains (DrainHost) run on the leader; their state is in the host records, so a new leader carries on.
  const drains = new HostDrains({
    store: opened.contract,
    presence,
    ledger,
    log,
    // The manager's own TransferServer unless a test injects another (built below, once the reconciler exists).
    starter: config.transferStarter ?? {
      transfer: async (by, serverId, hostId, opts) => {
        const s = await opened.contract.getServer(serverId);
        if (!s) throw new NotFoundError("server", serverId, "it was purged meanwhile");
        return moves.transfer(by, s, hostId, opts);
      },
    },
    ...(config.drainIntervalSeconds !== undefined ? { intervalMs: config.drainIntervalSeconds * 1000 } : {}),
  });
  leader.onChange((leading) => (leading ? drains.start() : void drains.stop()));
  const limits = new AccessLimits({ ...DEFAULT_LIMITS, ...config.limits });
  // Several managers (PostgreSQL) split each token's rate budget (docs/design.md "Limits with several managers").
  const managerPresence = opened.contract.engine === "postgres" ? new ManagerPresence({ store: opened.contract, holder: leader.holder, log, onCount: (n) => limits.setManagers(n) }) : undefined;
  // What agents report about usage (UsageService, /metrics); a purged server's or removed host's goes.
  // Its 5-minute buckets go to the store after each 5-minute boundary (started by listen()).
  const usage = new UsageFeed({
    projectOf: async (id) => (await opened.contract.getServer(id))?.project,
    store: opened.contract,
    onFlushError: (err) => log.warn({ err }, "could not write the usage history's 5-minute buckets; they are kept and written with the next ones"),
  });
  opened.contract.onCommit((c) => usage.onCommit(c));
  const observability = createObservability({
    store: opened.contract,
    ledger,
    health,
    log,
    version: MANAGER_VERSION,
    probeIntervalSeconds: config.dbProbeIntervalSeconds,
    metricsToken: config.metricsToken,
    sources: {
      hosts: async () => (await opened.contract.listHosts()).map((h) => ({ online: presence.isConnected(h.id) })),
      serverCounts: () => opened.contract.serverCounts(),
      firingAlerts: () => opened.contract.listFiringAlerts(),
      queueDepth: () => reconciler.queue.length,
      isLeader: () => leader.isLeader,
      refusedReports: () => hub.refusedReports,
      hostUsage: () => usage.hostSamples(),
      ...(config.metricsServerUsage ? { serverUsage: () => usage.serverSamples() } : {}),
    },
  });
  const scheme = config.tls ? "https" : "http";
  const reconciler = new Reconciler({
    store: opened.contract,
    hub,
    log,
    managerId,
    ledger,
    secrets,
    observeReconcile: observability.observeReconcile,
    ...(opened.contract.engine === "sqlite" ? { concurrency: SQLITE_CONCURRENCY } : {}),
    ...(config.startTimeoutSeconds ? { deadlineMs: { [CommandKind.ENSURE_RUNNING]: config.startTimeoutSeconds * 1000, [CommandKind.RESTART]: config.startTimeoutSeconds * 1000 } } : {}),
    ...(config.deleteRetentionSeconds !== undefined ? { retentionMs: config.deleteRetentionSeconds * 1000 } : {}),
    ...(config.crashBackoffSeconds !== undefined ? { crashBackoffBaseMs: config.crashBackoffSeconds * 1000 } : {}),
    ...(config.transferOfflineGraceSeconds !== undefined ? { transferOfflineGraceMs: config.transferOfflineGraceSeconds * 1000 } : {}),
    ...(config.resyncIntervalSeconds !== undefined ? { resyncIntervalMs: config.resyncIntervalSeconds * 1000 } : {}),
    ...(config.containerLogs ? { containerLogs: config.containerLogs } : {}),
    ...(config.defaultPidsLimit !== undefined ? { defaultPidsLimit: config.defaultPidsLimit } : {}),
    ...(ownership ? { ownership } : {}),
  });
  const moves = new ServerMoves({ store: opened.contract, ledger, reconciler, presence });
  // Other managers' writes (PostgreSQL) reach this manager's reconciler; its own wake it where they are made.
  wakeForRemoteCommits(opened.contract, reconciler, log, ownership);
  // RemoveHost and ResyncHost made on another manager, for a stream held here.
  serveHostRequests(opened.contract, hub, log, (hostId) => networks.drop(hostId));
  // A token revoked through any manager (or the CLI) ends its streams here too (Committed.tokenIds).
  closeStreamsOfRevokedTokens(opened.contract, limits, log);
  let listener: Listener | undefined;
  let sftp: Awaited<ReturnType<typeof startSftp>> | undefined;
  let sweeper: NodeJS.Timeout | undefined;
  let startupSweep: NodeJS.Timeout | undefined;
  let unownedSweep: NodeJS.Timeout | undefined;
  /**
   * Several managers: a host whose manager died keeps `online` in its row with a lapsed term
   * and no stream anywhere (its agent reconnects elsewhere within seconds, which takes it).
   * The leader marks such hosts offline, says so in the ledger, and reconciles their servers
   * (Unknown; deadlines run), as the manager holding a stream does when it ends.
   */
  const sweepUnownedHosts = async (): Promise<void> => {
    const { hostIds } = await store.commit([{ op: "host.offlineUnowned", at: Date.now() }]);
    if (hostIds.size === 0) return;
    await store.commit(
      [...hostIds].map((hostId) =>
        ledger.op({ type: "host.disconnected", hostId, actor: "manager", message: "no manager holds the agent's stream any more (its manager stopped renewing the host: it died or lost the database)" }),
      ),
    );
    for (const hostId of hostIds) {
      log.warn({ host: hostId }, "host offline: the manager holding its agent's stream stopped renewing it");
      await reconciler.enqueueHost(hostId, "host offline: its manager is gone");
    }
  };
  let advertiseUrl = config.advertiseUrl ?? `${scheme}://${config.listen}`;

  // One instance of each service, shared by the HTTP routes and the SFTP endpoint's in-process calls.
  const serverService = createServerService({ store: opened.contract, hub, presence, ledger, reconciler });
  const accessService = createAccessService({ store: opened.contract, limits, ledger });
  const backupService = createBackupService({ store: opened.contract, hub, presence, ledger, reconciler, get secrets() { return secrets; } });
  // Schedules (docs/schedules.md): the loop runs ticks on the leader; RunScheduleNow runs where it is called.
  // Their tasks call the same handlers as the operators' RPCs, as the schedule (schedules/executor.ts).
  const scheduler = new Scheduler({
    store: opened.contract,
    ledger,
    log,
    holder: leader.holder,
    executor: (s) => scheduleExecutor({ store: opened.contract, servers: serverService, backups: backupService }, s),
    isHolderLive: async (holder) => {
      if (holder === leader.holder) return true;
      if (opened.contract.engine === "sqlite") return false;
      const lease = await opened.contract.getLease(PRESENCE_PREFIX + holder);
      return lease !== undefined && lease.expiresAt > Date.now();
    },
  });
  leader.onChange((leading) => (leading ? scheduler.start() : void scheduler.stop(false)));
  const hostService = createHostService({ store: opened.contract, hub, presence, ledger, reconciler, networks, drains, caFingerprint: config.tls?.caFingerprint, get advertiseUrl() { return advertiseUrl; }, agent: agentInvocationHere() });
  const eventService = createEventService({ ledger, store: opened.contract });
  // QueryService.Aggregate, and the aggregate saved queries (run with their caller's scope, or the alert runner's).
  const aggregateDeps = { store: opened.contract, presence };
  const aggregate: AggregateFn = config.aggregate ?? ((caller, req) => runAggregate(aggregateDeps, aggregateScope(caller, req.project), req));
  // Saved queries with an alert run on the leader at their own interval; the alert rules read what they saw.
  const savedQueryAlerts = new SavedQueryAlerts({
    store: opened.contract,
    run: savedQueryRunner({ servers: serverService, hosts: hostService, events: eventService, aggregate }),
    log,
    ...(config.savedQueryIntervalSeconds !== undefined ? { intervalMs: config.savedQueryIntervalSeconds * 1000 } : {}),
  });
  leader.onChange((leading) => (leading ? savedQueryAlerts.start() : void savedQueryAlerts.stop()));
  const fileService = createFileService({ store: opened.contract, hub, presence, ledger, ...(config.fileMaxUploadBytes !== undefined ? { maxUploadBytes: config.fileMaxUploadBytes } : {}) });
  /** What an SFTP login calls (sftp/api-files.ts). */
  const sftpRoutes = (router: ConnectRouter) => {
    router.service(AccessService, accessService);
    router.service(ServerService, serverService);
    router.service(FileService, fileService);
  };
  const routes = (router: ConnectRouter) => {
    router.service(ServerService, serverService);
    router.service(HostService, hostService);
    router.service(AgentService, createAgentService({ store: opened.contract, hub, ledger, reconciler, log, managerId, heartbeatIntervalSeconds, networks, usage, ...(ownership ? { ownership } : {}) }));
    router.service(UsageService, createUsageService({ store: opened.contract, usage, hub, presence }));
    router.service(AccessService, accessService);
    router.service(EventService, eventService);
    router.service(QueryService, createQueryService(aggregateDeps));
    router.service(SavedQueryService, createSavedQueryService({ store: opened.contract, ledger, servers: serverService, hosts: hostService, events: eventService, aggregate }));
    router.service(AlertService, createAlertService({ store: opened.contract, ledger }));
    router.service(TemplateService, createTemplateService({ store: opened.contract, ledger }));
    router.service(BackupService, backupService);
    router.service(ScheduleService, createScheduleService({ store: opened.contract, ledger, scheduler }));
    router.service(FileService, fileService);
    router.service(OrphanService, createOrphanService({ store: opened.contract, hub, presence, ledger, reconciler, detector: orphans, networks, log, adoptablePaths: config.adoptablePaths ?? [] }));
    registerHealth(router, health);
    // google.rpc.BadRequest rides in InvalidArgument errors' details: reflection serves it so grpcurl decodes them.
    registerReflection(router, [file_google_rpc_error_details]);
    // Garbage protobuf bytes are the caller's error (InvalidArgument), not the manager's (Internal).
    guardRequestDecoding(router, READ_MAX_BYTES);
  };
  const webRoot = config.webRoot ?? (existsSync(DEFAULT_WEB_ROOT) ? DEFAULT_WEB_ROOT : PLACEHOLDER_WEB_ROOT);
  // Outermost: a request the adapter cannot convert is a 400, never a thrown exception (issue 14).
  // Errors first (outermost), so failures inside auth are converted too.
  // Metrics outermost: they count the codes clients see.
  const interceptors = [observability.interceptor, errorInterceptor(log), rejectUndecodable(), authInterceptor({ store: opened.contract, limits, log }), validateRequests()];
  const handler = guardRequests(connectNodeAdapter({
    routes,
    interceptors,
    // Request size cap: no berth request comes near it (an agent's inventory is the largest).
    readMaxBytes: READ_MAX_BYTES,
    // /healthz, /readyz and /metrics first; any other path is the dashboard.
    fallback: observability.routes(staticFiles(webRoot)),
  }), log);

  return {
    store,
    get initialAdminToken() {
      return initialAdminToken;
    },
    managerId,
    leader,
    reconciler,
    hub,
    observability,
    async listen() {
      // Before the port is bound: the first caller can use it.
      initialAdminToken = await bootstrapAdminToken(opened.contract, ledger);
      // berth's built-in templates (templates/builtin.ts): created when missing, updated when changed.
      try {
        const b = await ensureBuiltinTemplates(opened.contract, ledger);
        if (b.created.length + b.updated.length > 0) log.info({ created: b.created, updated: b.updated }, "built-in templates installed");
      } catch (err) {
        log.warn({ err }, "could not install the built-in templates; they are tried again at the next start");
      }
      const [host, portText] = splitHostPort(config.listen);
      listener = await listen(host, Number(portText), handler, { tls: config.tls, limits: config.http, log });
      const { port } = listener.address;
      const url = `${scheme}://${host.includes(":") ? `[${host}]` : host}:${port}`;
      // Agents cannot dial a wildcard address; this machine's name is the best guess (see --advertise-url).
      const wildcard = host === "0.0.0.0" || host === "::";
      if (!config.advertiseUrl) advertiseUrl = wildcard ? `${scheme}://${hostname()}:${port}` : url;
      // Each host's servers are reconciled when its agent's first inventory arrives, and a
      // restarted manager's agents are back within a second. Reconciling every server now,
      // with no agent connected yet, would mark all of them Unknown only to flip them back a
      // moment later: at 100,000 servers, a minute of writes while the fleet reconnects
      // (docs/benchmarks.md). So servers whose host is still away after the agent timeout are
      // reconciled then (Unknown; their deadlines fire), as for a host that goes silent.
      startupSweep = setTimeout(() => {
        void readPages((page) => store.serverPlacements(page)).then(
          (placements) => {
            for (const s of placements) if (!presence.isConnected(s.hostId)) reconciler.enqueue(s.id, "manager started; host not connected");
          },
          (err: unknown) => log.warn({ err }, "could not read servers for the startup sweep; the periodic resync reconciles them"),
        );
      }, agentTimeoutMs);
      startupSweep.unref();
      sweeper = setInterval(() => {
        for (const hostId of hub.closeSilent(Date.now(), agentTimeoutMs)) {
          log.warn({ host: hostId }, "agent silent; marking host offline");
        }
      }, 1000);
      sweeper.unref();
      // The backup alert's view of failed backups, kept from the ledger from now on.
      await backupHealth.start().catch((err: unknown) => log.warn({ err }, "could not read the backups for the backup alert; it catches up from the next backup event"));
      // The backup_overdue alert's view of policies and newest successes, likewise.
      await backupPolicies.start().catch((err: unknown) => log.warn({ err }, "could not read the backup policies for the backup_overdue alert; it catches up from each server's next backup or spec event"));
      await transferHealth.start().catch((err: unknown) => log.warn({ err }, "could not read the transfer events for the transfer_failed alert; it catches up from each server's next transfer event"));
      // Alerts, webhooks and retention start once this manager holds the leader lease.
      leader.start();
      ownership?.start();
      await clusterPresence?.start();
      if (ownership) {
        // Only once every live manager has had a whole term to renew its hosts since this one
        // (re)gained the lead or reached the database again: after a database outage every term
        // has lapsed, and the managers still holding streams renew them within one renew interval.
        let sweepFrom = Number.POSITIVE_INFINITY;
        leader.onChange((leading) => (sweepFrom = leading ? Date.now() + ownership.ttlMs : Number.POSITIVE_INFINITY));
        if (leader.isLeader) sweepFrom = Date.now() + ownership.ttlMs;
        unownedSweep = setInterval(() => {
          if (!leader.isLeader || Date.now() < sweepFrom) return;
          void sweepUnownedHosts().catch((err: unknown) => {
            sweepFrom = Date.now() + ownership.ttlMs;
            log.warn({ err }, "could not mark hosts of a departed manager offline; trying again once the database answers");
          });
        }, 2000);
        unownedSweep.unref();
      }
      managerPresence?.start();
      reconciler.startResync();
      // SERVING once a write probe succeeds (now, then every few seconds).
      observability.start();
      usage.start();
      log.info({ url, managerId, store: opened.description }, "manager listening");
      if (!config.sftp) return { host, port, url };
      sftp = await startSftp({ listen: splitHostPort(config.sftp.listen), ...(sftpKeyFile ? { hostKeyFile: sftpKeyFile } : {}) }, sftpRoutes, interceptors, log);
      return { host, port, url, sftp: sftp.address };
    },
    async close() {
      observability.stop();
      if (sweeper) clearInterval(sweeper);
      if (startupSweep) clearTimeout(startupSweep);
      if (unownedSweep) clearInterval(unownedSweep);
      clusterPresence?.stop();
      // Runs under way end failed (ManagerShutdown) while the server operations they call still work.
      await scheduler.stop();
      await savedQueryAlerts.stop();
      // In-flight reconciles finish before the store closes.
      await reconciler.stop();
      hub.closeAll("manager shutting down");
      // The buckets still filling too: a restart's 24 h window misses nothing measured here.
      await usage.stop();
      // Hands this manager's hosts over at once (their agents reconnect to another manager).
      await ownership?.stop();
      await managerPresence?.stop();
      // Stops alerts, webhooks and retention, then hands the lease to another manager.
      await leader.stop();
      ledgerServices.stop();
      backupHealth.stop();
      backupPolicies.stop();
      transferHealth.stop();
      await backupRetention.stop();
      await drains.stop();
      ledger.servers.close();
      await sftp?.server.close();
      await listener?.close();
      await store.close();
    },
  };
}

/**
 * First start (no token at all, revoked ones included): creates an
 * all-projects admin token and returns its secret, which only the caller
 * prints; the database keeps its hash.
 */
async function bootstrapAdminToken(store: Store, ledger: Ledger): Promise<string | undefined> {
  if ((await store.countTokens()) > 0) return undefined;
  const { token, secret, op } = newToken({ name: "admin", role: "admin", project: null }, "bootstrap", Date.now());
  await store.commit([op, ledger.op({ type: "token.created", actor: "bootstrap", correlationId: token.id, message: 'first start: admin token "admin" (all projects) created' })]);
  return secret;
}

/** "127.0.0.1:7000" → ["127.0.0.1", "7000"]; "[::1]:7000" → ["::1", "7000"]. */
/** The host lease of a `hostTermSeconds` term, renewed every third of it; the defaults (15 s, 5 s) when unset. */
function hostTerm(seconds: number | undefined): { ttlMs?: number; renewMs?: number } {
  return seconds === undefined ? {} : { ttlMs: seconds * 1000, renewMs: Math.round((seconds * 1000) / 3) };
}

export function splitHostPort(s: string): [string, string] {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(s) ?? /^([^:]*):(\d+)$/.exec(s);
  if (!m) throw new Error(`listen address "${s}" must be host:port, e.g. 127.0.0.1:7000`);
  return [m[1] || "0.0.0.0", m[2]!];
}
