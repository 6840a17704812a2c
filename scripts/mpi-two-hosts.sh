#!/usr/bin/env bash
# Runs an MPI job on two "hosts" that only meet over a network: two network namespaces joined by a veth pair
# (10.203.7.1 and 10.203.7.2, addresses that exist only inside these namespaces), one rank in each, Open MPI's TCP
# transport forced (no shared memory). mpirun runs in the first namespace; the second is reached through an rsh
# agent that enters the namespace instead of ssh.
#   scripts/mpi-two-hosts.sh COMMAND [ARGS...]      (as root; exits 77 when namespaces cannot be made)
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 COMMAND [ARGS...]" >&2; exit 2; }
tag="as$$"
a="${tag}a"; b="${tag}b"
cleanup() { ip netns del "$a" 2>/dev/null || true; ip netns del "$b" 2>/dev/null || true; rm -rf "$work"; }
work=$(mktemp -d)
trap cleanup EXIT
if ! ip netns add "$a" 2>/dev/null || ! ip netns add "$b" 2>/dev/null; then
  echo "cannot create network namespaces here (needs root and CAP_SYS_ADMIN)" >&2; exit 77
fi
ip link add "${tag}va" type veth peer name "${tag}vb"
ip link set "${tag}va" netns "$a"
ip link set "${tag}vb" netns "$b"
ip -n "$a" addr add 10.203.7.1/24 dev "${tag}va"
ip -n "$b" addr add 10.203.7.2/24 dev "${tag}vb"
for ns in "$a" "$b"; do ip -n "$ns" link set lo up; done
ip -n "$a" link set "${tag}va" up
ip -n "$b" link set "${tag}vb" up

# The "remote shell": Open MPI calls it as AGENT HOST COMMAND...; it runs COMMAND inside that host's namespace.
cat > "$work/agent" <<AGENT
#!/bin/sh
host="\$1"; shift
case "\$host" in
  10.203.7.1) ns=$a ;;
  10.203.7.2) ns=$b ;;
  *) echo "unknown host \$host" >&2; exit 1 ;;
esac
exec ip netns exec "\$ns" /bin/sh -c "\$*"
AGENT
chmod +x "$work/agent"
printf '10.203.7.1 slots=1\n10.203.7.2 slots=1\n' > "$work/hosts"

ip netns exec "$a" mpirun --allow-run-as-root -np 2 --hostfile "$work/hosts" \
  --mca plm_rsh_agent "$work/agent" --mca btl tcp,self --mca btl_tcp_if_include 10.203.7.0/24 \
  --mca oob_tcp_if_include 10.203.7.0/24 -x PATH -x HOME "$@"
