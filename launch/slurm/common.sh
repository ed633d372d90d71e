# shellcheck shell=bash
# Helpers shared by launch/slurm/*.sbatch. Sourced, not run: defines functions and nothing else.
#
#   longseq_find_python ROOT      the Python to run (LONGSEQ_PYTHON, VENV, ROOT/.venv, PATH)
#   longseq_is_loopback ADDR      true for 127.0.0.0/8, ::1, localhost
#   longseq_select_head_addr NNODES IP_ADDRESS_OUT [ALL_IP_ADDRESSES_OUT]
#                                 pick the rendezvous address from `hostname --ip-address`
#                                 (and `hostname --all-ip-addresses`) output; pure, testable
#   longseq_resolve_head_addr HEAD NNODES
#                                 run those on HEAD through srun and pick (HEAD_ADDR overrides)
#   longseq_rdzv_port JOB_ID      a rendezvous port derived from the job id (RDZV_PORT overrides)

# The Python interpreter: LONGSEQ_PYTHON, else $VENV/bin/python, else ROOT/.venv/bin/python,
# else python3 / python from PATH. No venv needs to be activated.
longseq_find_python() {
    local root=${1:-.}
    if [ -n "${LONGSEQ_PYTHON:-}" ]; then
        printf '%s\n' "$LONGSEQ_PYTHON"
    elif [ -n "${VENV:-}" ]; then
        printf '%s\n' "$VENV/bin/python"
    elif [ -x "$root/.venv/bin/python" ]; then
        printf '%s\n' "$root/.venv/bin/python"
    elif command -v python3 >/dev/null 2>&1; then
        command -v python3
    else
        command -v python
    fi
}

longseq_is_loopback() {
    case "$1" in
        127.* | ::1 | localhost | 0:0:0:0:0:0:0:1) return 0 ;;
        *) return 1 ;;
    esac
}

# A usable IPv4 address from a whitespace-separated list: not loopback, not link-local.
_longseq_first_routable_ipv4() {
    local addr
    for addr in $1; do
        case "$addr" in
            *:*) continue ;;       # IPv6: would need [brackets] in host:port; not used
            127.* | 169.254.*) continue ;;
            [0-9]*.[0-9]*.[0-9]*.[0-9]*)
                printf '%s\n' "$addr"
                return 0
                ;;
        esac
    done
    return 1
}

# longseq_select_head_addr NNODES IP_ADDRESS_OUT [ALL_IP_ADDRESSES_OUT]
# The known trap: on many hosts (Debian's /etc/hosts: "127.0.1.1 <hostname>") the head's name
# resolves to a loopback address. That is fine on one node, but on N > 1 nodes the other nodes
# would try to reach their own loopback and hang in the rendezvous. So for N > 1: take the first
# routable IPv4 of `hostname --ip-address`, else of `hostname --all-ip-addresses`, else fail.
# LONGSEQ_ALLOW_LOOPBACK_HEAD=1 accepts loopback anyway (several emulated nodes on one host).
longseq_select_head_addr() {
    local nnodes=$1 ip_out=$2 all_out=${3:-} addr first
    first=$(printf '%s\n' "$ip_out" | awk 'NF { print $1; exit }')
    if [ -z "$first" ]; then
        echo "longseq: no address for the head node (hostname --ip-address printed nothing)" >&2
        return 1
    fi
    if [ "$nnodes" -le 1 ] || [ "${LONGSEQ_ALLOW_LOOPBACK_HEAD:-0}" = 1 ]; then
        if addr=$(_longseq_first_routable_ipv4 "$ip_out"); then
            printf '%s\n' "$addr"
        else
            printf '%s\n' "$first"
        fi
        return 0
    fi
    if addr=$(_longseq_first_routable_ipv4 "$ip_out"); then
        printf '%s\n' "$addr"
        return 0
    fi
    if addr=$(_longseq_first_routable_ipv4 "$all_out"); then
        echo "longseq: head name resolves to '$first' (loopback); using $addr instead" >&2
        printf '%s\n' "$addr"
        return 0
    fi
    echo "longseq: the head node resolves only to loopback/link-local addresses" \
        "('$ip_out' / '$all_out'); other nodes cannot reach it. Set HEAD_ADDR=<ip>." >&2
    return 1
}

# longseq_resolve_head_addr HEAD NNODES: the head node's rendezvous address, asked on the head
# itself (node names need not resolve anywhere else). HEAD_ADDR overrides.
longseq_resolve_head_addr() {
    local head=$1 nnodes=$2 ip_out all_out=""
    if [ -n "${HEAD_ADDR:-}" ]; then
        printf '%s\n' "$HEAD_ADDR"
        return 0
    fi
    ip_out=$(srun --nodes=1 --ntasks=1 --cpus-per-task=1 -w "$head" hostname --ip-address) || {
        echo "longseq: srun hostname --ip-address on $head failed" >&2
        return 1
    }
    if [ "$nnodes" -gt 1 ] && ! _longseq_first_routable_ipv4 "$ip_out" >/dev/null; then
        all_out=$(srun --nodes=1 --ntasks=1 --cpus-per-task=1 -w "$head" \
            hostname --all-ip-addresses) || all_out=""
    fi
    longseq_select_head_addr "$nnodes" "$ip_out" "$all_out"
}

# A port for the c10d store, stable across a requeue, spread over 29500..30499 by job id so that
# two jobs sharing a node do not collide. RDZV_PORT overrides.
longseq_rdzv_port() {
    if [ -n "${RDZV_PORT:-}" ]; then
        printf '%s\n' "$RDZV_PORT"
    else
        printf '%s\n' "$((29500 + ${1:-0} % 1000))"
    fi
}
