#!/bin/sh
# Make a throwaway Docker engine, and the tiny images the tests use, available
# on a Debian machine that has no running daemon and no access to Docker Hub.
#
# Usage: scripts/dockerd.sh [COMMAND]
#
#   start    (default) install docker.io if dockerd is missing, start a private
#            dockerd unless it already answers, and print its socket path
#   busybox  start, then import minionize-test/busybox:latest if it is missing,
#            built from Debian's busybox-static; prints the socket path
#   python-base
#            start, then import minionize-test/python:bookworm if it is missing:
#            a Debian bookworm made by debootstrap (minbase, python3,
#            python3-venv, ca-certificates), the stand-in for python:*-slim.
#            The root filesystem is kept as a tarball in the state directory:
#            about a minute the first time, seconds afterwards; prints the
#            socket path
#   status   exit 0 and print the socket path if the engine answers
#   stop     stop the engine this script started
#
# Every command is idempotent, and start and busybox are safe to run
# concurrently (a lock serializes them). Progress goes to stderr; stdout only
# ever holds the socket path, so
#   export DOCKER_HOST="unix://$(scripts/dockerd.sh busybox)"
# works. The engine never touches the host's network: no bridge, no iptables
# rules, no forwarding; containers must run with --network=host.
#
# Environment:
#   MINIONIZE_TEST_DOCKER_DIR     state directory (/var/lib/minionize-test-docker)
#   MINIONIZE_TEST_DOCKER_SOCKET  socket path (/run/minionize-test-docker.sock)
#   MINIONIZE_TEST_DOCKER_WAIT    seconds to wait for the engine to answer (60)
#   MINIONIZE_TEST_DEBIAN_MIRROR  debootstrap's mirror (default: apt's own
#                                 source of bookworm, else deb.debian.org)
#
# To add an image, write an `import_<name>` function in the style of
# import_busybox and a line for it in main's case.
set -eu
# Debian puts dockerd, rabbitmqctl, debootstrap and ip in /usr/sbin, which not every PATH has.
case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"; export PATH ;; esac

STATE_DIR=${MINIONIZE_TEST_DOCKER_DIR:-/var/lib/minionize-test-docker}
SOCKET=${MINIONIZE_TEST_DOCKER_SOCKET:-/run/minionize-test-docker.sock}
START_WAIT=${MINIONIZE_TEST_DOCKER_WAIT:-60}
HOST="unix://$SOCKET"
LOG="$STATE_DIR/dockerd.log"
PIDFILE="$STATE_DIR/dockerd.pid"
# The storage driver that worked last time: images live under one driver only.
DRIVER_FILE="$STATE_DIR/storage-driver"
BUSYBOX_IMAGE=minionize-test/busybox:latest
PYTHON_IMAGE=minionize-test/python:bookworm
PYTHON_ROOTFS="$STATE_DIR/python-bookworm-rootfs.tar"
# The host's own certificate authorities, copied into that image.
LOCAL_CAS=/usr/local/share/ca-certificates

say() {
    printf 'dockerd.sh: %s\n' "$*" >&2
}

die() {
    say "error: $*"
    exit 1
}

engine_answers() {
    docker -H "$HOST" info >/dev/null 2>&1
}

# Holds the lock on fd 9 until the script exits (pytest-xdist workers, or a
# CI step and a test session, may call this script at the same time).
take_lock() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/lock"
    if command -v flock >/dev/null 2>&1; then
        flock -w 600 9 || die "could not lock $STATE_DIR/lock within 600s"
    fi
}

apt_install() {
    [ "$(id -u)" = 0 ] || die "installing $* needs root"
    # Forbid the package scripts to start services: the stock docker service
    # would create the docker0 bridge and iptables rules.
    created_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        created_policy=yes
    fi
    say "installing $* with apt-get"
    status=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "$@"
    } >&2 || status=$?
    if [ -n "$created_policy" ]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    [ "$status" = 0 ] || die "apt-get install $* failed (exit $status)"
}

ensure_installed() {
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        apt_install docker.io
    fi
}

launch() {
    driver=$1
    say "starting dockerd (storage driver $driver), log in $LOG"
    # setsid: the engine outlives the test session that started it and is not
    # hit by its Ctrl-C. 9>&-: it must not inherit (and hold forever) our lock.
    # No bridge, iptables or forwarding: host network only.
    setsid dockerd \
        --host "$HOST" \
        --data-root "$STATE_DIR/data" \
        --exec-root "$STATE_DIR/exec" \
        --pidfile "$PIDFILE" \
        --storage-driver "$driver" \
        --bridge=none --iptables=false --ip6tables=false \
        --ip-forward=false --ip-masq=false \
        </dev/null >>"$LOG" 2>&1 9>&- &
    launched=$!
}

# 0 when the engine answers, 1 when dockerd died, 2 after START_WAIT seconds.
wait_engine() {
    tries=$((START_WAIT * 5))
    while :; do
        engine_answers && return 0
        kill -0 "$launched" 2>/dev/null || return 1
        [ "$tries" -gt 0 ] || return 2
        sleep 0.2
        tries=$((tries - 1))
    done
}

