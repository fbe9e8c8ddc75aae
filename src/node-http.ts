// node:http for the router's modules. An ESM import of node:http reads every
// export, and three of them (WebSocket, CloseEvent, MessageEvent) are getters
// that load node's bundled undici: ~13 MiB of idle RSS for a client the router
// never uses. process.getBuiltinModule returns the module object itself, so
// those getters are never called. (Type-only imports of node:http are fine.)
export const { Agent, STATUS_CODES, createServer, request } = process.getBuiltinModule('node:http');
