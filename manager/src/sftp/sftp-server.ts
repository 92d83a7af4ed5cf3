/**
 * berth's SFTP endpoint (ssh2, on the manager). A user logs in as
 * `<server name or id>.<project>` with a berth token as password and sees
 * that server's data directory as "/". The protocol is spoken here; the work
 * goes through an SftpFiles (berth's file API), so an SFTP login can do
 * exactly what its token can do through the API, and leaves the same ledger
 * events.
 *
 * On the manager rather than on the agents: one address and one host key for
 * the whole fleet, berth tokens checked where they live, hosts that need no
 * port open to users, and a server reachable while it moves between hosts.
 *
 * Bounds, whatever a client does: at most `maxConnections` connections, 64
 * open handles per session, reads of at most 256 KiB, and an upload's writes
 * answered only as the file API takes them (a client that pipelines writes
 * beyond 16 MiB ahead of it has the upload refused).
 */
import { createHash } from "node:crypto";
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { dirname } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import ssh2 from "ssh2";
import type { Attributes, Connection, FileEntry as Ssh2Entry, SFTPWrapper } from "ssh2";
import { dataPath, type SftpEntry, type SftpFiles, type SftpLogin } from "./sftp-files.js";

const { Server, utils } = ssh2;
const { OPEN_MODE, STATUS_CODE } = utils.sftp;

export const MAX_READ_BYTES = 256 * 1024;
export const MAX_HANDLES = 64;
/** Bytes an upload may have received and not yet handed to the file API. */
export const MAX_UPLOAD_AHEAD_BYTES = 16 * 1024 * 1024;
/** Entries per READDIR answer. */
const DIR_BATCH = 100;
/** A failed login is answered this late: guessing tokens stays slow. */
const FAILED_LOGIN_DELAY_MS = 1_000;

export interface SftpServerOptions {
  /** The host key (OpenSSH private key text). */
  hostKey: string | Buffer;
  login: SftpLogin;
  log: Logger;
  /** Most connections at once (default 64); more are closed at once. */
  maxConnections?: number;
  /** A test seam: how long a failed login waits (default 1 s). */
  failedLoginDelayMs?: number;
}

export class SftpServer {
  private readonly server: InstanceType<typeof Server>;
  private readonly conns = new Set<Connection>();
  private readonly maxConnections: number;

  constructor(private readonly opts: SftpServerOptions) {
    this.maxConnections = opts.maxConnections ?? 64;
    this.server = new Server({ hostKeys: [opts.hostKey], ident: "berth" }, (conn, info) => this.accept(conn, info.ip));
  }

  listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        this.server.off("error", reject);
        resolve(this.server.address() as AddressInfo);
      });
    });
  }

  /** Stops listening and ends every connection (their uploads are abandoned, nothing half-written stays). */
  async close(): Promise<void> {
    for (const c of this.conns) c.end();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(conn: Connection, ip: string): void {
    const log = this.opts.log.child({ sftp: ip });
    if (this.conns.size >= this.maxConnections) {
      log.warn({ max: this.maxConnections }, "SFTP connection refused: too many connections");
      conn.end();
      return;
    }
    this.conns.add(conn);
    const closed = new AbortController();
    let files: SftpFiles | undefined;
    conn.on("error", (err) => log.debug({ err: err.message }, "SFTP connection error"));
    conn.on("close", () => {
      this.conns.delete(conn);
      closed.abort();
    });
    conn.on("authentication", (ctx) => {
      if (ctx.method !== "password") return ctx.reject(["password"]);
      this.opts.login(ctx.username, ctx.password).then(
        (f) => {
          files = f;
          log.info({ login: f.label, writable: f.writable }, "SFTP login");
          ctx.accept();
        },
        (err: unknown) => {
          log.info({ user: ctx.username.slice(0, 200), err: ConnectError.from(err).rawMessage }, "SFTP login refused");
          setTimeout(() => ctx.reject(["password"]), this.opts.failedLoginDelayMs ?? FAILED_LOGIN_DELAY_MS);
        },
      );
    });
    conn.on("ready", () => {
      conn.on("session", (acceptSession) => {
        const session = acceptSession();
        session.on("sftp", (acceptSftp) => {
          if (!files) return;
          serveSftp(acceptSftp(), files, closed.signal, log);
        });
      });
    });
  }
}

type Handle =
  | { kind: "dir"; path: string; pending: SftpEntry[]; pageToken: string; done: boolean }
  | { kind: "read"; path: string; entry: SftpEntry; reader: SequentialReader }
  | { kind: "write"; path: string; upload: Upload; mode?: number };

