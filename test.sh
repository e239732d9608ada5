#!/usr/bin/env bash
# Run the container image on every sample case as grand-challenge does, and compare its outputs
# with the expected ones (test/compare_outputs.py: points within 1 um, probabilities within 1e-3,
# same classes, names and counts). Prints PASS/FAIL per case; exits non-zero on any failure.
#
#   ./test.sh                  GPU image (mitosis-analysis:gpu), built first if missing or stale
#   ./test.sh --cpu            CPU image (mitosis-analysis:cpu)
#   ./test.sh track1-roi       only the named case(s) of test/cases/
#
# Options:
#   --gpu | --cpu       variant to test (default: gpu), as for ./build.sh
#   --tag NAME          image to test (default: mitosis-analysis:<variant>)
#   --no-build          never build; fail when the image is missing
#   --no-shared         skip the real Track 2 stack ../shared/data/samples/stack_5.tiff
#   --keep              keep the output folders (their paths are printed)
#
# Each case runs with the input mounted read-only at /input, a fresh output folder at /output,
# no network, a read-only root file system with a /tmp tmpfs, and the GPU when the host has one
# (docker --gpus all; podman --device nvidia.com/gpu=all, from the NVIDIA container toolkit's CDI
# spec). Besides test/cases/, when ../shared/data/samples/stack_5.tiff exists, a case is built
# from it in a temporary folder, its expected output being the host's process.py run
# (Python: $PYTHON, else .venv/bin/python, else python3).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=test/container_engine.sh
source "$ROOT/test/container_engine.sh"

variant=gpu
tag=""
build=1
shared=1
keep=0
only=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --gpu) variant=gpu ;;
        --cpu) variant=cpu ;;
        --tag) tag="${2:?--tag needs a name}"; shift ;;
        --no-build) build=0 ;;
        --no-shared) shared=0 ;;
        --keep) keep=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) die "unknown option '$1' (see ./test.sh --help)" ;;
        *) only+=("$1") ;;
    esac
    shift
done
if [[ -z "$tag" ]]; then
    if [[ "$variant" == gpu ]]; then tag="$MITOSIS_IMAGE_GPU"; else tag="$MITOSIS_IMAGE_CPU"; fi
fi