show_log_tail() {
    if [ -s "$LOG" ]; then
        say "last lines of $LOG:"
        tail -n 25 "$LOG" >&2
    fi
}

# Waits for the dockerd of pid $launched: returns when it answers, dies with
# the log tail when it hangs, returns 1 when it exited (driver unusable).
await_launched() {
    result=0
    wait_engine || result=$?
    if [ "$result" = 2 ]; then
        kill "$launched" 2>/dev/null || true
        show_log_tail
        die "dockerd did not answer on $SOCKET within ${START_WAIT}s"
    fi
    return "$result"
}

# A dockerd of ours that is still starting is waited for; a stale pid file
# (after a reboot the pid may belong to anything) is removed, or dockerd
# would refuse to start.
adopt_running() {
    [ -s "$PIDFILE" ] || return 1
    launched=$(cat "$PIDFILE")
    if [ "$(cat "/proc/$launched/comm" 2>/dev/null)" = dockerd ]; then
        if ! tr '\0' ' ' <"/proc/$launched/cmdline" | grep -q -- "--host $HOST "; then
            die "dockerd (pid $launched) uses $STATE_DIR with another socket than $SOCKET"
        fi
        say "waiting for the dockerd already started (pid $launched)"
        await_launched && return 0
    fi
    rm -f "$PIDFILE"
    return 1
}

# overlay2 is fast but needs a kernel and a backing filesystem that allow it;
# vfs (a full copy per layer) works everywhere.
start_engine() {
    if engine_answers || adopt_running; then
        return 0
    fi
    ensure_installed
    if [ -s "$DRIVER_FILE" ]; then
        drivers=$(cat "$DRIVER_FILE")
    else
        drivers="overlay2 vfs"
    fi
    for driver in $drivers; do
        launch "$driver"
        if await_launched; then
            printf '%s\n' "$driver" >"$DRIVER_FILE"
            say "dockerd answers on $SOCKET (storage driver $driver)"
            return 0
        fi
        say "dockerd exited with storage driver $driver"
    done
    show_log_tail
    die "dockerd would not start with any storage driver ($drivers)"
}

image_present() {
    docker -H "$HOST" image inspect "$1" >/dev/null 2>&1
}

# Extracts Debian's busybox-static into $1 without installing it (it would
# replace a dynamically linked busybox package on the host).
fetch_busybox() {
    # apt-get download drops its privileges to _apt, which must be able to write.
    if id _apt >/dev/null 2>&1; then
        chown _apt "$1"
    fi
    if ! (cd "$1" && apt-get download -qq busybox-static) >&2; then
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        (cd "$1" && apt-get download -qq busybox-static) >&2 ||
            die "apt-get download busybox-static failed"
    fi
    dpkg-deb -x "$1"/busybox-static_*.deb "$1/deb"
}

# A statically linked busybox and its applets as symlinks: sh, echo, sleep,
# cat, env, true, false... about 2 MB, imported without any registry.
import_busybox() {
    if image_present "$BUSYBOX_IMAGE"; then
        return 0
    fi
    work=$(mktemp -d)
    # shellcheck disable=SC2064 # expand $work now: it is local to this call
    trap "rm -rf '$work'" EXIT
    fetch_busybox "$work"
    root="$work/rootfs"
    mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/proc" "$root/sys" "$root/dev"
    chmod 1777 "$root/tmp"
    cp "$work/deb/bin/busybox" "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    say "importing $BUSYBOX_IMAGE"
    tar -C "$root" -c . |
        docker -H "$HOST" import --change 'CMD ["sh"]' - "$BUSYBOX_IMAGE" >/dev/null
    rm -rf "$work"
    trap - EXIT
    image_present "$BUSYBOX_IMAGE" || die "import of $BUSYBOX_IMAGE failed"
}

