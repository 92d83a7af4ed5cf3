/** Labels berth puts on containers; identity lives on the host, not in agent state. */
export const LABEL_MANAGER = "berth.manager";
export const LABEL_SERVER = "berth.server";
export const LABEL_GENERATION = "berth.generation";
export const LABEL_SPEC_HASH = "berth.spec-hash";
/** "install" on a server's install container (RUN_INSTALL): labelled with its server, but not the server's container. */
export const LABEL_ROLE = "berth.role";
export const ROLE_INSTALL = "install";
