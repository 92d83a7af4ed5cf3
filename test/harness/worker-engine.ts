/**
 * Setup file of the integration projects: the managers, agents and CLIs a
 * test spawns inherit process.env.DOCKER_HOST, so it names this worker's
 * engine before any test runs.
 */
import { testDockerHost } from "./engine.js";

process.env.DOCKER_HOST = testDockerHost();