/** One SFTP session over `files`: requests answered until the session or the connection ends. */
export function serveSftp(sftp: SFTPWrapper, files: SftpFiles, connClosed: AbortSignal, log: Logger): void {
  const handles = new Map<number, Handle>();
  let nextHandle = 1;
  const ended = new AbortController();
  const onClosed = () => ended.abort();
  connClosed.addEventListener("abort", onClosed, { once: true });
  // The client is done (its side ended): close ours, or it waits for that.
  sftp.on("end", () => sftp.end());
  sftp.on("close", () => {
    connClosed.removeEventListener("abort", onClosed);
    ended.abort();
    // An upload never closed is abandoned: the file API drops what it wrote.
    for (const h of handles.values()) if (h.kind !== "dir") h.kind === "read" ? h.reader.stop() : h.upload.abandon();
    handles.clear();
  });

  const fail = (reqId: number, err: unknown) => {
    const e = ConnectError.from(err);
    sftp.status(reqId, statusFor(e.code), e.rawMessage);
  };
  /** Runs `work`, answering OK when it ends, or its error's status. */
  const run = (reqId: number, work: () => Promise<unknown>) => {
    work().then(
      () => sftp.status(reqId, STATUS_CODE.OK),
      (err: unknown) => fail(reqId, err),
    );
  };
  /** Runs `work` (which answers itself), answering its error's status if it throws. */
  const answer = (reqId: number, work: () => Promise<void>) => void work().catch((err: unknown) => fail(reqId, err));
  const writable = (what: string) => {
    if (!files.writable) throw new ConnectError(`${what} needs the operator role; this login's token is read-only (viewer)`, Code.PermissionDenied);
  };
  const handleOf = (buf: Buffer): [number, Handle | undefined] => {
    const id = buf.length === 4 ? buf.readUInt32BE(0) : -1;
    return [id, handles.get(id)];
  };
  const newHandle = (h: Handle): Buffer => {
    if (handles.size >= MAX_HANDLES) throw new ConnectError(`more than ${MAX_HANDLES} open files or directories in one session: close some first`, Code.ResourceExhausted);
    const id = nextHandle++;
    handles.set(id, h);
    const b = Buffer.alloc(4);
    b.writeUInt32BE(id, 0);
    return b;
  };
  const noHandle = (reqId: number) => sftp.status(reqId, STATUS_CODE.FAILURE, "no such handle (closed or never opened)");

  sftp.on("REALPATH", (reqId, path) =>
    answer(reqId, async () => {
      const p = `/${dataPath(path)}`;
      sftp.name(reqId, [{ filename: p, longname: p, attrs: {} as Attributes }]);
    }),
  );
  const stat = (reqId: number, path: string) => answer(reqId, async () => sftp.attrs(reqId, attrsOf(await files.stat(dataPath(path)))));
  sftp.on("STAT", stat);
  sftp.on("LSTAT", stat);

  sftp.on("OPENDIR", (reqId, path) =>
    answer(reqId, async () => {
      const p = dataPath(path);
      const e = await files.stat(p);
      if (e.type !== "dir") throw new ConnectError(`/${p} is not a directory`, Code.FailedPrecondition);
      sftp.handle(reqId, newHandle({ kind: "dir", path: p, pending: [], pageToken: "", done: false }));
    }),
  );
  sftp.on("READDIR", (reqId, buf) => {
    const [, h] = handleOf(buf);
    if (h?.kind !== "dir") return noHandle(reqId);
    answer(reqId, async () => {
      while (h.pending.length === 0 && !h.done) {
        const page = await files.list(h.path, h.pageToken);
        h.pending.push(...page.entries);
        h.pageToken = page.nextPageToken;
        h.done = !page.nextPageToken;
      }
      if (h.pending.length === 0) return sftp.status(reqId, STATUS_CODE.EOF);
      sftp.name(reqId, h.pending.splice(0, DIR_BATCH).map(nameOf));
    });
  });

  sftp.on("OPEN", (reqId, path, flags, attrs) =>
    answer(reqId, async () => {
      const p = dataPath(path);
      const wants = (f: number) => (flags & f) !== 0;
      if (wants(OPEN_MODE.WRITE) || wants(OPEN_MODE.APPEND) || wants(OPEN_MODE.CREAT) || wants(OPEN_MODE.TRUNC)) {
        writable("writing a file");
        if (wants(OPEN_MODE.READ)) throw unsupported("opening a file to read and write at once");
        if (wants(OPEN_MODE.APPEND)) throw unsupported("appending (berth replaces a file whole)");
        const existing = await files.stat(p).catch((err: unknown) => {
          if (ConnectError.from(err).code === Code.NotFound) return undefined;
          throw err;
        });
        if (existing?.type === "dir") throw new ConnectError(`/${p} is a directory`, Code.FailedPrecondition);
        if (existing && wants(OPEN_MODE.EXCL)) throw new ConnectError(`/${p} already exists`, Code.AlreadyExists);
        if (existing && !wants(OPEN_MODE.TRUNC)) throw unsupported("writing into an existing file without truncating it (resuming an upload): berth replaces a file whole; upload it again");
        if (!existing && !wants(OPEN_MODE.CREAT)) throw new ConnectError(`/${p} does not exist`, Code.NotFound);
        const mode = typeof attrs?.mode === "number" ? attrs.mode & 0o7777 : undefined;
        sftp.handle(reqId, newHandle({ kind: "write", path: p, upload: new Upload(files, p, ended.signal), ...(mode !== undefined ? { mode } : {}) }));
        return;
      }
      const entry = await files.stat(p);
      if (entry.type === "dir") throw new ConnectError(`/${p} is a directory`, Code.FailedPrecondition);
      sftp.handle(reqId, newHandle({ kind: "read", path: p, entry, reader: new SequentialReader(files, p, ended.signal) }));
    }),
  );

  sftp.on("READ", (reqId, buf, offset, len) => {
    const [, h] = handleOf(buf);
    if (h?.kind !== "read") return noHandle(reqId);
    answer(reqId, async () => {
      const data = await h.reader.read(offset, Math.min(len, MAX_READ_BYTES));
      if (data) sftp.data(reqId, data);
      else sftp.status(reqId, STATUS_CODE.EOF);
    });
  });

  sftp.on("WRITE", (reqId, buf, offset, data) => {
    const [, h] = handleOf(buf);
    if (h?.kind !== "write") return noHandle(reqId);
    // Taken in arrival order; answered once the file API has taken the bytes.
    h.upload.push(offset, data).then(
      () => sftp.status(reqId, STATUS_CODE.OK),
      (err: unknown) => fail(reqId, err),
    );
  });

  sftp.on("FSTAT", (reqId, buf) => {
    const [, h] = handleOf(buf);
    if (!h) return noHandle(reqId);
    if (h.kind === "read") return sftp.attrs(reqId, attrsOf(h.entry));
    if (h.kind === "write") return sftp.attrs(reqId, attrsOf({ name: "", type: "file", size: h.upload.received, mode: h.mode ?? 0o644, mtimeMs: Date.now() }));
    answer(reqId, async () => sftp.attrs(reqId, attrsOf(await files.stat(h.path))));
  });

  sftp.on("CLOSE", (reqId, buf) => {
    const [id, h] = handleOf(buf);
    if (!h) return noHandle(reqId);
    handles.delete(id);
    if (h.kind === "dir") return sftp.status(reqId, STATUS_CODE.OK);
    if (h.kind === "read") {
      h.reader.stop();
      return sftp.status(reqId, STATUS_CODE.OK);
    }
    run(reqId, async () => {
      await h.upload.finish();
      if (h.mode !== undefined) await files.chmod(h.path, h.mode);
    });
  });

  const setstat = (reqId: number, path: string | undefined, h: Handle | undefined, attrs: Attributes) =>
    run(reqId, async () => {
      writable("changing a file's attributes");
      if (typeof attrs.uid === "number" || typeof attrs.gid === "number") throw unsupported("changing a file's owner");
      if (typeof attrs.size === "number" && !(h?.kind === "write" && attrs.size === h.upload.received)) throw unsupported("truncating a file");
      // atime/mtime are left as they are: a file's mtime is when berth last wrote it.
      if (typeof attrs.mode !== "number") return;
      const mode = attrs.mode & 0o7777;
      // An upload's mode is set once it is in place.
      if (h?.kind === "write") h.mode = mode;
      else await files.chmod(path ?? (h ? h.path : ""), mode);
    });
  sftp.on("SETSTAT", (reqId, path, attrs) => setstat(reqId, dataPath(path), undefined, attrs));
  sftp.on("FSETSTAT", (reqId, buf, attrs) => {
    const [, h] = handleOf(buf);
    if (!h) return noHandle(reqId);
    setstat(reqId, undefined, h, attrs);
  });

  sftp.on("MKDIR", (reqId, path) => run(reqId, async () => (writable("making a directory"), files.mkdir(dataPath(path)))));
  sftp.on("REMOVE", (reqId, path) => run(reqId, async () => (writable("deleting a file"), files.remove(dataPath(path)))));
  sftp.on("RMDIR", (reqId, path) => run(reqId, async () => (writable("deleting a directory"), files.rmdir(dataPath(path)))));
  sftp.on("RENAME", (reqId, from, to) => run(reqId, async () => (writable("renaming"), files.rename(dataPath(from), dataPath(to)))));
  sftp.on("READLINK", (reqId) => sftp.status(reqId, STATUS_CODE.OP_UNSUPPORTED, "berth does not follow links over SFTP"));
  sftp.on("SYMLINK", (reqId) => sftp.status(reqId, STATUS_CODE.OP_UNSUPPORTED, "berth does not make links"));
  sftp.on("EXTENDED", (reqId, name) => sftp.status(reqId, STATUS_CODE.OP_UNSUPPORTED, `no extension ${JSON.stringify(name.slice(0, 100))}`));
  sftp.on("error", (err: Error) => log.debug({ err: err.message, login: files.label }, "SFTP session error"));
}

