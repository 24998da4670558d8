// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_mutex - kdlgdb test scenario: ABBA deadlock on two mutexes, plus a
 * bystander queued behind the cycle.
 *
 *   kdl_m1: lock(m1); msleep(500); lock(m2)   -> waits for m2, owned by kdl_m2
 *   kdl_m2: lock(m2); msleep(500); lock(m1)   -> waits for m1, owned by kdl_m1
 *   kdl_m3: msleep(1500); lock(m1)            -> waits for m1 (not in the cycle)
 *
 * A mutex records its owner, so every edge of the cycle is known to the
 * kernel (verdict "deadlock"). Ground truth goes to the console as
 * "kdl-truth ..." lines. No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/err.h>

static DEFINE_MUTEX(m1);
static DEFINE_MUTEX(m2);

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

static int kdl_m1_fn(void *unused)
{
	mutex_lock(&m1);
	msleep(500);
	mutex_lock(&m2);
	mutex_unlock(&m2);
	mutex_unlock(&m1);
	kdl_idle_forever();
	return 0;
}

static int kdl_m2_fn(void *unused)
{
	mutex_lock(&m2);
	msleep(500);
	mutex_lock(&m1);
	mutex_unlock(&m1);
	mutex_unlock(&m2);
	kdl_idle_forever();
	return 0;
}

static int kdl_m3_fn(void *unused)
{
	msleep(1500);
	mutex_lock(&m1);
	mutex_unlock(&m1);
	kdl_idle_forever();
	return 0;
}

static int __init kdl_mutex_init(void)
{
	KDL_TRUTH_LOCK(m1, "mutex");
	KDL_TRUTH_LOCK(m2, "mutex");
	kdl_truth_task(kthread_run(kdl_m1_fn, NULL, "kdl_m1"), "kdl_m1");
	kdl_truth_task(kthread_run(kdl_m2_fn, NULL, "kdl_m2"), "kdl_m2");
	kdl_truth_task(kthread_run(kdl_m3_fn, NULL, "kdl_m3"), "kdl_m3");
	return 0;
}
module_init(kdl_mutex_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: ABBA deadlock on two mutexes");
