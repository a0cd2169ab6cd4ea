#!/bin/sh
# First start: a cluster owned by POSTGRES_USER with POSTGRES_PASSWORD and database POSTGRES_DB
# (what the official image's entrypoint does); then the server in the foreground as postgres.
set -eu
bin=$(echo /usr/lib/postgresql/*/bin)
export PGDATA=/var/lib/postgresql/data
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
install -d -o postgres -g postgres -m 2775 /var/run/postgresql
install -d -o postgres -g postgres -m 700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
    chown postgres "$pwfile"
    as_postgres "$bin/initdb" --username="$POSTGRES_USER" --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    as_postgres "$bin/pg_ctl" --wait --options="-c listen_addresses=''" start
    as_postgres "$bin/createdb" --username="$POSTGRES_USER" "$POSTGRES_DB"
    as_postgres "$bin/pg_ctl" --wait stop
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups "$bin/postgres" -c listen_addresses='*'
