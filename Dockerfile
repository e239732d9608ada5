# MIDOG mitosis analysis: the grand-challenge inference container (both tracks).
#
#   ./build.sh            GPU image (onnxruntime-gpu with CUDA/cuDNN from PyPI): what you submit
#   ./build.sh --cpu      CPU-only image (onnxruntime): light builds for tests and CI
#
# The platform runs it as: docker run --network none --gpus all \
#     -v INPUT:/input:ro -v OUTPUT:/output mitosis-analysis:gpu
# Nothing is downloaded at run time: the code, the ONNX weights and every library are in the image.

# Any Debian bookworm image works (python3 comes from apt). build.sh passes a local image made
# with debootstrap where no registry can be reached.
ARG BASE_IMAGE=docker.io/library/debian:bookworm-slim
FROM --platform=linux/amd64 ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv "$VIRTUAL_ENV"

# Build arguments are declared where they are first used: the layers above are shared by both
# variants.
# gpu: requirements.txt (onnxruntime-gpu[cuda,cudnn]); cpu: requirements-cpu.txt (onnxruntime).
ARG VARIANT=gpu
# Path of a CA bundle that pip should trust, mounted into the build by build.sh (for machines
# whose HTTPS goes through a local certificate authority). Empty: pip's own bundle. The file is
# not copied into the image.
ARG PIP_CERT=
COPY requirements.txt requirements-cpu.txt /opt/app/
RUN case "$VARIANT" in \
        gpu) req=/opt/app/requirements.txt ;; \
        cpu) req=/opt/app/requirements-cpu.txt ;; \
        *) echo "VARIANT must be gpu or cpu, not '$VARIANT'" >&2; exit 2 ;; \
    esac \
 && pip install ${PIP_CERT:+--cert "$PIP_CERT"} --requirement "$req" \
 && python -c "import numpy, scipy.ndimage, tifffile, imagecodecs, SimpleITK, openslide, pydantic, onnxruntime as ort; print('onnxruntime', ort.__version__, ort.get_available_providers())"

# A non-root user, as the platform expects; it owns nothing but its home and /output.
RUN groupadd --system user \
 && useradd --system --no-log-init --create-home --gid user user \
 && mkdir -p /input /output \
 && chown user:user /output

# Only what inference needs: no model/, training/, test/ or export code (see .dockerignore).
WORKDIR /opt/app
COPY process.py /opt/app/
COPY mitosis_analysis/ /opt/app/mitosis_analysis/
COPY weights/ /opt/app/weights/
RUN python -m compileall -q /opt/app/mitosis_analysis /opt/app/process.py \
 && python -c "import sys; sys.path.insert(0, '/opt/app'); import mitosis_analysis"

# Digest of the sources (test/container_engine.sh: source_digest); test.sh uses it to tell a
# stale image from a current one. Declared last: a changed value invalidates no cached layer.
ARG SOURCE_SHA256=unknown
LABEL org.opencontainers.image.title="mitosis-analysis" \
      org.opencontainers.image.description="MIDOG mitosis detection (track 1) and atypical classification (track 2)" \
      org.mitosis-analysis.variant="${VARIANT}" \
      org.mitosis-analysis.source-sha256="${SOURCE_SHA256}"

USER user
# process.py reads /input and writes /output by default; arguments are passed through.
ENTRYPOINT ["python", "/opt/app/process.py"]
