#!/bin/sh
# What the kernel charges for each step of a pod sandbox, without Skiff in the way: N of each
# step through one `ip -batch` (one process, one netlink socket), timed per step. As root:
#
#     node/podnet/examples/kernel_costs.sh [N]
#
# Uses bridge skkc0, namespaces skkc<i>, veths skkv<i>/skkp<i> and 10.253.0.0/16; removes
# them at the end (and whatever an interrupted run left).
set -eu
N=${1:-300}
dir=
cleanup() {
    for i in $(seq "$N"); do ip netns del "skkc$i" 2>/dev/null || true; done
    ip link del skkc0 2>/dev/null || true
    [ -z "$dir" ] || rm -rf "$dir"
}
cleanup
trap cleanup EXIT
dir=$(mktemp -d)
ip link add skkc0 type bridge
ip link set skkc0 up
for i in $(seq "$N"); do echo "netns add skkc$i"; done > "$dir/netns"
for i in $(seq "$N"); do echo "link add skkv$i type veth peer name skkp$i netns skkc$i"; done > "$dir/veth"
for i in $(seq "$N"); do echo "link set skkv$i master skkc0 up"; done > "$dir/port"
for i in $(seq "$N"); do echo "addr add 10.253.$((i / 250)).$((i % 250 + 1))/32 dev skkc0"; done > "$dir/addr"
step() {
    start=$(date +%s%N)
    ip -batch "$dir/$1"
    end=$(date +%s%N)
    printf '%-44s %6d us each\n' "$2" $(((end - start) / N / 1000))
}
echo "$N of each, $(nproc) CPUs, $(uname -r)"
step netns "network namespace (ip netns add)"
step veth "veth pair, one end into the namespace"
step port "host end on the bridge and up"
step addr "a /32 address on the bridge"
