/** The manager's version (kept equal to manager/package.json's by a unit test). */
export const MANAGER_VERSION = "0.1.0";
