// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_chain - kdlgdb test scenario: wait chains whose root waits on no lock.
 *
 *   kdl_c1:  lock(m_c); wait_for_completion(&c_done)   -> nobody completes c_done
 *   kdl_c2:  msleep(500); lock(m_c)                     -> waits for m_c, owned by kdl_c1
 *   kdl_s1:  lock(m_s); msleep(100000) forever          -> D state, sleeping while holding m_s
 *   kdl_s2:  msleep(500); lock(m_s)                     -> waits for m_s, owned by kdl_s1
 *   kdl_io1: lock(m_io); io_schedule_timeout() forever  -> D state, in I/O wait while holding m_io
 *   kdl_io2: msleep(500); lock(m_io)                    -> waits for m_io, owned by kdl_io1
 *   kdl_w1:  lock(m_w); wait_event(w_wq, w_flag)        -> nobody wakes w_wq (w_flag stays 0)
 *   kdl_w2:  msleep(500); lock(m_w)                     -> waits for m_w, owned by kdl_w1
 *
 * No cycle: each chain ends at a task that waits on something that is not a
 * lock. Ground truth goes to the console as "kdl-truth ..." lines (the
 * completion and the wait queue head as "kdl-truth lock" lines of type
 * "completion" and "waitqueue"). No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/completion.h>
#include <linux/wait.h>
#include <linux/sched.h>
#include <linux/err.h>

static DEFINE_MUTEX(m_c);
static DEFINE_MUTEX(m_s);
static DEFINE_MUTEX(m_io);
static DEFINE_MUTEX(m_w);
static DECLARE_COMPLETION(c_done);
static DECLARE_WAIT_QUEUE_HEAD(w_wq);
static int w_flag;

#define KDL_TRUTH_LOCK(sym, type) \
	pr_info("kdl-truth lock " #sym " " type " %px\n", &(sym))

/* Where a thread goes once it got all its locks (never reached while the chains stand). */
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

static int kdl_c1_fn(void *unused)
{
	mutex_lock(&m_c);
	wait_for_completion(&c_done);	/* never completed */
	mutex_unlock(&m_c);
	kdl_idle_forever();
	return 0;
}

static int kdl_c2_fn(void *unused)
{
	msleep(500);
	mutex_lock(&m_c);
	mutex_unlock(&m_c);
	kdl_idle_forever();
	return 0;
}

static int kdl_s1_fn(void *unused)
{
	mutex_lock(&m_s);
	for (;;)
		msleep(100000);	/* uninterruptible sleep while holding m_s */
	return 0;
}

static int kdl_s2_fn(void *unused)
{
	msleep(500);
	mutex_lock(&m_s);
	mutex_unlock(&m_s);
	kdl_idle_forever();
	return 0;
}

static int kdl_io1_fn(void *unused)
{
	mutex_lock(&m_io);
	for (;;) {
		set_current_state(TASK_UNINTERRUPTIBLE);
		io_schedule_timeout(1000 * HZ);	/* I/O wait while holding m_io */
	}
	return 0;
}

static int kdl_io2_fn(void *unused)
{
	msleep(500);
	mutex_lock(&m_io);
	mutex_unlock(&m_io);
	kdl_idle_forever();
	return 0;
}

static int kdl_w1_fn(void *unused)
{
	mutex_lock(&m_w);
	wait_event(w_wq, READ_ONCE(w_flag));	/* nobody sets w_flag or wakes w_wq */
	mutex_unlock(&m_w);
	kdl_idle_forever();
	return 0;
}

static int kdl_w2_fn(void *unused)
{
	msleep(500);
	mutex_lock(&m_w);
	mutex_unlock(&m_w);
	kdl_idle_forever();
	return 0;
}

static int __init kdl_chain_init(void)
{
	KDL_TRUTH_LOCK(m_c, "mutex");
	KDL_TRUTH_LOCK(m_s, "mutex");
	KDL_TRUTH_LOCK(m_io, "mutex");
	KDL_TRUTH_LOCK(m_w, "mutex");
	KDL_TRUTH_LOCK(c_done, "completion");
	KDL_TRUTH_LOCK(w_wq, "waitqueue");
	kdl_truth_task(kthread_run(kdl_c1_fn, NULL, "kdl_c1"), "kdl_c1");
	kdl_truth_task(kthread_run(kdl_c2_fn, NULL, "kdl_c2"), "kdl_c2");
	kdl_truth_task(kthread_run(kdl_s1_fn, NULL, "kdl_s1"), "kdl_s1");
	kdl_truth_task(kthread_run(kdl_s2_fn, NULL, "kdl_s2"), "kdl_s2");
	kdl_truth_task(kthread_run(kdl_io1_fn, NULL, "kdl_io1"), "kdl_io1");
	kdl_truth_task(kthread_run(kdl_io2_fn, NULL, "kdl_io2"), "kdl_io2");
	kdl_truth_task(kthread_run(kdl_w1_fn, NULL, "kdl_w1"), "kdl_w1");
	kdl_truth_task(kthread_run(kdl_w2_fn, NULL, "kdl_w2"), "kdl_w2");
	return 0;
}
module_init(kdl_chain_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: wait chains rooted in a completion, a sleep, I/O and a wait queue");
