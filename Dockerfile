# psync-relay: Redis replication relay.
#   docker build -t psync-relay .
#   docker run -d --name relay -p 6380:6380 -v relay-data:/app/data \
#     -v "$PWD/relay-password:/run/secrets/relay-password:ro" -e PSYNC_RELAY_PASSWORD_FILE=/run/secrets/relay-password \
#     psync-relay --upstream master:6379
#   docker stop -t 30 relay
# Node 20 only: the uWebSockets.js addon ships binaries for Node 20's ABI (node:22 would fall back to a slow shim).

# Build stage: dev dependencies and tsc.
FROM node:20-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# Runtime stage: production dependencies only (no TypeScript, tap or pino-pretty) and the compiled relay.
FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist ./dist
COPY config/relay.yaml ./config/relay.yaml
COPY deploy/docker/entrypoint.sh deploy/docker/healthcheck.js ./deploy/docker/
# The relay writes its data dir (snapshot, log segments, state) and, on CONFIG REWRITE (Sentinel's failover sends
# it), its config file: both belong to the unprivileged user; the code does not.
RUN mkdir -p /app/data && chown -R node:node /app/data /app/config

# 6380: the RESP port replicas connect to (0.0.0.0 only with a password, see the entrypoint).
# 8080: dashboard, /metrics, /healthz, /readyz; web.bind stays 127.0.0.1 from the config, so only the health check
# below reaches it. To publish it, mount a config with web.bind: 0.0.0.0 and set PSYNC_RELAY_WEB_TOKEN_FILE.
EXPOSE 6380 8080
VOLUME /app/data

USER node

# The relay shuts down gracefully on SIGTERM: it waits up to shutdown-timeout (10 s) for replicas to acknowledge
# the stream, then persists its state. Docker's default stop timeout is also 10 s, and a Dockerfile cannot change
# it: stop with `docker stop -t 30` (compose: stop_grace_period: 30s), longer than shutdown-timeout.
STOPSIGNAL SIGTERM

# /readyz: 200 once the upstream link streams and a snapshot is held. start-period covers the first full sync of
# a small dataset; a big one shows "starting" then "unhealthy" until its sync ends, which is the truth.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["node", "/app/deploy/docker/healthcheck.js"]

# Arguments given to `docker run` are appended: `docker run psync-relay --upstream master:6379`.
ENTRYPOINT ["/bin/sh", "/app/deploy/docker/entrypoint.sh"]
CMD []