# The mirror apt itself uses for bookworm (deb822 .sources, then one-line
# .list files), so that debootstrap goes where apt-get is known to go.
debian_mirror() {
    if [ -n "${MINIONIZE_TEST_DEBIAN_MIRROR:-}" ]; then
        printf '%s\n' "$MINIONIZE_TEST_DEBIAN_MIRROR"
        return 0
    fi
    mirror=$(
        {
            cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk -v suite=bookworm '
                BEGIN { RS = "" }
                {
                    uri = ""; found = 0; n = split($0, lines, "\n")
                    for (i = 1; i <= n; i++) {
                        words = split(lines[i], w, /[ \t]+/)
                        if (w[1] == "URIs:") uri = w[2]
                        if (w[1] == "Suites:") for (j = 2; j <= words; j++) if (w[j] == suite) found = 1
                    }
                    if (found && uri != "") print uri
                }'
            cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk -v suite=bookworm '
                $1 == "deb" {
                    i = 2
                    if ($i ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
                    if ($(i + 1) == suite) print $i
                }'
        } | head -n 1
    )
    printf '%s\n' "${mirror:-http://deb.debian.org/debian}"
}

# Builds the root filesystem tarball $PYTHON_ROOTFS with debootstrap (about
# a minute, mostly downloads). Written aside and renamed: never half a tarball.
make_python_rootfs() {
    if ! command -v debootstrap >/dev/null 2>&1; then
        apt_install debootstrap
    fi
    mirror=$(debian_mirror)
    # In the state directory rather than /tmp, which may be a tmpfs mounted
    # nodev or noexec: debootstrap makes device nodes and chroots there.
    work=$(mktemp -d "$STATE_DIR/rootfs.XXXXXX")
    # --one-file-system: never descend into a /proc or /dev that a failed
    # debootstrap left mounted in the target.
    # shellcheck disable=SC2064 # expand $work now: it is local to this call
    trap "rm -rf --one-file-system '$work' '$PYTHON_ROOTFS.tmp'" EXIT
    root="$work/rootfs"
    say "debootstrap bookworm from $mirror (about a minute)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" "$mirror" >&2 || {
        [ ! -f "$root/debootstrap/debootstrap.log" ] || tail -n 25 "$root/debootstrap/debootstrap.log" >&2
        die "debootstrap failed"
    }
    # No package caches in the image; the engine provides /etc/resolv.conf
    # and /etc/hostname, the host's have no business there.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/*.log
    : >"$root/etc/resolv.conf"
    : >"$root/etc/hostname"
    # The authorities the host trusts beyond Debian's (a TLS-inspecting
    # proxy's, say), so that pip and apt in a build FROM this image reach
    # what the host reaches.
    if [ -n "$(local_cas_digest)" ]; then
        cp "$LOCAL_CAS"/*.crt "$root$LOCAL_CAS/"
        chroot "$root" update-ca-certificates >&2
    fi
    tar --numeric-owner -C "$root" -c . >"$PYTHON_ROOTFS.tmp"
    mv "$PYTHON_ROOTFS.tmp" "$PYTHON_ROOTFS"
    local_cas_digest >"$PYTHON_ROOTFS.cas"
    rm -rf --one-file-system "$work"
    trap - EXIT
}

# Empty when the host trusts Debian's authorities only.
local_cas_digest() {
    if ls "$LOCAL_CAS"/*.crt >/dev/null 2>&1; then
        cat "$LOCAL_CAS"/*.crt | sha256sum | cut -d' ' -f1
    fi
}

# A Debian bookworm with python3 and venv, imported without any registry;
# the test images are built FROM it (BASE_IMAGE) as they would be from the
# official python:*-slim-bookworm.
import_python() {
    if image_present "$PYTHON_IMAGE"; then
        return 0
    fi
    # A tarball made before the host's authorities changed is made again.
    if [ ! -s "$PYTHON_ROOTFS" ] ||
        [ "$(cat "$PYTHON_ROOTFS.cas" 2>/dev/null)" != "$(local_cas_digest)" ]; then
        make_python_rootfs
    fi
    say "importing $PYTHON_IMAGE from $PYTHON_ROOTFS"
    docker -H "$HOST" import \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        - "$PYTHON_IMAGE" <"$PYTHON_ROOTFS" >/dev/null
    image_present "$PYTHON_IMAGE" || die "import of $PYTHON_IMAGE failed"
}

stop_engine() {
    if [ ! -s "$PIDFILE" ]; then
        say "no $PIDFILE: nothing to stop"
        return 0
    fi
    pid=$(cat "$PIDFILE")
    # After a reboot the pid may belong to anything: only a dockerd is stopped.
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]; then
        kill "$pid"
    fi
    tries=150
    while kill -0 "$pid" 2>/dev/null && [ "$tries" -gt 0 ]; do
        sleep 0.2
        tries=$((tries - 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        die "dockerd (pid $pid) still runs 30s after SIGTERM"
    fi
    unmount_leftovers
    say "dockerd stopped"
}

# dockerd leaves its data root and network namespace mounted when it exits:
# unmount them, deepest first, so that the state directory can be deleted.
unmount_leftovers() {
    awk -v dir="$STATE_DIR" '$2 == dir || index($2, dir "/") == 1 { print $2 }' /proc/mounts |
        sort -r | while read -r mount_point; do
        umount "$mount_point" 2>/dev/null || say "could not unmount $mount_point"
    done
}

main() {
    command=${1:-start}
    case "$command" in
    start | busybox | python-base)
        take_lock
        ;;
    status | stop) ;;
    -h | --help)
        sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'
        return 0
        ;;
    *)
        die "unknown command '$command' (start, busybox, python-base, status, stop)"
        ;;
    esac
    case "$command" in
    start) start_engine ;;
    busybox)
        start_engine
        import_busybox
        ;;
    python-base)
        start_engine
        import_python
        ;;
    status) engine_answers || die "no engine answers on $SOCKET" ;;
    stop)
        stop_engine
        return 0
        ;;
    esac
    printf '%s\n' "$SOCKET"
}

main "$@"
