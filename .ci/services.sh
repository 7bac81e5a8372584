#!/usr/bin/env bash
# Makes sure PostgreSQL, Redis and Mosquitto answer on their standard local ports, starting them if they are
# down, and that the project's database exists. Used by `make test`, `make demo` and CI. (The MQTT tests start
# private brokers of their own; they need the mosquitto binary, installed here when it is missing.)
set -euo pipefail

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }
redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }
mosquitto_up() { (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; }

if ! pg_up; then
  echo "PostgreSQL is down; starting it" >&2
  if command -v pg_ctlcluster >/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  fi
  for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432. Start it with:
  pg_ctlcluster --skip-systemctl-redirect \$(ls /etc/postgresql) main start   (or: docker compose up -d db)" >&2; exit 1; }
fi

if ! redis_up; then
  echo "Redis is down; starting it" >&2
  if command -v redis-server >/dev/null; then
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
  fi
  for _ in $(seq 1 30); do redis_up && break; sleep 1; done
  redis_up || { echo "Redis is not reachable on 127.0.0.1:6379. Start it with:
  redis-server --daemonize yes --port 6379   (or: docker compose up -d redis)" >&2; exit 1; }
fi

if ! command -v mosquitto >/dev/null && ! [ -x /usr/sbin/mosquitto ] && command -v apt-get >/dev/null; then
  echo "Mosquitto is not installed; installing it" >&2
  DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq mosquitto mosquitto-clients >/dev/null || true
fi
if ! mosquitto_up; then
  echo "Mosquitto is down; starting it" >&2
  mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
  if [ -x "${mosquitto_bin}" ]; then
    if [ -f /etc/mosquitto/mosquitto.conf ]; then
      mkdir -p /run/mosquitto /var/lib/mosquitto /var/log/mosquitto
      chown mosquitto: /run/mosquitto /var/lib/mosquitto /var/log/mosquitto 2>/dev/null || true
      "${mosquitto_bin}" -d -c /etc/mosquitto/mosquitto.conf || true
    else
      "${mosquitto_bin}" -d -p 1883 || true
    fi
  fi
  for _ in $(seq 1 30); do mosquitto_up && break; sleep 1; done
  mosquitto_up || { echo "Mosquitto is not reachable on 127.0.0.1:1883. Start it with:
  mosquitto -d -c /etc/mosquitto/mosquitto.conf   (or: apt-get install mosquitto)" >&2; exit 1; }
fi

db="${DATABASE_NAME:-gridtoken}"
if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='${db}'" | grep -q 1; then
  createdb -h 127.0.0.1 -U postgres "${db}"
fi
echo "PostgreSQL, Redis and Mosquitto are up"
