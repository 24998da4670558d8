// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_control - kdlgdb negative control: a wait chain without a cycle.
 *
 *   kdl_c_owner: lock(mc); then msleep(100000) forever (D state, holding mc)
 *   kdl_c_w1:    msleep(500); lock(mc)   -> waits for mc, owned by kdl_c_owner
 *   kdl_c_w2:    msleep(700); lock(mc)   -> waits for mc, owned by kdl_c_owner
 *
 * Every thread ends in D state, but nothing is deadlocked: a debugger must
 * report the chain and no cycle. Ground truth goes to the console as
 * "kdl-truth ..." lines. No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/err.h>

static DEFINE_MUTEX(mc);

#define KDL_TRUTH_LOCK(sym, type) \
	pr_info("kdl-truth lock " #sym " " type " %px\n", &(sym))

/* Where a thread goes once it got all its locks (never reached while mc is held). */
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

static int kdl_c_owner_fn(void *unused)
{
	mutex_lock(&mc);
	for (;;)
		msleep(100000);	/* uninterruptible sleep while holding mc */
	return 0;
}

static int kdl_c_w1_fn(void *unused)
{
	msleep(500);
	mutex_lock(&mc);
	mutex_unlock(&mc);
	kdl_idle_forever();
	return 0;
}

static int kdl_c_w2_fn(void *unused)
{
	msleep(700);
	mutex_lock(&mc);
	mutex_unlock(&mc);
	kdl_idle_forever();
	return 0;
}

static int __init kdl_control_init(void)
{
	KDL_TRUTH_LOCK(mc, "mutex");
	kdl_truth_task(kthread_run(kdl_c_owner_fn, NULL, "kdl_c_owner"), "kdl_c_owner");
	kdl_truth_task(kthread_run(kdl_c_w1_fn, NULL, "kdl_c_w1"), "kdl_c_w1");
	kdl_truth_task(kthread_run(kdl_c_w2_fn, NULL, "kdl_c_w2"), "kdl_c_w2");
	return 0;
}
module_init(kdl_control_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb negative control: a mutex wait chain without a cycle");