/**
 * A read handle's bytes: one streaming read from the file API, served to the
 * client's (pipelined, in-order) READs; a READ at another offset starts a new
 * stream there.
 */
class SequentialReader {
  private pos = 0;
  private stream?: { ac: AbortController; it: AsyncIterator<Uint8Array> };
  private rest: Buffer = Buffer.alloc(0);
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly files: SftpFiles,
    private readonly path: string,
    private readonly ended: AbortSignal,
  ) {}

  /** Up to `len` bytes at `offset`; null at the end of the file. */
  read(offset: number, len: number): Promise<Buffer | null> {
    const p = this.chain.then(() => this.readNow(offset, len));
    this.chain = p.catch(() => undefined);
    return p;
  }

  stop(): void {
    this.stream?.ac.abort();
    this.stream = undefined;
  }

  private async readNow(offset: number, len: number): Promise<Buffer | null> {
    if (!this.stream || offset !== this.pos) {
      this.stop();
      const ac = new AbortController();
      const signal = AbortSignal.any([ac.signal, this.ended]);
      this.stream = { ac, it: this.files.read(this.path, offset, signal)[Symbol.asyncIterator]() };
      this.pos = offset;
      this.rest = Buffer.alloc(0);
    }
    const parts: Buffer[] = [];
    let have = 0;
    while (have < len) {
      if (this.rest.length === 0) {
        const r = await this.stream.it.next();
        if (r.done) break;
        this.rest = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
        continue;
      }
      const take = this.rest.subarray(0, len - have);
      parts.push(take);
      have += take.length;
      this.rest = this.rest.subarray(take.length);
    }
    this.pos += have;
    return have === 0 ? null : Buffer.concat(parts);
  }
}

