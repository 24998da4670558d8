// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_rtmutex - kdlgdb test scenario: ABBA deadlock on two rt_mutexes, plus a
 * bystander queued behind the cycle.
 *
 *   kdl_rt1: lock(r1); msleep(500); lock(r2)   -> waits for r2, owned by kdl_rt2
 *   kdl_rt2: lock(r2); msleep(500); lock(r1)   -> waits for r1, owned by kdl_rt1
 *   kdl_rt3: msleep(1500); lock(r1)            -> waits for r1 (not in the cycle)
 *
 * An rt_mutex records its owner (rt_mutex_base.owner) and queues its waiters
 * in a red-black tree, on every kernel with CONFIG_RT_MUTEXES (rt_mutex_lock
 * is exported GPL), so every edge of the cycle is known to the kernel
 * (verdict "deadlock"). Ground truth goes to the console as
 * "kdl-truth ..." lines. No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/rtmutex.h>
#include <linux/err.h>

static DEFINE_RT_MUTEX(r1);
static DEFINE_RT_MUTEX(r2);

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

static int kdl_rt1_fn(void *unused)
{
	rt_mutex_lock(&r1);
	msleep(500);
	rt_mutex_lock(&r2);
	rt_mutex_unlock(&r2);
	rt_mutex_unlock(&r1);
	kdl_idle_forever();
	return 0;
}

static int kdl_rt2_fn(void *unused)
{
	rt_mutex_lock(&r2);
	msleep(500);
	rt_mutex_lock(&r1);
	rt_mutex_unlock(&r1);
	rt_mutex_unlock(&r2);
	kdl_idle_forever();
	return 0;
}

static int kdl_rt3_fn(void *unused)
{
	msleep(1500);
	rt_mutex_lock(&r1);
	rt_mutex_unlock(&r1);
	kdl_idle_forever();
	return 0;
}

static int __init kdl_rtmutex_init(void)
{
	KDL_TRUTH_LOCK(r1, "rt_mutex");
	KDL_TRUTH_LOCK(r2, "rt_mutex");
	kdl_truth_task(kthread_run(kdl_rt1_fn, NULL, "kdl_rt1"), "kdl_rt1");
	kdl_truth_task(kthread_run(kdl_rt2_fn, NULL, "kdl_rt2"), "kdl_rt2");
	kdl_truth_task(kthread_run(kdl_rt3_fn, NULL, "kdl_rt3"), "kdl_rt3");
	return 0;
}
module_init(kdl_rtmutex_init);

MODULE_LICENSE("GPL");  /* rt_mutex_lock is EXPORT_SYMBOL_GPL */
MODULE_DESCRIPTION("kdlgdb test scenario: ABBA deadlock on two rt_mutexes");
