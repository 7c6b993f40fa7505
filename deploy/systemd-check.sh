#!/usr/bin/env bash
# The installed service under a real systemd: `make install-service`, then `systemctl start`,
# ready, reload (a good config and a bad one), the watchdog ping, the security score and stop.
#
# Run as root on a disposable machine (CI, a VM): it installs into /opt/mlops-watchdog,
# /etc/mlops-watchdog and /etc/systemd/system. Where systemd is not PID 1 (containers, CI
# sandboxes), it boots the host's systemd as PID 1 of a new PID and mount namespace, and drives
# it with nsenter. `make service-check` runs it.
set -euo pipefail

PYTHON=${PYTHON:-/usr/bin/python3}
UNIT=mlops-watchdog
ETC=/etc/mlops-watchdog
DROPIN=/etc/systemd/system/$UNIT.service.d
LISTEN=127.0.0.1:9464
namespace=""

say() { printf 'service-check: %s\n' "$*"; }
# The journal first, then the failure: CI shows the end of what was printed.
fail() { $S journalctl -u $UNIT -n 30 --no-pager -o cat >&2 || true; say "FAILED: $*" >&2; exit 1; }

# What the daemon does after a signal is awaited, not read once: `systemctl reload` returns once
# SIGHUP is sent (ExecReload=kill), maybe before the daemon has read the config, logged what it
# did and told systemd READY=1.
within() {  # within SECONDS COMMAND...: run COMMAND every 0.1 s until it succeeds
    local tries=$(($1 * 10)); shift
    for _ in $(seq "$tries"); do "$@" && return; sleep 0.1; done
    return 1
}
said() { $S journalctl -u $UNIT --since "@$since" -o cat --no-pager | grep -o "\"message\": \"$1[^\"]*"; }
state() { $S systemctl show -p "$1" --value $UNIT; }
active() { [ "$(state ActiveState)" = active ]; }
probed() {
    "$PYTHON" -c "import sys, urllib.request; sys.exit('endpoint=\"service-check\"' not in urllib.request.urlopen('http://$LISTEN/metrics', timeout=5).read().decode())"
}
pinged() { [ "$(state WatchdogTimestampMonotonic)" != "$1" ]; }

[ "$(id -u)" = 0 ] || { say "needs root"; exit 2; }

cleanup() {
    rm -f "$ETC/probes/zz-service-check.yaml" "$ETC/probes/zz-broken.yaml"
    rm -rf "$DROPIN" "${cred:-/nonexistent}"
    # The namespace's PID 1 (systemd, or the shell before it) killed, the kernel ends the
    # namespace; wait for that, so that a next run finds none of it.
    if [ -n "$namespace" ]; then
        pkill -9 -P "$namespace" 2>/dev/null || true
        wait "$namespace" 2>/dev/null || true
    fi
}
trap cleanup EXIT

if [ -d /run/systemd/system ]; then
    S=""
else
    # systemd as PID 1 of its own namespaces, booted only to basic.target (the host's enabled
    # services stay down). Its /run, /tmp, /var/tmp and cgroup2 tree are its own: at boot,
    # systemd-tmpfiles empties /tmp, and the host's /tmp must not be the one it empties. udev is
    # masked there, so that nothing re-triggers the host's devices.
    unshare --fork --pid --mount --mount-proc bash -c '
        mount --make-rprivate /
        for d in /run /tmp /var/tmp; do mount -t tmpfs tmpfs "$d"; done
        for u in systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service \
                 systemd-udevd-control.socket systemd-udevd-kernel.socket; do
            [ -e "/lib/systemd/system/$u" ] && mount --bind /dev/null "/lib/systemd/system/$u"
        done
        umount -l /sys/fs/cgroup 2>/dev/null || true
        mount -t cgroup2 cgroup2 /sys/fs/cgroup
        export container=other
        exec /lib/systemd/systemd --system --unit=basic.target --log-target=null
    ' &
    namespace=$!
    # Our own systemd: the child of this unshare, once it has exec'd (another run's may linger).
    for _ in $(seq 100); do
        booted=$(pgrep -P "$namespace" -f '^/lib/systemd/systemd --system' || true)
        [ -n "$booted" ] && break
        sleep 0.1
    done
    [ -n "$booted" ] || { say "FAILED: systemd did not boot in a namespace" >&2; exit 1; }
    S="nsenter -t $booted -m -p --"
    for _ in $(seq 300); do
        state=$($S systemctl is-system-running 2>/dev/null || true)
        case "$state" in running|degraded) break;; esac
        sleep 0.2
    done
    case "$state" in
        running|degraded) ;;
        *) say "FAILED: systemd in the namespace is '$state' after 60 s, not running" >&2; exit 1;;
    esac
    say "systemd $($S systemd --version | head -1 | cut -d' ' -f2) booted in a namespace ($state)"
