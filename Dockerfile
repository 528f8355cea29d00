# psync-relay: Redis replication relay.
FROM node:20-bookworm-slim

WORKDIR /app

COPY package.json package-lock.json ./
RUN npm ci

COPY . .
RUN npm run build && npm prune --omit=dev \
 && mkdir -p /app/data && chown node:node /app/data

# 6380: RESP port replicas connect to; 8080: web dashboard / metrics.
# The dashboard listens on web.bind from the config (loopback by default): set web.bind (e.g. 0.0.0.0)
# in config/relay.yaml for it to be reachable from outside the container. --bind below covers only the RESP port.
EXPOSE 6380 8080

# On-disk backlog segments and received RDBs.
VOLUME /app/data

USER node
# Arguments given to `docker run` are appended: `docker run psync-relay --upstream master:6379`.
ENTRYPOINT ["node", "dist/main.js", "--config", "config/relay.yaml", "--bind", "0.0.0.0"]
CMD []
