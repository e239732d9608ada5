#!/usr/bin/env bash
# Build the inference container image.
#
#   ./build.sh                 GPU image mitosis-analysis:gpu (what you submit to grand-challenge)
#   ./build.sh --cpu           CPU-only image mitosis-analysis:cpu (tests, CI; no CUDA libraries)
#   ./build.sh --save FILE     also write the image as a gzipped tarball (grand-challenge upload)
#
# Options:
#   --gpu | --cpu          variant (default: gpu)
#   --tag NAME             image name (default: mitosis-analysis:<variant>)
#   --base IMAGE           base image, any Debian bookworm (default: the Dockerfile's,
#                          docker.io/library/debian:bookworm-slim)
#   --ca-bundle FILE       CA bundle that pip trusts inside the build (podman only; default: the
#                          host's /etc/ssl/certs/ca-certificates.crt when it exists)
#   --no-ca-bundle         let pip use its own CA bundle
#   --no-cache             rebuild every layer
#   --save FILE.tar.gz     save the image after building
#   --install-podman       as root on Debian/Ubuntu: apt-get install podman runc debootstrap and
#                          write /etc/containers/containers.conf when missing, then build
#
# Engine: docker when a docker engine answers (`docker info`), else podman (with runc). With
# podman, a base image that cannot be pulled (no registry reachable) is replaced by a local
# Debian bookworm made with debootstrap from the host's apt mirror (see
# ../shared/notes/containers.md). MITOSIS_ENGINE=docker|podman forces the engine.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=test/container_engine.sh
source "$ROOT/test/container_engine.sh"

variant=gpu
tag=""
base=""
ca_bundle="auto"
no_cache=()
save=""
install_podman=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpu) variant=gpu ;;
        --cpu) variant=cpu ;;
        --tag) tag="${2:?--tag needs a name}"; shift ;;
        --base) base="${2:?--base needs an image}"; shift ;;
        --ca-bundle) ca_bundle="${2:?--ca-bundle needs a file}"; shift ;;
        --no-ca-bundle) ca_bundle="" ;;
        --no-cache) no_cache=(--no-cache) ;;
        --save) save="${2:?--save needs a file name}"; shift ;;
        --install-podman) install_podman=1 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option '$1' (see ./build.sh --help)" ;;
    esac
    shift
done

if [[ -z "$tag" ]]; then
    if [[ "$variant" == gpu ]]; then tag="$MITOSIS_IMAGE_GPU"; else tag="$MITOSIS_IMAGE_CPU"; fi
fi

install_podman_debian() {
    [[ "$(id -u)" == 0 ]] || die "--install-podman needs root (apt-get)"
    command -v apt-get >/dev/null 2>&1 || die "--install-podman needs apt-get (Debian/Ubuntu)"
    say "installing podman, runc and debootstrap with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
    local conf=/etc/containers/containers.conf
    if [[ ! -e "$conf" ]]; then
        # runc fails on setrlimit with podman's default ulimits and pids limit; systemd cgroups
        # are not available in every container host (../shared/notes/containers.md).
        say "writing $conf (cgroupfs, no default ulimits or pids limit)"
        mkdir -p /etc/containers
        cat >"$conf" <<'CONF'
[containers]
default_ulimits = []
pids_limit = 0
netns = "none"
[engine]
cgroup_manager = "cgroupfs"
CONF
    fi
}

[[ "$install_podman" == 1 ]] && install_podman_debian
select_engine

# The host's apt mirror for Debian, from deb822 sources or a classic sources.list.
debian_mirror() {
    local uri=""
    if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
        uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
    fi
    if [[ -z "$uri" && -r /etc/apt/sources.list ]]; then
        uri="$(awk '$1 == "deb" && $0 ~ /debian/ && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)"
    fi
    echo "${uri:-http://deb.debian.org/debian}"
}

