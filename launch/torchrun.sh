#!/usr/bin/env bash
# Launch longseq training under torchrun, on one node or (run once on every node) on N nodes.
#
#   # one node, 2 processes (gloo on CPU, NCCL on GPU: picked by the trainer)
#   NPROC_PER_NODE=2 launch/torchrun.sh experiment=tiny data.path=data/tiny run_dir=runs/t1 \
#       trainer.max_steps=50
#
#   # N nodes: the same command on every node; the c10d rendezvous store runs on the head node
#   NNODES=2 RDZV_ENDPOINT=10.0.0.1:29500 RDZV_ID=exp42 NPROC_PER_NODE=8 \
#       launch/torchrun.sh experiment=default data.path=/shared/data run_dir=/shared/runs/exp42
#
# Every argument is passed to the trainer (Hydra overrides). `resume=auto` is added unless an
# argument sets resume=... or RESUME is empty: an elastic restart (MAX_RESTARTS) or a rerun of the
# same command then continues from <run_dir>/checkpoints/latest.
#
# Environment (all optional):
#   PYTHON            interpreter that has torch + longseq (default: python from PATH; no venv
#                     needs to be activated if this points into it, e.g. PYTHON=.venv/bin/python)
#   NPROC_PER_NODE    processes per node (default: number of GPUs from nvidia-smi, else 1)
#   NNODES            number of nodes, or MIN:MAX for an elastic range (default 1)
#   RDZV_ENDPOINT     HOST:PORT of the head node's c10d store. Required for NNODES > 1 unless
#                     MASTER_ADDR is set (then MASTER_ADDR:MASTER_PORT, port default 29500).
#                     Single node without it: --standalone (a free local port).
#   RDZV_ID           rendezvous id, the same on every node of one run (default longseq)
#   RDZV_BACKEND      default c10d
#   RDZV_JOIN_TIMEOUT seconds to wait for all nodes to join (default 900)
#   MAX_RESTARTS      elastic restarts of the whole worker group after a failure (default 0)
#   LOCAL_ADDR        this node's address as other nodes should reach it (--local-addr; default:
#                     torchrun uses the node's FQDN, which must then resolve on every node)
#   SHUTDOWN_TIMEOUT  seconds workers get to checkpoint after SIGTERM/SIGUSR1 (default 90)
#   RESUME            value of the resume= override (default auto, none for longseq.eval;
#                     RESUME= (empty): none added)
#   LONGSEQ_MODULE    module to run (default longseq.train; e.g. longseq.eval)
#   DRY_RUN=1         print the command instead of running it
#   TORCH_DISABLE_SHARE_RDZV_TCP_STORE  default 1 (elastic restarts need it; see below)
#   NCCL_*, GLOO_SOCKET_IFNAME, OMP_NUM_THREADS, ... are passed through to the workers.
#
# SIGTERM, SIGINT, SIGHUP, SIGQUIT and SIGUSR1 sent to torchrun are forwarded to every worker
# (the trainer then writes a checkpoint and exits).
set -euo pipefail

python_bin=${PYTHON:-python}
module=${LONGSEQ_MODULE:-longseq.train}
nnodes=${NNODES:-1}
max_restarts=${MAX_RESTARTS:-0}
rdzv_id=${RDZV_ID:-longseq}
rdzv_backend=${RDZV_BACKEND:-c10d}

if [ -n "${NPROC_PER_NODE:-}" ]; then
    nproc=$NPROC_PER_NODE
elif command -v nvidia-smi >/dev/null 2>&1 && [ "$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')" -gt 0 ]; then
    nproc=$(nvidia-smi -L | grep -c '^GPU')
else
    nproc=1
fi

cmd=("$python_bin" -m torch.distributed.run
    --nproc-per-node "$nproc"
    --max-restarts "$max_restarts"
    --signals-to-handle "SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
    --shutdown-timeout "${SHUTDOWN_TIMEOUT:-90}")

endpoint=${RDZV_ENDPOINT:-}
if [ -z "$endpoint" ] && [ -n "${MASTER_ADDR:-}" ]; then
    endpoint="$MASTER_ADDR:${MASTER_PORT:-29500}"
fi
if [ -z "$endpoint" ]; then
    if [ "$nnodes" != 1 ]; then
        echo "torchrun.sh: NNODES=$nnodes needs RDZV_ENDPOINT=HOST:PORT (the head node)" >&2
        exit 2
    fi
    cmd+=(--standalone --nnodes 1)
else
    cmd+=(--nnodes "$nnodes"
        --rdzv-backend "$rdzv_backend"
        --rdzv-endpoint "$endpoint"
        --rdzv-id "$rdzv_id"
        --rdzv-conf "join_timeout=${RDZV_JOIN_TIMEOUT:-900}")
fi
if [ -n "${LOCAL_ADDR:-}" ]; then
    cmd+=(--local-addr "$LOCAL_ADDR")
fi

cmd+=(-m "$module" "$@")
if [ "$module" = longseq.eval ]; then
    resume=${RESUME:-}
else
    resume=${RESUME-auto}
fi
if [ -n "$resume" ]; then
    has_resume=0
    for arg in "$@"; do
        case "$arg" in resume=* | +resume=* | ++resume=*) has_resume=1 ;; esac
    done
    if [ "$has_resume" = 0 ]; then
        cmd+=("resume=$resume")
    fi
fi

export PYTHONUNBUFFERED=1
# Elastic restarts (MAX_RESTARTS) break when the workers share the rendezvous TCP store (torch's
# default since 2.5): the restarted group reads the previous group's addresses and fails to
# connect (pytorch/pytorch#135712, still so in torch 2.13 with gloo), and a new agent joining a
# surviving one (a lost node rejoining) waits in vain for the round's MASTER_ADDR, which the
# surviving rank 0 writes only on its first rendezvous (docs/launch.md). Give each group its own.
export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=${TORCH_DISABLE_SHARE_RDZV_TCP_STORE:-1}
if [ "${DRY_RUN:-0}" = 1 ]; then
    printf '%q ' "${cmd[@]}"
    printf '\n'
    exit 0
fi
echo "torchrun.sh on $(hostname): ${cmd[*]}" >&2
exec "${cmd[@]}"
