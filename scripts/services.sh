#!/usr/bin/env bash
# Makes sure the servers the integration tests talk to are running on
# loopback; starts (and if needed installs) each one that is not. Idempotent.
set -euo pipefail
# Debian puts dockerd, rabbitmqctl, debootstrap and ip in /usr/sbin, which not every PATH has.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"; export PATH ;; esac

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local name=$1 port=$2 tries=${3:-60}
    for _ in $(seq "$tries"); do
        listening "$port" && return 0
        sleep 1
    done
    echo "services: $name did not start listening on 127.0.0.1:$port" >&2
    return 1
}

apt_install() {
    if [ -z "${_apt_updated:-}" ]; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        _apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! listening 6379; then
    command -v redis-server >/dev/null || apt_install redis-server
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_port redis 6379
fi

if ! listening 5672; then
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    rabbitmq-server -detached
    wait_port rabbitmq 5672 120
fi

# PostgreSQL for the postgres engine's tests: database `test`, trusted on loopback
# (the tests connect without a password; this is a test machine's server).
if ! listening 5432; then
    if [ ! -x /usr/bin/pg_ctlcluster ] || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
        apt_install postgresql
    fi
    hba=/etc/postgresql/$(ls /etc/postgresql)/main/pg_hba.conf
    grep -q '^host all all 127.0.0.1/32 trust' "$hba" || sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    /usr/bin/pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
    wait_port postgresql 5432
    runuser -u postgres -- /usr/bin/psql -qtAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
        || runuser -u postgres -- /usr/bin/createdb test
fi

# NATS with JetStream, its streams on disk (the nats engine's tests start their own too).
if ! listening 4222; then
    [ -x /usr/sbin/nats-server ] || apt_install nats-server
    mkdir -p /var/lib/nats-server
    # The pid file, not the executable, tells whether it runs: a test's own nats-server is not this one.
    start-stop-daemon --start --oknodo --background --pidfile /run/minionize-nats-server.pid --make-pidfile \
        --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
    wait_port nats 4222
fi

# The Pub/Sub emulator (a JVM: seconds to start), shared by every test of the
# google engine, whichever pytest worker runs it; where gcloud is missing, the
# google tests say so themselves (fatal under CI=true).
if ! listening 8085 && command -v gcloud >/dev/null; then
    mkdir -p /var/lib/minionize-pubsub
    setsid gcloud beta emulators pubsub start --host-port=127.0.0.1:8085 \
        --data-dir=/var/lib/minionize-pubsub </dev/null >/var/log/minionize-pubsub.log 2>&1 &
    wait_port pubsub-emulator 8085 120
fi

# Not a server, but the lint tests need it too.
command -v shellcheck >/dev/null || apt_install shellcheck
# Not started here either: the chart's monitoring tests run their own
# prometheus on a free port, and run promtool on the rendered rules.
command -v promtool >/dev/null || apt_install --no-install-recommends prometheus

up="redis, rabbitmq, postgresql, nats"
if listening 8085; then up="$up, the Pub/Sub emulator"; fi
echo "services: $up are up"
