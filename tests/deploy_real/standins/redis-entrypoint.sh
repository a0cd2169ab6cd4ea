#!/bin/sh
# The official image starts redis-server with protected mode off; so does this stand-in.
set -eu
if [ "$1" = redis-server ]; then
    shift
    set -- redis-server --protected-mode no "$@"
fi
exec "$@"
