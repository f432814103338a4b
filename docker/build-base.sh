#!/usr/bin/env bash
# Builds the stand-in base image (Debian bookworm with python3, python3-venv and
# ca-certificates) from Debian's package mirror with debootstrap, for machines that
# reach no image registry. The Dockerfile's default base, python:3.11-slim, needs one.
#
#   docker/build-base.sh [IMAGE]      (default cutover-base:bookworm)
#
# An image that exists already is kept: the debootstrap run takes minutes.
# Set REBUILD=1 to build it again, DEBIAN_MIRROR to use another mirror.
set -euo pipefail

image="${1:-${CUTOVER_BASE_IMAGE:-cutover-base:bookworm}}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm

if [[ "${REBUILD:-0}" != 1 ]] && docker image inspect "$image" >/dev/null 2>&1; then
    echo "build-base: $image exists, kept (REBUILD=1 builds it again)"
    exit 0
fi

if ! command -v debootstrap >/dev/null; then
    echo "build-base: installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap debian-archive-keyring
fi

work="$(mktemp -d /var/tmp/cutover-base.XXXXXX)"
root="$work/rootfs"

cleanup() {
    # debootstrap mounts proc and sys inside the target; a failed run can leave them
    # mounted, and removing the tree through them would reach the host's.
    for mount in "$root/proc" "$root/sys" "$root/dev/pts" "$root/dev"; do
        if mountpoint -q "$mount" 2>/dev/null; then umount -l "$mount" || true; fi
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

started=$(date +%s)
echo "build-base: debootstrap $suite from $mirror into $root"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    echo "build-base: debootstrap failed; the end of its log:" >&2
    tail -n 40 "$work/debootstrap.log" >&2
    [[ -f "$root/debootstrap/debootstrap.log" ]] && tail -n 40 "$root/debootstrap/debootstrap.log" >&2
    exit 1
}

# What an image never uses: downloaded packages, package lists, manuals and translations.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/log/*.log "$root"/tmp/* "$root"/var/tmp/*

echo "build-base: importing $image"
tar -C "$root" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    --message "debootstrap --variant=minbase $suite + python3 python3-venv ca-certificates" \
    - "$image" >/dev/null
echo "build-base: $image built in $(( $(date +%s) - started )) s ($(docker image inspect -f '{{.Size}}' "$image") bytes)"
