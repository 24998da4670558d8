// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_rtdeadlk - kdlgdb scenario: a recursive mutex_lock() through a helper.
 *
 *   kdl_rd:      mutex_lock(&cfg_lock); ...; kdl_cfg_get()  -> kdl_cfg_get() takes cfg_lock again
 *   kdl_rd_user: kdl_cfg_get()                             -> waits for cfg_lock behind kdl_rd
 *
 * kdl_cfg_get() is a helper whose callers must not hold cfg_lock; kdl_rd
 * forgets that while it updates the configuration. On a plain kernel kdl_rd
 * sleeps (D) in the mutex slow path, the mutex's owner being itself. On
 * PREEMPT_RT the mutex is an rt_mutex, whose early deadlock detection sees
 * the owner is the task itself (-EDEADLK): mutex_lock() does not ask for
 * deadlock detection, so rt_mutex_handle_deadlock() warns "rtmutex deadlock
 * detected" and parks the task (S) forever, out of the wait tree.
 *
 * kdl_rd is not in D on PREEMPT_RT, so /init does not wait for D states
 * (expected.json says "blocked_when_loaded"): init returns once both threads
 * have been stuck for a second, after printing "kdl-info parked".
 * Ground truth goes to the console as "kdl-truth ..." lines. No module_exit
 * on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/err.h>

static DEFINE_MUTEX(cfg_lock);	/* protects kdl_cfg */
static struct {
	int generation;
	int timeout_ms;
} kdl_cfg = { 0, 100 };

#define KDL_TRUTH_LOCK(sym, type) \
	pr_info("kdl-truth lock " #sym " " type " %px\n", &(sym))

/* The current timeout. Takes cfg_lock: callers must not hold it. */
static noinline int kdl_cfg_get(void)
{
	int timeout;

	mutex_lock(&cfg_lock);
	timeout = kdl_cfg.timeout_ms;
	mutex_unlock(&cfg_lock);
	return timeout;
}

static void kdl_idle_forever(void)
{
	for (;;)
		msleep_interruptible(60 * 1000);
}

static int kdl_rd_fn(void *unused)
{
	mutex_lock(&cfg_lock);
	kdl_cfg.generation++;
	if (kdl_cfg_get() < 10)		/* the bug: kdl_cfg_get() takes cfg_lock again */
		kdl_cfg.timeout_ms = 10;
	mutex_unlock(&cfg_lock);
	kdl_idle_forever();
	return 0;
}

static int kdl_rd_user_fn(void *unused)
{
	msleep(500);
	msleep(kdl_cfg_get());
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

static int __init kdl_rtdeadlk_init(void)
{
	KDL_TRUTH_LOCK(cfg_lock, "mutex");
	kdl_truth_task(kthread_run(kdl_rd_fn, NULL, "kdl_rd"), "kdl_rd");
	kdl_truth_task(kthread_run(kdl_rd_user_fn, NULL, "kdl_rd_user"), "kdl_rd_user");
	msleep(2000);
	pr_info("kdl-info parked\n");
	return 0;
}
module_init(kdl_rtdeadlk_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: a recursive mutex_lock through a helper");
