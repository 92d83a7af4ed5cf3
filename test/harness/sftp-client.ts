/**
 * OpenSSH's `sftp` in batch mode against berth's SFTP endpoint, logging in
 * with a password (a berth token) through SSH_ASKPASS: the real client the
 * issue asks for, with no prompt and no TTY.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary } from "./docker-engine.js";

export interface SftpRun {
  /** sftp's exit code: 0 when every command succeeded. */
  code: number;
  /** What it printed (stdout and stderr): each command echoed after "sftp> ". */
  out: string;
}

/**
 * Runs `commands` (one per line, e.g. "put a.bin", "ls -l") as `user` on
 * 127.0.0.1:`port`, in `cwd` (where get/put find local files). A batch
 * stops at its first failing command, as sftp -b does.
 */
export async function sftpBatch(opts: { port: number; user: string; password: string; commands: string[]; cwd: string; timeoutMs?: number }): Promise<SftpRun> {
  const sftp = await ensureBinary("sftp", "openssh-client");
  const dir = await mkdtemp(join(tmpdir(), "berth-sftp-client-"));
  try {
    const askpass = join(dir, "askpass.sh");
    // The password travels in the environment, never on a command line.
    await writeFile(askpass, '#!/bin/sh\nprintf "%s\\n" "$BERTH_SFTP_PASSWORD"\n', { mode: 0o755 });
    const batch = join(dir, `batch-${randomBytes(4).toString("hex")}`);
    await writeFile(batch, `${opts.commands.join("\n")}\n`);
    const args = [
      // Before -b: ssh keeps an option's first value, and -b asks for BatchMode (no password prompts).
      "-o", "BatchMode=no",
      "-b", batch,
      "-P", String(opts.port),
      "-o", "StrictHostKeyChecking=no",
      "-o", "UserKnownHostsFile=/dev/null",
      "-o", "PreferredAuthentications=password",
      "-o", "NumberOfPasswordPrompts=1",
      "-o", "LogLevel=ERROR",
      `${opts.user}@127.0.0.1`,
    ];
    const env = { ...process.env, SSH_ASKPASS: askpass, SSH_ASKPASS_REQUIRE: "force", DISPLAY: ":0", BERTH_SFTP_PASSWORD: opts.password };
    return await new Promise<SftpRun>((resolve) =>
      execFile(sftp, args, { cwd: opts.cwd, timeout: opts.timeoutMs ?? 60_000, env }, (err, stdout, stderr) =>
        resolve({ code: err ? (typeof (err as { code?: unknown }).code === "number" ? ((err as { code: number }).code) : 1) : 0, out: `${stdout}${stderr}` }),
      ),
    );
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
