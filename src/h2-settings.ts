// HTTP/2 windows offered by both sides (entrypoint and upstream sessions).
// The 64 KiB default stream window makes large gRPC messages crawl (one
// round trip per 64 KiB): 1 MiB per stream, 16 MiB per connection.
export const H2_STREAM_WINDOW = 1 << 20;
export const H2_SESSION_WINDOW = 16 << 20;
