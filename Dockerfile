# syntax=docker/dockerfile:1
# switchyard: Node 24 runs the .ts files of src/ directly (type stripping), so there is no
# build step; the deps stage installs the production dependencies only.
#
#   docker build -t REGISTRY/switchyard:0.1.0 .
#   docker run --read-only -v "$PWD/myconfig:/etc/switchyard:ro" -p 8080:8080 -p 9901:9901 REGISTRY/switchyard:0.1.0
#
# The config directory (a mounted ConfigMap in Kubernetes) must listen on
# 0.0.0.0 (or ::) to be reachable from outside the container.
# test/dockerfile.test.ts runs this file's stages without a Docker engine.

FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

FROM node:24-slim
ENV NODE_ENV=production
# Node's compile cache (relative to WORKDIR): every module's compiled code,
# .ts files after type stripping, so that a start neither strips types nor
# loads the type stripper (~30 MB less idle RSS than without it).
ENV NODE_COMPILE_CACHE=.node-compile-cache
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY src ./src
# src/config/schema.ts imports the config's JSON Schema.
COPY config/switchyard.schema.json ./config/
# Fill the compile cache here, where the paths are those of run time (its
# keys), with the Node and the flags of CMD (the cache is per Node version and
# V8 flags): every src/ module and what it imports (config/worker.ts throws
# outside a worker thread once compiled; that is all it needs), then main.ts.
# At run time it is only read, so the root filesystem may stay read-only.
RUN node --input-type=module -e "import { readdirSync } from 'node:fs'; for (const f of readdirSync('src', { recursive: true })) if (f.endsWith('.ts') && f !== 'cli/main.ts') await import('./src/' + f).catch(() => {});" \
 && node src/cli/main.ts --version > /dev/null \
 && chmod -R a+rX .node-compile-cache
# The image's `node` user, numeric so that runAsNonRoot can be verified.
USER 1000:1000
EXPOSE 8080 9901
# Exec form: node is PID 1 and gets SIGTERM itself (npm or a shell would not
# pass it on), drains and exits 0. Nothing is written to the filesystem, so
# the root filesystem may be read-only. serve adds its V8 flags itself
# (src/cli/node-flags.ts; override with NODE_OPTIONS, see docs/operations.md).
CMD ["node", "src/cli/main.ts", "serve", "--config", "/etc/switchyard"]