fi

make install-service PYTHON="$PYTHON" >/dev/null
$S systemctl daemon-reload

# Credentials: systemd hands LoadCredential= files to the service user. A namespaced systemd
# may not manage to (its credential directory stays root's); say so, and go on without.
cred=$(mktemp -d /var/lib/service-check.XXXXXX) && echo probe > "$cred/x" && chmod 600 "$cred/x"
if ! $S systemd-run --quiet --wait --pipe -p DynamicUser=yes -p LoadCredential=x:$cred/x \
        /bin/cat /run/credentials/service-check.service/x >/dev/null 2>&1 \
   && ! $S systemd-run --quiet --wait --pipe -p DynamicUser=yes -p LoadCredential=x:$cred/x \
        /bin/sh -c 'cat "$CREDENTIALS_DIRECTORY/x"' >/dev/null 2>&1; then
    say "this systemd cannot hand credentials to a service user here: LoadCredential= off for the check"
    mkdir -p "$DROPIN" && printf '[Service]\nLoadCredential=\n' > "$DROPIN/no-credentials.conf"
    $S systemctl daemon-reload
fi

$S systemctl reset-failed $UNIT 2>/dev/null || true
$S systemctl start $UNIT || fail "systemctl start"
active || fail "not active after start"
"$PYTHON" -c "import json, urllib.request; assert json.load(urllib.request.urlopen('http://$LISTEN/readyz', timeout=5))['ready']" \
    || fail "/readyz not ready"
pid=$(state MainPID)
say "started (Type=notify: start returned after READY=1), /readyz ready, main PID $pid"

cat > "$ETC/probes/zz-service-check.yaml" <<'EOF'
endpoints:
  - {name: service-check, api: openai-chat, base_url: "http://127.0.0.1:9"}
probes:
  - {endpoint: service-check, golden_set: default, every: 30s}
EOF
since=$(date +%s)
$S systemctl reload $UNIT || fail "reload"
status=$(within 10 said reloaded) || fail "no 'reloaded' in the journal within 10 s of a good reload"
within 10 probed || fail "the added endpoint is not in /metrics within 10 s of the reload"
say "reload applied: ${status#*: \"}"

echo "endpoints: [{name: broken, api: nope}]" > "$ETC/probes/zz-broken.yaml"
since=$(date +%s)
$S systemctl reload $UNIT || fail "reload with a bad config"
status=$(within 10 said "reload refused: [0-9]") || fail "no 'reload refused' in the journal within 10 s of a bad reload"
[ "$(state MainPID)" = "$pid" ] || fail "restarted on a bad reload"
within 5 active || fail "$(state ActiveState), not active, 5 s after a bad reload"
say "bad reload refused, still running: ${status#*: \"}"
rm -f "$ETC/probes/zz-broken.yaml"

within 60 pinged "$(state WatchdogTimestampMonotonic)" || fail "no WATCHDOG=1 within 60 s"
say "WATCHDOG=1 received from the scheduler"

security=$($S systemd-analyze security $UNIT --no-pager 2>&1 || true)
score=$(sed -n 's/.*exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$security")
say "systemd-analyze security (online): $score"
awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }' \
    || fail "security score '$score' is not 2.0 or less; systemd-analyze said: $(tail -n 3 <<<"$security")"

$S systemctl stop $UNIT || fail "stop"
[ "$(state Result)" = success ] || fail "stop did not end in success"
say "stopped cleanly; all checks passed"