# Make localhost/debian-base:bookworm with debootstrap (podman, no registry reachable).
make_local_base() {
    command -v debootstrap >/dev/null 2>&1 \
        || die "no base image can be pulled and debootstrap is missing (apt-get install debootstrap, or ./build.sh --install-podman)"
    [[ "$(id -u)" == 0 ]] || die "debootstrap needs root to make the local base image"
    local mirror rootfs started
    mirror="$(debian_mirror)"
    rootfs="$(mktemp -d /tmp/debian-base.XXXXXX)"
    started=$SECONDS
    say "making the local base image $MITOSIS_LOCAL_BASE: debootstrap --variant=minbase bookworm from $mirror"
    if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$rootfs.log" 2>&1; then
        tail -n 20 "$rootfs.log" >&2
        rm -rf "$rootfs" "$rootfs.log"
        die "debootstrap failed (log above)"
    fi
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb
    tar -C "$rootfs" -c . | "${ENGINE_CMD[@]}" import - "$MITOSIS_LOCAL_BASE" >/dev/null
    rm -rf "$rootfs" "$rootfs.log"
    say "local base image ready in $((SECONDS - started)) s"
}

# Decide the base image: the requested one (or the Dockerfile's default) when it is present or
# can be pulled; with podman and no registry, the local debootstrap image.
build_args=(--build-arg "VARIANT=$variant")
default_base="$(sed -n 's/^ARG BASE_IMAGE=//p' "$ROOT/Dockerfile")"
want_base="${base:-$default_base}"
if [[ "$ENGINE" == podman ]]; then
    if image_exists "$want_base"; then
        :
    elif "${ENGINE_CMD[@]}" pull --quiet "$want_base" >/dev/null 2>&1; then
        say "pulled $want_base"
    elif [[ -n "$base" ]]; then
        die "base image '$base' is not present and cannot be pulled"
    else
        say "cannot pull $want_base: using the local Debian bookworm image $MITOSIS_LOCAL_BASE"
        want_base="$MITOSIS_LOCAL_BASE"
        image_exists "$want_base" || make_local_base
    fi
fi
[[ "$want_base" != "$default_base" ]] && build_args+=(--build-arg "BASE_IMAGE=$want_base")

# pip's CA bundle (podman: bind-mounted into the build, never copied into the image).
engine_flags=()
if [[ "$ENGINE" == podman ]]; then
    engine_flags+=(--network host)
    if [[ "$ca_bundle" == auto ]]; then
        ca_bundle=""
        [[ -r /etc/ssl/certs/ca-certificates.crt ]] && ca_bundle=/etc/ssl/certs/ca-certificates.crt
    fi
    if [[ -n "$ca_bundle" ]]; then
        [[ -r "$ca_bundle" ]] || die "CA bundle '$ca_bundle' is not readable"
        engine_flags+=(--volume "$(realpath "$ca_bundle"):/run/host-ca.crt:ro")
        build_args+=(--build-arg "PIP_CERT=/run/host-ca.crt")
    fi
elif [[ -n "$ca_bundle" && "$ca_bundle" != auto ]]; then
    die "--ca-bundle works with podman only (docker build cannot bind-mount a file)"
fi

[[ -f "$ROOT/weights/manifest.json" ]] \
    || die "weights/manifest.json is missing: run ./export.sh first (the image carries the weights)"
build_args+=(--build-arg "SOURCE_SHA256=$(source_digest "$ROOT")")

say "building $tag ($variant) with $ENGINE from $want_base"
started=$SECONDS
"${ENGINE_CMD[@]}" build "${engine_flags[@]}" "${no_cache[@]}" "${build_args[@]}" \
    --tag "$tag" --file "$ROOT/Dockerfile" "$ROOT"
say "built $tag in $((SECONDS - started)) s"

if [[ -n "$save" ]]; then
    say "saving $tag to $save"
    "${ENGINE_CMD[@]}" save "$tag" | gzip -c >"$save.part"
    mv "$save.part" "$save"
    say "saved $save ($(du -h "$save" | cut -f1))"
fi
