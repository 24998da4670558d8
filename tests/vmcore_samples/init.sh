#!/bin/busybox sh
# /init of a kdlgdb sample guest: initramfs.py fills in the @...@ words from the scenario
# (here @MODULE@ @ARGS@). Output goes to the serial console.
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 5 > /proc/sys/kernel/hung_task_timeout_secs
# The default allows one thread per 128 KiB of memory; kdl_scale starts up to 10,000 in less.
echo 100000 > /proc/sys/kernel/threads-max

park() { while :; do sleep 3600; done; }
# Every line the host reads goes through the kernel log: the kernel prints each record whole and in
# order. A plain echo to the console can land inside a kernel message, or a message inside it
# (PREEMPT_RT prints from a thread, late: kdl_scale's thousand kdl-truth lines were cut so).
# printk.devkmsg=on on the command line lifts the rate limit on /dev/kmsg.
say() { echo "$*" > /dev/kmsg; }

insmod /lib/modules/qemu_fw_cfg.ko || say "kdl-init: insmod qemu_fw_cfg failed, vmcoreinfo will be empty"
set -- $(grep -m1 ' _text$' /proc/kallsyms)
say "kdl-info text $1"
# A scenario may need the kernel's own modules (a RAM disk, a filesystem) and a script of its own
# (user processes, mounts) that runs before its module is loaded.
for m in @GUEST_MODULES@; do
    insmod /lib/modules/guest/$m.ko || say "KDL-ERROR insmod $m failed"
done
if [ -f /guest.sh ]; then
    . /guest.sh
fi
if ! insmod /lib/modules/@MODULE@.ko @ARGS@; then
    say "KDL-ERROR insmod @MODULE@ failed"
    park
fi
while read -r name size refs deps live addr rest; do
    [ "$name" = @MODULE@ ] && say "kdl-info module $name $addr $size"
done < /proc/modules
if [ @BLOCKED_WHEN_LOADED@ = yes ]; then
    say "KDL-BLOCKED"
    park
fi

# Sets KDL_N (number of kdl_* threads), KDL_NOTD (those not blocked: in D, or in the state expected.json gives
# a thread on this kernel), KDL_STATES.
kdl_scan() {
    KDL_N=0; KDL_NOTD=0; KDL_STATES=""
    for d in /proc/[0-9]*; do
        line=""
        read -r line 2>/dev/null < "$d/stat" || continue
        rest=${line#*(}; comm=${rest%%)*}
        st=${line##*) }; st=${st%% *}
        case "$comm" in
        kdl_*)
            KDL_N=$((KDL_N + 1))
            case "$comm:$st" in @BLOCKED@) ;; *) KDL_NOTD=$((KDL_NOTD + 1)) ;; esac
            KDL_STATES="$KDL_STATES $comm:$st"
            ;;
        esac
    done
}
all_blocked() { kdl_scan; [ "$KDL_N" -ge @NTHREADS@ ] && [ "$KDL_NOTD" -eq 0 ]; }

tries=0
while :; do
    # All in D may still mean "inside msleep": check again after 3 s.
    if all_blocked; then
        sleep 3
        if all_blocked; then break; fi
    fi
    tries=$((tries + 1))
    if [ "$tries" -ge 120 ]; then
        say "KDL-NOT-BLOCKED$KDL_STATES"
        park
    fi
    sleep 1
done

for d in /proc/[0-9]*; do
    read -r line 2>/dev/null < "$d/stat" || continue
    rest=${line#*(}; comm=${rest%%)*}
    st=${line##*) }; st=${st%% *}
    case "$comm" in
    kdl_*)
        read -r wchan 2>/dev/null < "$d/wchan"
        say "kdl-state ${d#/proc/} $comm $st ${wchan:-?}"
        while read -r frame; do
            say "kdl-stack $comm $frame"
        done < "$d/stack"
        ;;
    esac
done
say "KDL-BLOCKED"
park
