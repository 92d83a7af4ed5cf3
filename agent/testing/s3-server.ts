/**
 * A real S3-compatible server for tests: s3rver 3.7.1 on 127.0.0.1, storing
 * into a temporary directory, behind an http.Server of ours so a test can
 * see every request it answered and stop it hard (connections dropped
 * mid-request, as a crash would) and start it again on the same port and
 * directory.
 *
 * What s3rver 3.7.1 lacks (routes.js): ListMultipartUploads (GET
 * ?uploads answers NotImplemented) and AbortMultipartUpload (DELETE
 * ?uploadId answers MethodNotAllowed). Its pending uploads are directories
 * on disk, which pendingUploads() lists: the server's real state, for
 * asserting what a failed upload left behind.
 */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** The part of s3rver's API used here (it ships no types). */
interface S3rverInstance {
  callback(): (req: IncomingMessage, res: import("node:http").ServerResponse) => void;
  configureBuckets(): Promise<void>;
}
type S3rverClass = new (opts: { directory: string; silent: boolean; configureBuckets: Array<{ name: string }>; vhostBuckets: boolean }) => S3rverInstance;
const S3rver = createRequire(import.meta.url)("s3rver") as S3rverClass;

/** s3rver's only account; it checks signatures, so other keys are refused (InvalidAccessKeyId / SignatureDoesNotMatch). */
export const S3RVER_KEY = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

export interface S3Request {
  method: string;
  /** Path, with the bucket first. */
  path: string;
  query: URLSearchParams;
  /** The status answered, once the response is sent. */
  status?: number;
  /** Order of events across all requests (no clocks): when it arrived, and when its answer was sent. */
  arrived: number;
  answered?: number;
}

export class TestS3Server {
  /** Every request received since start, in arrival order. */
  readonly requests: S3Request[] = [];
  /**
   * Fault injection: answer HEAD requests for objects with this many bytes
   * more in Content-Length than s3rver holds (a target that lies about
   * what it stored). 0: s3rver answers.
   */
  headSizeSkew = 0;
  private server: Server | undefined;
  private port = 0;
  private events = 0;

  private constructor(
    readonly directory: string,
    private readonly buckets: string[],
  ) {}

  /** Starts s3rver on a free port of 127.0.0.1 with a new temporary directory holding `buckets`. */
  static async start(buckets: string[]): Promise<TestS3Server> {
    const s = new TestS3Server(await mkdtemp(join(tmpdir(), "berth-s3rver-")), buckets);
    await s.restart();
    return s;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** (Re)starts s3rver on the same port and directory: what it stored survives. */
  async restart(): Promise<void> {
    if (this.server) throw new Error("the test S3 server is running");
    const s3rver = new S3rver({ directory: this.directory, silent: true, configureBuckets: this.buckets.map((name) => ({ name })), vhostBuckets: false });
    await s3rver.configureBuckets();
    const handle = s3rver.callback();
    const server = createServer((req, res) => {
      const url = new URL(req.url ?? "/", "http://x");
      const r: S3Request = { method: req.method ?? "", path: decodeURIComponent(url.pathname), query: url.searchParams, arrived: this.events++ };
      this.requests.push(r);
      res.on("finish", () => {
        r.status = res.statusCode;
        r.answered = this.events++;
      });
      if (r.method === "HEAD" && this.headSizeSkew !== 0) {
        const skew = this.headSizeSkew;
        const { writeHead } = res;
        // s3rver sets Content-Length when it answers: change it on its way out.
        res.writeHead = ((...args: Parameters<typeof writeHead>) => {
          const length = Number(res.getHeader("content-length"));
          if (res.statusCode === 200 && Number.isFinite(length)) res.setHeader("content-length", length + skew);
          return writeHead.apply(res, args);
        }) as typeof writeHead;
      }
      handle(req, res);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.port = (server.address() as AddressInfo).port;
    this.server = server;
  }

  /** Stops at once: open connections are dropped, requests in flight included. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    server.closeAllConnections();
    await closed;
  }

  /** The multipart uploads s3rver holds for `bucket` (its upload directories on disk), by upload id. */
  async pendingUploads(bucket: string): Promise<string[]> {
    try {
      return (await readdir(join(this.directory, bucket, "._S3rver_uploads"))).sort();
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return [];
      throw err;
    }
  }

  /** Stops and removes the directory. */
  async close(): Promise<void> {
    await this.stop();
    await rm(this.directory, { recursive: true, force: true });
  }
}
