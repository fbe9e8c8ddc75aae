// HTTP/2 settings shared by the client side (entrypoint) and the upstream side.
// Node's 64 KiB default stream window makes large gRPC messages crawl (one
// round trip per 64 KiB): 1 MiB per stream, 16 MiB per session.
export const H2_STREAM_WINDOW = 1 << 20;
export const H2_SESSION_WINDOW = 16 << 20;
// Node's 10 MB default answers ENHANCE_YOUR_CALM under load (node#27416).
export const H2_MAX_SESSION_MEMORY_MB = 64;
