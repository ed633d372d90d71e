# syntax=docker/dockerfile:1
# longseq GPU image: CUDA 12.8 runtime on Ubuntu 24.04, Python 3.12, the CUDA 12.8 build of
# torch 2.13 + fbgemm-gpu 1.8.0 + torchrec 1.8.0 (requirements/gpu*.txt), the runtime pins
# (requirements/runtime.txt) and the longseq package. Runs as the non-root user "longseq"
# (uid 1000); the entry point is torchrun:
#
#   docker build -t longseq:0.1.0 .
#   docker run --gpus all --ipc=host -v /data:/shared longseq:0.1.0 \
#       --nproc-per-node=gpu -m longseq.train experiment=default \
#       data.path=/shared/data/main run_dir=/shared/runs/r1 resume=auto
#
# The versions below must equal the pins in requirements/ (tests/launch/test_dockerfile.py).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_IMAGE}

ARG PYTHON_VERSION=3.12
ARG TORCH_VERSION=2.13.0
ARG FBGEMM_GPU_VERSION=1.8.0
ARG TORCHREC_VERSION=1.8.0

LABEL org.opencontainers.image.title="longseq" \
      org.opencontainers.image.description="Long-sequence recommendation training (TorchRec)" \
      ai.longseq.torch="${TORCH_VERSION}" \
      ai.longseq.fbgemm-gpu="${FBGEMM_GPU_VERSION}" \
      ai.longseq.torchrec="${TORCHREC_VERSION}"

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:${PATH} \
    LONGSEQ_CONFIG_DIR=/opt/longseq/configs

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Ubuntu's python3.12 (distribution packages are not version-pinned: the base image tag pins the
# release). The base image's "ubuntu" user holds uid 1000: replace it with "longseq".
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        "python${PYTHON_VERSION}" "python${PYTHON_VERSION}-venv" ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && if id ubuntu >/dev/null 2>&1; then userdel --remove ubuntu; fi \
    && useradd --uid 1000 --create-home --shell /bin/bash longseq \
    && "python${PYTHON_VERSION}" -m venv "${VIRTUAL_ENV}"

WORKDIR /opt/longseq

# Order matters (docs/platform.md): CUDA torch + fbgemm-gpu first, torchrec without its
# dependencies (its metadata would pull another fbgemm-gpu), then the runtime pins.
COPY requirements/ requirements/
RUN pip install -r requirements/gpu.txt \
    && pip install --no-deps -r requirements/gpu-nodeps.txt \
    && pip install -r requirements/runtime.txt \
    && python -c 'import os, importlib.metadata as md; \
want = {"torch": os.environ["TORCH_VERSION"], "fbgemm-gpu": os.environ["FBGEMM_GPU_VERSION"], \
        "torchrec": os.environ["TORCHREC_VERSION"]}; \
got = {n: md.version(n).split("+")[0] for n in want}; \
assert got == want, (got, want); print("installed", got)'

# The package itself (editable: configs/ stays next to it; LONGSEQ_CONFIG_DIR points there).
COPY pyproject.toml README.md ./
COPY configs/ configs/
COPY longseq/ longseq/
RUN pip install --no-deps -e . \
    && python -c "import longseq, longseq.config as c; print(longseq.__version__, c.CONFIG_DIR)"

WORKDIR /workspace
RUN chown 1000:1000 /workspace
USER 1000:1000

ENTRYPOINT ["torchrun"]
CMD ["--help"]
