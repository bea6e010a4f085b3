#!/usr/bin/env bash
# postgres_local.sh: a local PostgreSQL for Sacred's SQL observer (`python run.py -s postgresql://...`), for
# recording runs in a real database and for `make test-postgres`.
#
#   scripts/postgres_local.sh up       install Debian's postgresql if missing, start its cluster, create the user
#                                      and the database; prints the URL to pass to run.py -s
#   scripts/postgres_local.sh url      print the URL (postgresql://<user>:<password>@127.0.0.1:<port>/<database>)
#   scripts/postgres_local.sh status   the clusters (pg_lsclusters) and whether the database answers
#   scripts/postgres_local.sh down     drop the database and the user, stop the cluster if `up` started it
#
# Requirements: root (it installs packages and runs commands as the `postgres` user), a Debian/Ubuntu machine
# whose apt can reach its mirror when postgresql is not installed yet. No systemd: the cluster is started with
# pg_ctlcluster (Debian's wrapper of pg_ctl). The first cluster pg_lsclusters lists is used (one is created,
# `<version> main`, when there is none). Connections go over TCP to 127.0.0.1 with a password, which Debian's
# default pg_hba.conf accepts (scram-sha-256). Both `up` and `down` are idempotent.
#
# Names (environment): MAMOL_PG_DB (default mamol), MAMOL_PG_USER (mamol), MAMOL_PG_PASSWORD (mamol).
set -euo pipefail

DB=${MAMOL_PG_DB:-mamol}
USER_NAME=${MAMOL_PG_USER:-mamol}
PASSWORD=${MAMOL_PG_PASSWORD:-mamol}
STATE=${MAMOL_PG_STATE:-/var/lib/mamol-postgres}  # remembers whether `up` started the cluster
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

die() { echo "postgres_local.sh: $*" >&2; exit 1; }
say() { echo "postgres_local.sh: $*" >&2; }

[[ $# -eq 1 ]] || die "usage: $0 up|url|status|down"
[[ $DB =~ ^[a-z_][a-z0-9_]*$ && $USER_NAME =~ ^[a-z_][a-z0-9_]*$ ]] || die "MAMOL_PG_DB and MAMOL_PG_USER: lower-case letters, digits, _"
[[ $PASSWORD != *"'"* ]] || die "MAMOL_PG_PASSWORD may not hold a quote"

# "<version> <cluster> <port> <status>" of the first cluster, or nothing
cluster() { pg_lsclusters --no-header 2>/dev/null | awk 'NR == 1 {print $1, $2, $3, $4}'; }

as_postgres() { runuser -u postgres -- "$@"; }
psql_admin() { as_postgres psql --no-psqlrc -v ON_ERROR_STOP=1 -qtA -p "$PORT" "$@"; }

url() { echo "postgresql://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB"; }

need_root() { [[ $(id -u) -eq 0 ]] || die "$1 needs root (packages, the postgres user)"; }

install() {
    command -v pg_lsclusters >/dev/null && command -v pg_ctlcluster >/dev/null && return
    say "installing postgresql (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
}

read_cluster() {
    read -r VERSION NAME PORT STATUS <<<"$(cluster)" || true
    [[ -n ${VERSION:-} ]]
}

up() {
    need_root up
    install
    if ! read_cluster; then
        local version
        version=$(ls /usr/lib/postgresql | sort -V | tail -1)
        [[ -n $version ]] || die "no PostgreSQL server under /usr/lib/postgresql"
        say "creating the cluster $version main"
        pg_createcluster "$version" main >/dev/null
        read_cluster || die "pg_createcluster made no cluster"
    fi
    if [[ $STATUS != online* ]]; then
        say "starting the cluster $VERSION $NAME (port $PORT)"
        pg_ctlcluster "$VERSION" "$NAME" start
        mkdir -p "$STATE" && echo "$VERSION $NAME" >"$STATE/started"
    fi
    for _ in $(seq 1 30); do
        as_postgres pg_isready -q -p "$PORT" && break
        sleep 1
    done
    as_postgres pg_isready -q -p "$PORT" || die "the cluster $VERSION $NAME does not answer on port $PORT"
    if [[ -z $(psql_admin -c "SELECT 1 FROM pg_roles WHERE rolname = '$USER_NAME'") ]]; then
        psql_admin -c "CREATE ROLE $USER_NAME LOGIN PASSWORD '$PASSWORD'"
    else
        psql_admin -c "ALTER ROLE $USER_NAME LOGIN PASSWORD '$PASSWORD'"
    fi
    if [[ -z $(psql_admin -c "SELECT 1 FROM pg_database WHERE datname = '$DB'") ]]; then
        psql_admin -c "CREATE DATABASE $DB OWNER $USER_NAME"
    fi
    say "database $DB ready; record runs with: python run.py -s $(url) ..."
    url
}

down() {
    need_root down
    if read_cluster && [[ $STATUS == online* ]]; then
        psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
        psql_admin -c "DROP ROLE IF EXISTS $USER_NAME"
        if [[ -f $STATE/started ]]; then
            say "stopping the cluster $VERSION $NAME"
            pg_ctlcluster "$VERSION" "$NAME" stop
        fi
    fi
    rm -f "$STATE/started"
    say "down"
}

status() {
    pg_lsclusters 2>/dev/null || { say "postgresql is not installed"; return 1; }
    read_cluster || { say "no cluster"; return 1; }
    if PGPASSWORD=$PASSWORD psql --no-psqlrc -qtA -h 127.0.0.1 -p "$PORT" -U "$USER_NAME" -d "$DB" -c "SELECT 1" \
        >/dev/null 2>&1; then
        say "database $DB answers at $(url)"
    else
        say "database $DB does not answer (run: $0 up)"
        return 1
    fi
}

case $1 in
    up) up ;;
    url) read_cluster || die "no cluster (run: $0 up)"; url ;;
    status) status ;;
    down) down ;;
    *) die "usage: $0 up|url|status|down" ;;
esac
