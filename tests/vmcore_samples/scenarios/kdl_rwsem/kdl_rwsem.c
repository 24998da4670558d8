// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_rwsem - kdlgdb test scenario: a cycle through a read-held rwsem and a
 * mutex, plus two bystanders.
 *
 *   kdl_r_reader: down_read(rw1); msleep(500); lock(mr)
 *                 -> waits for mr, owned by kdl_r_writer
 *   kdl_r_writer: lock(mr); msleep(500); down_write(rw1)
 *                 -> waits for rw1, read-held by kdl_r_reader
 *   kdl_r_w2:     down_write(rw2); msleep(1000); down_read(rw1)
 *                 -> waits for rw1 (queued behind the writer), holds rw2
 *   kdl_r_rd2:    msleep(1500); down_read(rw2)
 *                 -> waits for rw2, write-held by kdl_r_w2
 *
 * An rwsem records its writer but not its readers, so the edge through rw1
 * is inferred (verdict "probable"). Ground truth goes to the console as
 * "kdl-truth ..." lines. No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/rwsem.h>
#include <linux/err.h>

static DECLARE_RWSEM(rw1);
static DECLARE_RWSEM(rw2);
static DEFINE_MUTEX(mr);

#define KDL_TRUTH_LOCK(sym, type) \
	pr_info("kdl-truth lock " #sym " " type " %px\n", &(sym))

/* Where a thread goes once it got all its locks (never reached when deadlocked). */
static void kdl_idle_forever(void)
{
	for (;;)
		msleep_interruptible(60 * 1000);
}

/* Print the pid of a freshly started thread, or the error that stopped it. */
static void kdl_truth_task(struct task_struct *t, const char *comm)
{
	if (IS_ERR(t))
		pr_err("kdl-error cannot start %s: %ld\n", comm, PTR_ERR(t));
	else
		pr_info("kdl-truth task %s %d\n", t->comm, t->pid);
}

static int kdl_r_reader_fn(void *unused)
{
	down_read(&rw1);
	msleep(500);
	mutex_lock(&mr);
	mutex_unlock(&mr);
	up_read(&rw1);
	kdl_idle_forever();
	return 0;
}

static int kdl_r_writer_fn(void *unused)
{
	mutex_lock(&mr);
	msleep(500);
	down_write(&rw1);
	up_write(&rw1);
	mutex_unlock(&mr);
	kdl_idle_forever();
	return 0;
}

static int kdl_r_w2_fn(void *unused)
{
	down_write(&rw2);
	msleep(1000);
	down_read(&rw1);
	up_read(&rw1);
	up_write(&rw2);
	kdl_idle_forever();
	return 0;
}

static int kdl_r_rd2_fn(void *unused)
{
	msleep(1500);
	down_read(&rw2);
	up_read(&rw2);
	kdl_idle_forever();
	return 0;
}

static int __init kdl_rwsem_init(void)
{
	KDL_TRUTH_LOCK(rw1, "rwsem");
	KDL_TRUTH_LOCK(rw2, "rwsem");
	KDL_TRUTH_LOCK(mr, "mutex");
	kdl_truth_task(kthread_run(kdl_r_reader_fn, NULL, "kdl_r_reader"), "kdl_r_reader");
	kdl_truth_task(kthread_run(kdl_r_writer_fn, NULL, "kdl_r_writer"), "kdl_r_writer");
	kdl_truth_task(kthread_run(kdl_r_w2_fn, NULL, "kdl_r_w2"), "kdl_r_w2");
	kdl_truth_task(kthread_run(kdl_r_rd2_fn, NULL, "kdl_r_rd2"), "kdl_r_rd2");
	return 0;
}
module_init(kdl_rwsem_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: cycle through a read-held rwsem and a mutex");
