// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_inode - kdlgdb test scenario: real kernel locks in heap objects.
 *
 * The guest script (guest.sh) makes ext2 on /dev/ram0, mounts it on /mnt/data, writes
 * /mnt/data/app.log (inode 12 on a fresh ext2; the root directory is inode 2) and starts two
 * busybox processes that sleep, then write: kdl_ino_append appends to app.log (write() takes the
 * file's i_rwsem), kdl_ino_create creates /mnt/data/new.log (openat(O_CREAT) takes the directory's).
 *
 * This module is a small "log device" as drivers write one:
 *
 *   kdl_ino_holder: kdl_lock_path("/mnt/data"), kdl_lock_path("/mnt/data/app.log")
 *                   (each looks the path up with kern_path() and returns with inode_lock() held),
 *                   then sleeps in msleep() forever, holding both i_rwsem
 *   kdl_ino_scan:   kdl_dev_get(dev) (returns with dev->lock held; dev is kmalloc'd),
 *                   then inode_lock(dev->log)                     -> blocks behind the holder
 *   kdl_ino_cfg:    kdl_dev_get(dev)                              -> blocks behind kdl_ino_scan
 *
 * So the two i_rwsem live in ext4_inode_cache objects (ext2 is mounted by ext4 here) and dev->lock
 * in a kmalloc'd struct kdl_ino_dev: none has a symbol. Ground truth goes to the console as
 * "kdl-truth ..." lines. No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/completion.h>
#include <linux/fs.h>
#include <linux/namei.h>
#include <linux/path.h>

struct kdl_ino_dev {
	const char *name;
	struct mutex lock;	/* serialises scans of the log */
	struct inode *log;	/* the file the device logs to */
	int scans;
};

static struct kdl_ino_dev *kdl_ino_dev;
static DECLARE_COMPLETION(kdl_locked);	/* the holder has both inodes locked */
static DECLARE_COMPLETION(kdl_scanning);	/* kdl_ino_scan holds dev->lock */

/* Look a path up and return its inode with i_rwsem held for writing (and a reference on the path). */
static noinline struct inode *kdl_lock_path(const char *name)
{
	struct path path;
	struct inode *inode;
	int err = kern_path(name, LOOKUP_FOLLOW, &path);

	if (err) {
		pr_err("kdl-error cannot find %s: %d\n", name, err);
		return NULL;
	}
	inode = d_inode(path.dentry);
	inode_lock(inode);
	return inode;	/* the path stays referenced: the inode cannot go away */
}

/* Take dev->lock for a scan; the caller drops it with kdl_dev_put(). */
static noinline int kdl_dev_get(struct kdl_ino_dev *dev)
{
	mutex_lock(&dev->lock);
	dev->scans++;
	return 0;
}

static noinline void kdl_dev_put(struct kdl_ino_dev *dev)
{
	mutex_unlock(&dev->lock);
}

static void kdl_idle_forever(void)
{
	for (;;)
		msleep(60 * 1000);
}

static int kdl_ino_holder_fn(void *data)
{
	struct kdl_ino_dev *dev = data;
	struct inode *dir = kdl_lock_path("/mnt/data");
	struct inode *file = kdl_lock_path("/mnt/data/app.log");

	if (dir)
		pr_info("kdl-truth lock i_rwsem_dir rwsem %px\n", &dir->i_rwsem);
	if (file)
		pr_info("kdl-truth lock i_rwsem_file rwsem %px\n", &file->i_rwsem);
	if (dir && file)
		pr_info("kdl-info inodes dir %px ino %lu file %px ino %lu\n", dir, dir->i_ino, file, file->i_ino);
	dev->log = file;
	complete_all(&kdl_locked);
	kdl_idle_forever();	/* D in msleep(), holding both i_rwsem */
	return 0;
}

static int kdl_ino_scan_fn(void *data)
{
	struct kdl_ino_dev *dev = data;

	wait_for_completion(&kdl_locked);
	kdl_dev_get(dev);
	complete(&kdl_scanning);
	if (dev->log) {
		inode_lock(dev->log);
		inode_unlock(dev->log);
	}
	kdl_dev_put(dev);
	kdl_idle_forever();
	return 0;
}

static int kdl_ino_cfg_fn(void *data)
{
	struct kdl_ino_dev *dev = data;

	wait_for_completion(&kdl_scanning);
	msleep(100);
	if (!kdl_dev_get(dev))
		kdl_dev_put(dev);
	kdl_idle_forever();
	return 0;
}

static void kdl_truth_task(struct task_struct *t, const char *comm)
{
	if (IS_ERR(t))
		pr_err("kdl-error cannot start %s: %ld\n", comm, PTR_ERR(t));
	else
		pr_info("kdl-truth task %s %d\n", t->comm, t->pid);
}

static int __init kdl_inode_init(void)
{
	kdl_ino_dev = kzalloc(sizeof(*kdl_ino_dev), GFP_KERNEL);
	if (!kdl_ino_dev)
		return -ENOMEM;
	kdl_ino_dev->name = "kdl_ino0";
	mutex_init(&kdl_ino_dev->lock);
	pr_info("kdl-truth lock dev_lock mutex %px\n", &kdl_ino_dev->lock);
	pr_info("kdl-info object kdl_ino_dev %px size %zu\n", kdl_ino_dev, sizeof(*kdl_ino_dev));

	kdl_truth_task(kthread_run(kdl_ino_holder_fn, kdl_ino_dev, "kdl_ino_holder"), "kdl_ino_holder");
	wait_for_completion(&kdl_locked);
	kdl_truth_task(kthread_run(kdl_ino_scan_fn, kdl_ino_dev, "kdl_ino_scan"), "kdl_ino_scan");
	kdl_truth_task(kthread_run(kdl_ino_cfg_fn, kdl_ino_dev, "kdl_ino_cfg"), "kdl_ino_cfg");
	return 0;
}
module_init(kdl_inode_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: real kernel locks in heap objects (an inode's i_rwsem)");
