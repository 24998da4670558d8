// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_freeze - kdlgdb test scenario: writers blocked on a frozen filesystem.
 *
 * The guest script (guest.sh) makes an ext2 filesystem on /dev/ram0, mounts it on /mnt/data,
 * freezes it with fsfreeze --freeze and starts two processes that write to it. This module
 * only tells the truth: the superblock's sb_writers percpu rw-semaphore the writers wait on
 * (s_writers.rw_sem[SB_FREEZE_WRITE - 1]). No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/fs.h>
#include <linux/namei.h>
#include <linux/path.h>

/* Not __init: the module keeps text of its own (6.12's /proc/modules shows 0 for a module without). */
static noinline int kdl_freeze_truth(void)
{
	struct path path;
	int err = kern_path("/mnt/data", LOOKUP_FOLLOW, &path);

	if (err) {
		pr_err("kdl-error cannot find /mnt/data: %d\n", err);
		return err;
	}
	pr_info("kdl-truth lock sb_writers percpu_rwsem %px\n",
		&path.dentry->d_sb->s_writers.rw_sem[SB_FREEZE_WRITE - 1]);
	path_put(&path);
	return 0;
}

static int __init kdl_freeze_init(void)
{
	return kdl_freeze_truth();
}
module_init(kdl_freeze_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: writers blocked on a frozen filesystem");
