/** Types of scripts/bundle.mjs (a plain script, so `npm run build` needs no TypeScript). */
export interface Program {
  entry: string;
  out: string;
  workers: string[];
}
export const ROOT: string;
export const PROGRAMS: { manager: Program; agent: Program };
export function bundle(o: {
  program: Program;
  outdir: string;
  external: (path: string, importer: string) => boolean | string | undefined;
  banner?: string;
  write?: boolean;
}): Promise<{ outputFiles?: { path: string; contents: Uint8Array }[] }>;
