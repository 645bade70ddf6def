#!/usr/bin/env bash
# Make sure a RabbitMQ answers on 127.0.0.1:5672 for `make run` and `make test`:
# start the local one, installing it with apt-get when it is missing and we may;
# otherwise say exactly what to run. Nothing to do when RABBITMQ_URL is set or
# (for tests) a Docker daemon answers.
set -euo pipefail

if [ -n "${RABBITMQ_URL:-}" ]; then exit 0; fi
if [ "${1:-}" = "--tests" ] && docker info >/dev/null 2>&1; then exit 0; fi

port_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
# A broker can keep its port open and stop talking (seen here after many test runs declared and deleted
# quorum queues at once): greet it in AMQP 0-9-1 and wait for the first byte of its Connection.Start.
answers() {
  (exec 3<>/dev/tcp/127.0.0.1/5672 && printf 'AMQP\x00\x00\x09\x01' >&3 && timeout 10 head -c 1 <&3 | grep -q .) 2>/dev/null
}
fresh=false
if [ "${1:-}" = "--fresh" ]; then fresh=true; fi
if ! $fresh && port_open && answers; then exit 0; fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

if ! command -v rabbitmq-server >/dev/null && [ ! -x /usr/sbin/rabbitmq-server ]; then
  echo "RabbitMQ is not installed; installing it with apt-get" >&2
  if ! (as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server); then
    echo "Could not install RabbitMQ. Run:  sudo apt-get install -y rabbitmq-server && sudo rabbitmq-server -detached" >&2
    echo "or set RABBITMQ_URL to a RabbitMQ you have." >&2
    exit 1
  fi
fi

# CI only (--fresh): the local broker restarted with no queues left by earlier runs. RabbitMQ 3.10's quorum
# queues were seen to stop answering after a few hundred test queues came and went (docs/operations.md).
if $fresh && pgrep -u rabbitmq -f beam.smp >/dev/null; then
  echo "restarting the local RabbitMQ with no queues left from earlier runs (--fresh)" >&2
  as_root pkill -9 -u rabbitmq -f beam.smp || true
  as_root pkill -9 -u rabbitmq epmd || true
  for _ in $(seq 1 20); do port_open || break; sleep 0.5; done
  as_root rm -rf /var/lib/rabbitmq/mnesia
fi
if port_open; then
  answers && exit 0
  if ! pgrep -u rabbitmq -f beam.smp >/dev/null; then
    echo "something on 127.0.0.1:5672 accepts connections but does not speak AMQP; set RABBITMQ_URL" >&2
    exit 1
  fi
  echo "the local RabbitMQ accepts connections but does not answer; restarting it" >&2
  as_root pkill -9 -u rabbitmq -f beam.smp || true
  as_root pkill -9 -u rabbitmq epmd || true
  for _ in $(seq 1 20); do port_open || break; sleep 0.5; done
fi
echo "starting RabbitMQ (rabbitmq-server -detached)" >&2
if ! as_root env PATH="$PATH:/usr/sbin" rabbitmq-server -detached; then
  echo "Could not start RabbitMQ. Run:  sudo rabbitmq-server -detached" >&2
  exit 1
fi
for _ in $(seq 1 120); do
  if port_open; then
    as_root env PATH="$PATH:/usr/sbin" timeout 60 rabbitmqctl await_startup >/dev/null 2>&1 || true
    answers && exit 0
  fi
  sleep 0.5
done
echo "RabbitMQ did not start listening on 5672 within 60 s; see /var/log/rabbitmq/" >&2
exit 1
