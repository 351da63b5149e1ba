#!/bin/sh
# /init of the IPIP test VM, built by lab/tests/ipip_qemu.rs: loads the modules the test
# needs (ipip brings tunl0), runs IPIP clusters with the real binaries (the demo, then the test
# binary's in-VM scenarios: pool mode changes, CrossSubnet across two segments), prints one
# result line the host test looks for, and powers off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /var && ln -s /run /var/run
while read -r m; do
    insmod "/modules/$m" || echo "brindle-vm: insmod $m failed"
done < /modules/order
ip link set lo up
echo "brindle-vm: kernel $(uname -r); $(ip -o link show tunl0 || echo 'no tunl0')"

export BRINDLE_LAB_KEEP_LOGS=1
if brindle-lab demo --nodes 2 --pods-per-node 1 --encap ipip; then
    # The datastore outlives the demo (BRINDLE_LAB_KEEP_LOGS): the nodes' IPIP tunnel
    # addresses, and IPAM's view of them.
    for store in /tmp/brindle-lab-*/store.db; do
        brindlectl --datastore "embedded:$store" get nodes
        brindlectl --datastore "embedded:$store" ipam check
    done
    rm -rf /tmp/brindle-lab-*
    # Then the test binary's own in-VM scenarios: pool mode changes under a running ping, and
    # CrossSubnet on two segments joined by a router.
    if BRINDLE_IN_VM=1 ipip-scenarios --include-ignored --exact --nocapture --test-threads 1 \
        in_vm_pool_mode_changes_move_traffic_without_losing_reachability \
        in_vm_cross_subnet_tunnels_only_between_segments; then
        echo "BRINDLE-VM-RESULT: PASS"
    else
        for log in /tmp/brindle-lab-*/*.log; do
            echo "== $log"
            tail -n 30 "$log"
        done
        echo "BRINDLE-VM-RESULT: FAIL (in-VM scenarios)"
    fi
else
    for log in /tmp/brindle-lab-*/*.log; do
        echo "== $log"
        tail -n 30 "$log"
    done
    echo "BRINDLE-VM-RESULT: FAIL"
fi
poweroff -f