select_engine
CASES="$ROOT/test/cases"
WEIGHTS_RECORD="weights-manifest.sha256"
SHARED_STACK="$ROOT/../shared/data/samples/stack_5.tiff"
HOST_PYTHON="${PYTHON:-}"
if [[ -z "$HOST_PYTHON" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then HOST_PYTHON="$ROOT/.venv/bin/python"; else HOST_PYTHON=python3; fi
fi

workdir="$(mktemp -d "${TMPDIR:-/tmp}/mitosis-test.XXXXXX")"
cleanup() { [[ "$keep" == 1 ]] || rm -rf "$workdir" 2>/dev/null || true; }
trap cleanup EXIT

# ------------------------------------------------------------------ the image: present and current
build_image() {
    say "$1: building it with ./build.sh --$variant (log: $workdir/build.log)"
    if ! "$ROOT/build.sh" "--$variant" --tag "$tag" >"$workdir/build.log" 2>&1; then
        tail -n 30 "$workdir/build.log" >&2
        keep=1
        die "./build.sh --$variant failed (log above; full log kept in $workdir/build.log)"
    fi
    grep '^==> built' "$workdir/build.log" >&2 || true
}
digest="$(source_digest "$ROOT")"
if ! image_exists "$tag"; then
    [[ "$build" == 1 ]] || die "image $tag not found (build it with ./build.sh --$variant)"
    build_image "image $tag not found"
elif [[ "$(image_label "$tag" "$MITOSIS_SOURCE_LABEL")" != "$digest" ]]; then
    if [[ "$build" == 1 ]]; then
        build_image "image $tag was built from other sources (code, weights or requirements changed)"
    else
        say "warning: image $tag was built from other sources than the working tree (--no-build given)"
    fi
fi

# ------------------------------------------------------------------ how the platform runs it
run_flags=(--rm --network none --read-only --tmpfs /tmp)
volume_opts_ro="ro"
volume_opts_rw="rw"
if command -v selinuxenabled >/dev/null 2>&1 && selinuxenabled; then
    volume_opts_ro="ro,z"; volume_opts_rw="rw,z"
fi
if [[ "$variant" == gpu ]] && gpu_present; then
    # shellcheck disable=SC2207
    run_flags+=($(gpu_run_flags))
    say "GPU found: passing it to the container ($(gpu_run_flags))"
    if [[ "$ENGINE" == podman ]] && ! ls /etc/cdi/*.yaml /var/run/cdi/*.yaml >/dev/null 2>&1; then
        say "warning: no CDI spec for the GPU; make one with: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
    fi
else
    say "no GPU passed to the container ($([[ "$variant" == cpu ]] && echo "CPU image" || echo "nvidia-smi finds none"))"
fi

[[ -f "$ROOT/weights/manifest.json" ]] || die "weights/manifest.json is missing: run ./export.sh first"
manifest_sha256="$(sha256sum "$ROOT/weights/manifest.json" | cut -d' ' -f1)"
passed=0
failed=0
failures=()

# run_case NAME INPUT_DIR EXPECTED_DIR [STALE_WEIGHTS_RECORD]: the record file is given when the
# expected outputs were made with other weights than weights/ holds now (the case then fails).
run_case() {
    local name="$1" input="$2" expected="$3" stale_record="${4:-}" compared problems
    local out="$workdir/$name/output" log="$workdir/$name/container.log" started elapsed rc
    mkdir -p "$out"
    chmod 0777 "$out"  # the image's non-root user writes here
    started=$EPOCHREALTIME
    set +e
    "${ENGINE_CMD[@]}" run "${run_flags[@]}" \
        --volume "$(realpath "$input"):/input:$volume_opts_ro" \
        --volume "$out:/output:$volume_opts_rw" \
        "$tag" >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
    if [[ $rc -ne 0 ]]; then
        echo "FAIL $name: the container exited with $rc (${elapsed} s); its last lines:"
        tail -n 15 "$log" | sed 's/^/  | /'
        failed=$((failed + 1)); failures+=("$name"); return
    fi
    compared=0
    problems="$(python3 "$ROOT/test/compare_outputs.py" "$expected" "$out" 2>&1)" || compared=$?
    if [[ $compared -eq 0 && -z "$stale_record" ]]; then
        echo "PASS $name (${elapsed} s$(grep -m1 -o 'provider [A-Za-z]*ExecutionProvider' "$log" | sed 's/^/, /'))"
        passed=$((passed + 1))
    else
        if [[ $compared -ne 0 ]]; then
            echo "FAIL $name (${elapsed} s): output differs from $expected"
            echo "$problems"
        else
            echo "FAIL $name (${elapsed} s): output matches, but the expected outputs are stale"
        fi
        if [[ -n "$stale_record" ]]; then
            echo "  the expected outputs were made with other weights (weights/manifest.json sha256"
            echo "  $(cut -c1-12 <"$stale_record")... recorded, ${manifest_sha256:0:12}... now): re-run 'python test/make_cases.py'"
        fi
        failed=$((failed + 1)); failures+=("$name")
    fi
    [[ "$keep" == 1 ]] && echo "  output kept in $out"
    return 0
}

# ------------------------------------------------------------------ the sample cases of test/cases
shopt -s nullglob
case_dirs=()
if [[ ${#only[@]} -gt 0 ]]; then
    for name in "${only[@]}"; do
        [[ "$name" == stack_5 ]] && continue
        [[ -d "$CASES/$name/input" ]] || die "no case '$name' in test/cases/"
        case_dirs+=("$CASES/$name")
    done
else
    for dir in "$CASES"/*/; do [[ -d "$dir/input" ]] && case_dirs+=("${dir%/}"); done
fi

say "testing $tag with $ENGINE on ${#case_dirs[@]} sample case(s)"
for dir in "${case_dirs[@]}"; do
    name="$(basename "$dir")"
    record="$dir/$WEIGHTS_RECORD"
    if [[ ! -f "$record" ]]; then
        echo "FAIL $name: no $WEIGHTS_RECORD beside its expected outputs: re-run 'python test/make_cases.py'"
        failed=$((failed + 1)); failures+=("$name"); continue
    fi
    chmod -R a+rX "$dir/input"  # the image's non-root user reads it
    if [[ "$(cut -d' ' -f1 <"$record")" == "$manifest_sha256" ]]; then
        run_case "$name" "$dir/input" "$dir/expected_output"
    else
        run_case "$name" "$dir/input" "$dir/expected_output" "$record"
    fi
done

# ------------------------------------------------------------------ the real Track 2 stack, at run time
if [[ "$shared" == 1 && ( ${#only[@]} -eq 0 || " ${only[*]} " == *" stack_5 "* ) ]]; then
    if [[ ! -f "$SHARED_STACK" ]]; then
        say "skipping stack_5: $SHARED_STACK not found"
    elif ! "$HOST_PYTHON" -c "import numpy, tifffile, onnxruntime, pydantic" >/dev/null 2>&1; then
        echo "SKIP stack_5: no host Python with the requirements for its expected output (set PYTHON=...)"
    else
        input="$workdir/stack_5/input"
        mkdir -p "$input/images/stacked-histopathology-roi-cropouts" "$workdir/stack_5/expected"
        cp "$SHARED_STACK" "$input/images/stacked-histopathology-roi-cropouts/stack_5.tiff"
        cat >"$input/inputs.json" <<'JSON'
[{"file": null, "image": {"name": "stack_5.tiff"}, "value": null,
  "interface": {"slug": "stacked-histopathology-roi-cropouts", "kind": "Image", "super_kind": "Image",
                "relative_path": "images/stacked-histopathology-roi-cropouts", "example_value": null}}]
JSON
        chmod -R a+rX "$workdir"
        if MITOSIS_DEVICE=cpu "$HOST_PYTHON" "$ROOT/process.py" --input "$input" --output "$workdir/stack_5/expected" \
            >"$workdir/stack_5/host.log" 2>&1; then
            run_case stack_5 "$input" "$workdir/stack_5/expected"
        else
            echo "FAIL stack_5: the host run of process.py failed:"
            tail -n 15 "$workdir/stack_5/host.log" | sed 's/^/  | /'
            failed=$((failed + 1)); failures+=("stack_5")
        fi
    fi
fi

[[ $failed -gt 0 ]] && echo "failed cases of $tag: ${failures[*]}"
echo "container: $passed passed, $failed failed"
[[ $failed -eq 0 ]] || exit 1
[[ $passed -gt 0 ]] || die "no case was run"
