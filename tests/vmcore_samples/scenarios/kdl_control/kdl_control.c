// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_control - kdlgdb negative control: a wait chain without a cycle.
 *
 *   kdl_c_owner: lock(mc); then msleep(100000) forever (D state, holding mc)
 *   kdl_c_w1:    msleep(500); lock(mc)   -> waits for mc, owned by kdl_c_owner
 *   kdl_c_w2:    msleep(700); lock(mc)   -> waits for mc, owned by kdl_c_owner
 *   kdl_c_idle:  a service thread with no work: sleeps in TASK_IDLE (I, not D)
 *   kdl_c_frzidle: the same, freezable, the way nfsd's threads wait in svc_recv():
 *                TASK_IDLE | TASK_FREEZABLE. ps shows I since "sched/core: Report
 *                correct state for TASK_IDLE | TASK_FREEZABLE"; a state compared
 *                with TASK_IDLE exactly reads D.
 *
 * The mutex's three threads end in D state, but nothing is deadlocked: a
 * debugger must report the chain and no cycle, and the idle threads in no
 * list of blocked tasks. Ground truth goes to the console as "kdl-truth ..."
 * lines. No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/err.h>
#include <linux/freezer.h>
#include <linux/sched.h>

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

/* Wait in @state for work (none ever comes) until asked to stop. */
static int kdl_serve(unsigned int state)
{
	for (;;) {
		set_current_state(state);
		if (kthread_should_stop())
			break;
		schedule();
	}
	__set_current_state(TASK_RUNNING);
	return 0;
}

static int kdl_c_idle_fn(void *unused)
{
	return kdl_serve(TASK_IDLE);
}

/* TASK_FREEZABLE, 0x2000 since the freezer rewrite (f5d39b020809, v6.1): in 6.1 and 6.12 alike. */
static int kdl_c_frzidle_fn(void *unused)
{
	set_freezable();
	return kdl_serve(TASK_IDLE | TASK_FREEZABLE);
}

static int __init kdl_control_init(void)
{
	KDL_TRUTH_LOCK(mc, "mutex");
	kdl_truth_task(kthread_run(kdl_c_owner_fn, NULL, "kdl_c_owner"), "kdl_c_owner");
	kdl_truth_task(kthread_run(kdl_c_w1_fn, NULL, "kdl_c_w1"), "kdl_c_w1");
	kdl_truth_task(kthread_run(kdl_c_w2_fn, NULL, "kdl_c_w2"), "kdl_c_w2");
	kdl_truth_task(kthread_run(kdl_c_idle_fn, NULL, "kdl_c_idle"), "kdl_c_idle");
	kdl_truth_task(kthread_run(kdl_c_frzidle_fn, NULL, "kdl_c_frzidle"), "kdl_c_frzidle");
	return 0;
}
module_init(kdl_control_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb negative control: a mutex wait chain without a cycle, and idle threads");