/**
 * An upload: WRITEs at consecutive offsets become one streaming write through
 * the file API, which replaces the file when the handle is closed. A WRITE
 * is answered when the file API took its bytes (so the client's pipelining is
 * what is buffered, within MAX_UPLOAD_AHEAD_BYTES).
 */
class Upload {
  /** Bytes received from the client. */
  received = 0;
  private readonly queue: { data: Buffer; taken: () => void }[] = [];
  private queued = 0;
  private closing = false;
  private error?: ConnectError;
  private wake?: () => void;
  private readonly ac = new AbortController();
  private readonly done: Promise<void>;

  constructor(files: SftpFiles, path: string, ended: AbortSignal) {
    const self = this;
    async function* source(): AsyncGenerator<Uint8Array> {
      for (;;) {
        const next = self.queue.shift();
        if (next) {
          self.queued -= next.data.length;
          next.taken();
          yield next.data;
        } else if (self.closing) return;
        else await new Promise<void>((r) => (self.wake = r));
      }
    }
    this.done = files.write(path, source(), AbortSignal.any([this.ac.signal, ended]));
    this.done.catch((err: unknown) => {
      this.error = ConnectError.from(err);
      this.drop();
    });
  }

  push(offset: number, data: Buffer): Promise<void> {
    if (this.error) return Promise.reject(this.error);
    if (this.closing) return Promise.reject(new ConnectError("the upload is closed", Code.FailedPrecondition));
    if (offset !== this.received) {
      return this.fail(unsupported(`writing at byte ${offset} while the upload is at byte ${this.received}: berth takes an upload in order, from its first byte`));
    }
    if (this.queued + data.length > MAX_UPLOAD_AHEAD_BYTES) {
      return this.fail(new ConnectError(`more than ${MAX_UPLOAD_AHEAD_BYTES} bytes written ahead of what the server stored; the upload was abandoned`, Code.ResourceExhausted));
    }
    this.received += data.length;
    this.queued += data.length;
    return new Promise<void>((taken, reject) => {
      // ssh2 reuses nothing, but copy anyway: the queue must own its bytes.
      this.queue.push({ data: Buffer.from(data), taken: () => (this.error ? reject(this.error) : taken()) });
      this.wake?.();
    });
  }

