import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

/**
 * Builds the dashboard into web/dist, which the manager serves on its one
 * port (unknown paths fall back to index.html). `npm run dev -w web` serves it
 * with hot reload and proxies the API to a manager on BERTH_URL.
 */
export default defineConfig({
  root: import.meta.dirname,
  plugins: [react()],
  // web/public holds the page the manager serves when web/dist is missing; not part of the build.
  publicDir: false,
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: true,
    chunkSizeWarningLimit: 800,
  },
  server: {
    proxy: {
      "^/(berth\\.v1|grpc\\.)": { target: process.env.BERTH_URL ?? "http://127.0.0.1:7000", changeOrigin: true },
    },
  },
});
