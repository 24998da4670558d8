# kdl_inode's guest: an ext2 filesystem on a RAM disk with one file, and two busybox processes that
# will write to it once the kdl_inode module's holder has locked the file's and the directory's inode
# (inode_lock(): i_rwsem for writing). Started before the module is loaded; each sleeps first, so
# they block in the VFS: one in write() (the file's i_rwsem), one in openat(O_CREAT) (the directory's).
# Sourced by /init; `say` writes to the kernel log.
mke2fs -q /dev/ram0 || say "KDL-ERROR mke2fs /dev/ram0 failed"
mkdir -p /mnt/data
mount -t ext2 /dev/ram0 /mnt/data || say "KDL-ERROR mount /dev/ram0 failed"
echo "first line" > /mnt/data/app.log
sync
# Each writer is a busybox shell whose name (comm) is its own: exec'd through a link of that name.
ln -s busybox /bin/kdl_ino_append
ln -s busybox /bin/kdl_ino_create
exec -a sh /bin/kdl_ino_append -c 'exec 3>> /mnt/data/app.log; sleep 4; echo "second line" >&3' &
say "kdl-truth task kdl_ino_append $!"
n=0
while [ ! -e /proc/$!/fd/3 ] && [ $n -lt 100 ]; do sleep 0.1; n=$((n + 1)); done  # opened before the lock
exec -a sh /bin/kdl_ino_create -c 'sleep 4; : > /mnt/data/new.log' &
say "kdl-truth task kdl_ino_create $!"
