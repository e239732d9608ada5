# shellcheck shell=bash disable=SC2034
# Shared by build.sh and test.sh (sourced, not run; they use the variables below): pick the
# container engine and the image.
#
# The engine is docker when a docker *engine* answers (`docker info`), else podman. Podman is
# called as `podman --runtime runc` where runc is installed (crun fails on some cgroup-v1 hosts);
# see ../shared/notes/containers.md. MITOSIS_ENGINE=docker|podman overrides the choice.

# Image names, one per variant; build.sh --tag and test.sh --tag override them.
MITOSIS_IMAGE_GPU="mitosis-analysis:gpu"
MITOSIS_IMAGE_CPU="mitosis-analysis:cpu"
# Local base image made with debootstrap where no registry can be reached.
MITOSIS_LOCAL_BASE="localhost/debian-base:bookworm"
# Label that carries the digest of the image's sources (see source_digest).
MITOSIS_SOURCE_LABEL="org.mitosis-analysis.source-sha256"

die() { echo "$(basename "$0"): error: $*" >&2; exit 2; }
say() { echo "==> $*" >&2; }
# --help of the sourcing script: its header comment, from line 2 to `set -euo pipefail`.
usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# Sets ENGINE (docker|podman) and the array ENGINE_CMD (the command with its global flags).
select_engine() {
    local wanted="${MITOSIS_ENGINE:-}"
    if [[ -z "$wanted" ]]; then
        if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
            wanted=docker
        elif command -v podman >/dev/null 2>&1; then
            wanted=podman
        else
            die "no container engine: neither a working docker engine ('docker info' fails) nor podman." \
                "Install docker, or podman (as root: ./build.sh --install-podman)"
        fi
    fi
    case "$wanted" in
        docker)
            docker info >/dev/null 2>&1 || die "MITOSIS_ENGINE=docker but no docker engine answers ('docker info' fails)"
            ENGINE=docker; ENGINE_CMD=(docker) ;;
        podman)
            command -v podman >/dev/null 2>&1 || die "MITOSIS_ENGINE=podman but podman is not installed"
            ENGINE=podman; ENGINE_CMD=(podman)
            if command -v runc >/dev/null 2>&1; then ENGINE_CMD+=(--runtime runc); fi ;;
        *) die "MITOSIS_ENGINE must be docker or podman, not '$wanted'" ;;
    esac
}

image_exists() { "${ENGINE_CMD[@]}" image inspect "$1" >/dev/null 2>&1; }

# Label value of an image, empty when unset.
image_label() {
    "${ENGINE_CMD[@]}" image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null \
        | sed 's/^<no value>$//'
}

# True when an NVIDIA GPU is usable from the host.
gpu_present() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

# Flags that hand the GPU to a container (the platform runs images with one).
gpu_run_flags() {
    case "$ENGINE" in
        docker) echo "--gpus all" ;;
        podman) echo "--device nvidia.com/gpu=all" ;;  # CDI spec from nvidia-container-toolkit
    esac
}

# sha256 over everything the image is built from, so that test.sh can tell a stale image.
# Must list the same files as the Dockerfile's COPY lines (and .dockerignore).
source_digest() {
    local root="$1"
    (
        cd "$root" || exit 1
        {
            printf '%s\n' Dockerfile requirements.txt requirements-cpu.txt process.py
            find mitosis_analysis -type f ! -path '*/__pycache__/*' ! -name '*.pyc'
            find weights -maxdepth 1 -type f \( -name '*.onnx' -o -name manifest.json \)
        } | LC_ALL=C sort | while IFS= read -r f; do
            [[ -f "$f" ]] && sha256sum "$f"
        done | sha256sum | cut -d' ' -f1
    )
}