  /** The client closed the handle: the file is replaced once the file API has it all. */
  async finish(): Promise<void> {
    this.closing = true;
    this.wake?.();
    await this.done;
  }

  abandon(): void {
    this.ac.abort();
    this.closing = true;
    this.wake?.();
  }

  private fail(err: ConnectError): Promise<void> {
    this.error ??= err;
    this.abandon();
    this.drop();
    return Promise.reject(this.error);
  }

  /** WRITEs still queued are answered with the upload's error. */
  private drop(): void {
    for (const q of this.queue.splice(0)) q.taken();
    this.queued = 0;
  }
}

function unsupported(what: string): ConnectError {
  return new ConnectError(`${what} is not supported`, Code.Unimplemented);
}

export function statusFor(code: Code): number {
  switch (code) {
    case Code.NotFound:
      return STATUS_CODE.NO_SUCH_FILE;
    case Code.PermissionDenied:
    case Code.Unauthenticated:
      return STATUS_CODE.PERMISSION_DENIED;
    case Code.Unimplemented:
      return STATUS_CODE.OP_UNSUPPORTED;
    default:
      return STATUS_CODE.FAILURE;
  }
}

const TYPE_BITS: Record<SftpEntry["type"], number> = { file: 0o100000, dir: 0o040000, symlink: 0o120000, other: 0 };

export function attrsOf(e: SftpEntry): Attributes {
  const t = Math.floor(e.mtimeMs / 1000);
  return { mode: TYPE_BITS[e.type] | (e.mode & 0o7777), uid: 0, gid: 0, size: e.size, atime: t, mtime: t };
}

function nameOf(e: SftpEntry): Ssh2Entry {
  return { filename: e.name, longname: longname(e), attrs: attrsOf(e) };
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** An `ls -l` line, as SFTP clients show for `ls -l`. */
export function longname(e: SftpEntry): string {
  const kind = e.type === "dir" ? "d" : e.type === "symlink" ? "l" : e.type === "other" ? "?" : "-";
  let perms = "";
  for (let shift = 6; shift >= 0; shift -= 3) {
    const bits = (e.mode >> shift) & 7;
    perms += (bits & 4 ? "r" : "-") + (bits & 2 ? "w" : "-") + (bits & 1 ? "x" : "-");
  }
  const d = new Date(e.mtimeMs);
  const when = `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2)} ${String(d.getUTCHours()).padStart(2, "0")}:${String(d.getUTCMinutes()).padStart(2, "0")}`;
  return `${kind}${perms}    1 berth    berth    ${String(e.size).padStart(8)} ${when} ${e.name}`;
}

/** The host key kept at `path`, or (no path: an in-memory database) one made for this process. */
export async function hostKeyFor(path: string | undefined): Promise<{ key: string; fingerprint: string }> {
  if (path) return loadOrCreateHostKey(path);
  const key = utils.generateKeyPairSync("ed25519").private;
  return { key, fingerprint: fingerprintOf(key) };
}

/**
 * The endpoint's host key: read from `path`, or made (ed25519) and kept there
 * (mode 0600) the first time. Returns the key and its SHA-256 fingerprint as
 * `ssh-keygen -l` prints it, for operators to check on first connect.
 */
export async function loadOrCreateHostKey(path: string): Promise<{ key: string; fingerprint: string }> {
  let key: string;
  try {
    key = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    key = utils.generateKeyPairSync("ed25519").private;
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.tmp-${process.pid}`;
    await writeFile(tmp, key, { mode: 0o600 });
    await chmod(tmp, 0o600);
    await rename(tmp, path);
  }
  try {
    return { key, fingerprint: fingerprintOf(key) };
  } catch (err) {
    throw new Error(`the SFTP host key in ${path} cannot be read (${(err as Error).message}); move it away and a new one is made at the next start`);
  }
}

/** A private key's SHA-256 fingerprint, as `ssh-keygen -l` prints it. */
function fingerprintOf(key: string): string {
  const parsed = utils.parseKey(key);
  if (parsed instanceof Error) throw parsed;
  const one = Array.isArray(parsed) ? parsed[0]! : parsed;
  return `SHA256:${createHash("sha256").update(one.getPublicSSH()).digest("base64").replace(/=+$/, "")}`;
}
