#!/usr/bin/env bash
# Entrypoint of the replica: a PostgreSQL hot standby cloned from a running primary.
#
# Waits until the primary answers (pg_isready), clones it with
# `pg_basebackup -R -X stream -c fast` into an empty PGDATA (-R writes standby.signal
# and primary_conninfo: the WAL stream then comes from the same host and port), and
# starts postgres on it; arguments are passed to postgres (`-c port=5433 ...`). A PGDATA
# that already holds a cluster is started as it is (a restarted container).
#
# Environment:
#   PRIMARY_HOST          the primary, or the pg-replication proxy in front of it (required)
#   PRIMARY_PORT          default 5432
#   REPLICATION_USER      default replicator
#   REPLICATION_PASSWORD  its password (required; lands in primary_conninfo, mode 0600)
#   PGDATA                the data directory (the official image sets it)
#   PRIMARY_WAIT_S        how long to wait for the primary, default 60
#   PG_BIN                directory of the PostgreSQL binaries (default: found on PATH)
#   RUN_AS                the user postgres runs as when started as root (default postgres)
set -euo pipefail

: "${PRIMARY_HOST:?PRIMARY_HOST: the primary or the pg-replication proxy in front of it}"
: "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD: password of the replication role}"
: "${PGDATA:?PGDATA: the data directory of the replica}"
PRIMARY_PORT="${PRIMARY_PORT:-5432}"
REPLICATION_USER="${REPLICATION_USER:-replicator}"
PRIMARY_WAIT_S="${PRIMARY_WAIT_S:-60}"
RUN_AS="${RUN_AS:-postgres}"

pg() {
    local tool="$1"
    shift
    "${PG_BIN:+$PG_BIN/}$tool" "$@"
}

say() {
    echo "replica-entrypoint: $*" >&2
}

if [[ "$(id -u)" == 0 ]]; then
    # postgres refuses root: own the data directory, then run this script again as RUN_AS.
    mkdir -p "$PGDATA"
    chown "$RUN_AS" "$PGDATA"
    chmod 700 "$PGDATA"
    script="$(readlink -f "$0")"
    if command -v gosu > /dev/null; then
        exec gosu "$RUN_AS" "$script" "$@"
    fi
    exec runuser -u "$RUN_AS" -- "$script" "$@"
fi

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
    say "waiting up to ${PRIMARY_WAIT_S}s for the primary at ${PRIMARY_HOST}:${PRIMARY_PORT}"
    deadline=$((SECONDS + PRIMARY_WAIT_S))
    until pg pg_isready -q -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" -t 2; do
        if ((SECONDS >= deadline)); then
            say "the primary at ${PRIMARY_HOST}:${PRIMARY_PORT} did not answer within ${PRIMARY_WAIT_S}s"
            exit 1
        fi
        sleep 0.5
    done
    if [[ -n "$(ls -A "$PGDATA")" ]]; then
        say "$PGDATA is not empty but holds no cluster (an interrupted clone?): refusing to touch it"
        exit 1
    fi
    say "cloning the primary (pg_basebackup -R)"
    PGPASSWORD="$REPLICATION_PASSWORD" pg pg_basebackup \
        -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U "$REPLICATION_USER" -w \
        -D "$PGDATA" -F p -X stream -c fast -R
    chmod 700 "$PGDATA"
fi

say "starting postgres as a hot standby"
exec "${PG_BIN:+$PG_BIN/}postgres" -D "$PGDATA" -c hot_standby=on "$@"
