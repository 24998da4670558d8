# kdl_freeze's guest: an ext2 filesystem on a RAM disk, frozen as a backup tool freezes it
# (fsfreeze --freeze, the FIFREEZE ioctl), and two processes that write to it while it is frozen:
# one opened its file before the freeze and blocks in write(), the other blocks creating a file
# in openat(). Sourced by /init before the kdl_freeze module is loaded; `say` writes to the kernel log.
mke2fs -q /dev/ram0 || say "KDL-ERROR mke2fs /dev/ram0 failed"
mkdir -p /mnt/data
mount -t ext2 /dev/ram0 /mnt/data || say "KDL-ERROR mount /dev/ram0 failed"
echo "first line" > /mnt/data/app.log
sync
# Each writer is a busybox shell whose name (comm) is its own: exec'd through a link of that name.
ln -s busybox /bin/kdl_fz_append
ln -s busybox /bin/kdl_fz_create
exec -a sh /bin/kdl_fz_append -c 'exec 3>> /mnt/data/app.log; sleep 2; echo "second line" >&3' &
say "kdl-truth task kdl_fz_append $!"
n=0
while [ ! -e /proc/$!/fd/3 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done  # opened before the freeze
fsfreeze --freeze /mnt/data || say "KDL-ERROR fsfreeze failed"
exec -a sh /bin/kdl_fz_create -c ': > /mnt/data/new.log' &
say "kdl-truth task kdl_fz_create $!"
