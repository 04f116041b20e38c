#!/usr/bin/env bash
# A local PostgreSQL 15 for the distributed-tuning tests: installed with apt-get if missing,
# listening on 127.0.0.1 only, with a role and database for the tests. Prints their URL.
set -euo pipefail
ROLE=autotransfer_test
if ! command -v pg_ctlcluster >/dev/null || [ ! -d /usr/lib/postgresql/15 ]; then
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
if ! pg_lsclusters -h | grep -q '^15 *main'; then
  pg_createcluster 15 main >&2
fi
mkdir -p /etc/postgresql/15/main/conf.d
echo "listen_addresses = '127.0.0.1'" > /etc/postgresql/15/main/conf.d/autotransfer.conf
if ! pg_lsclusters -h | grep -q '^15 *main .* online'; then
  pg_ctlcluster 15 main start >&2
fi
for _ in $(seq 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$ROLE'\"" | grep -q 1 \
  || su postgres -c "psql -qc \"CREATE ROLE $ROLE LOGIN PASSWORD '$ROLE'\"" >&2
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_database WHERE datname='$ROLE'\"" | grep -q 1 \
  || su postgres -c "createdb -O $ROLE $ROLE" >&2
echo "postgresql://$ROLE:$ROLE@127.0.0.1:5432/$ROLE"
