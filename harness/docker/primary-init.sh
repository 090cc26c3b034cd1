#!/usr/bin/env bash
# Init script of the primary (official postgres image: /docker-entrypoint-initdb.d/). Runs
# once, on an empty data directory, against the image's temporary server; the settings
# take effect when the entrypoint starts the real one.
#
# The roles of the topology, their passwords from the environment (never argv):
#   REPLICATION_PASSWORD  role replicator (REPLICATION LOGIN): the replica's pg_basebackup
#                         and WAL stream
#   APP_PASSWORD          role mcp_app (LOGIN), owner of database mcp: what the MCP server
#                         connects as
# and one pg_hba line: replication connections of replicator, password checked.
set -euo pipefail

: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD: password of the replication role}"
: "${APP_PASSWORD:?APP_PASSWORD: password of the application role}"
REPLICATION_USER="${REPLICATION_USER:-replicator}"
APP_USER="${APP_USER:-mcp_app}"
APP_DATABASE="${APP_DATABASE:-mcp}"

psql -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v repl_user="$REPLICATION_USER" -v repl_pw="$REPLICATION_PASSWORD" \
    -v app_user="$APP_USER" -v app_pw="$APP_PASSWORD" -v app_db="$APP_DATABASE" <<'SQL'
CREATE ROLE :"repl_user" WITH REPLICATION LOGIN PASSWORD :'repl_pw';
CREATE ROLE :"app_user" WITH LOGIN PASSWORD :'app_pw';
CREATE DATABASE :"app_db" OWNER :"app_user";
-- The reference server's corrupting tool bypasses a trigger with it.
GRANT SET ON PARAMETER session_replication_role TO :"app_user";
SQL

echo "host replication ${REPLICATION_USER} all scram-sha-256" >> "$PGDATA/pg_hba.conf"
