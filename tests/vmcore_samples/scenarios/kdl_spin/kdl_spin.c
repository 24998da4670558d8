// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_spin - kdlgdb test scenario: spinlock ABBA across two CPUs.
 *
 *   kdl_spin_a (bound to CPU 0): lock(lock_a); barrier; lock(lock_b)  -> spins on lock_b
 *   kdl_spin_b (bound to CPU 1): lock(lock_b); barrier; lock(lock_a)  -> spins on lock_a
 *
 * The barrier makes each thread hold its first lock before either takes its
 * second. Both CPUs then spin forever with preemption off (interrupts stay
 * on), so nothing else runs on them: user space starves. The module prints
 * its truth from init, and the threads start locking 2 s after init
 * returned, once /init has printed KDL-BLOCKED (expected.json says
 * "blocked_when_loaded"). The second thread to pass the barrier prints
 * "kdl-info spinning" on its way into its second spin_lock(), for the builder
 * and the live tests to wait for. (A timer would not do: once a softirq has
 * been handed to ksoftirqd, it never runs on a CPU that spins with
 * preemption off, and the marker was lost in about one boot in twenty.)
 *
 * On PREEMPT_RT spinlock_t is an rt_mutex: the same code is a sleeping ABBA.
 * No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/spinlock.h>
#include <linux/atomic.h>
#include <linux/err.h>

static DEFINE_SPINLOCK(lock_a);
static DEFINE_SPINLOCK(lock_b);
static atomic_t kdl_first_taken = ATOMIC_INIT(0);
static atomic_t kdl_second_tried = ATOMIC_INIT(0);

#define KDL_TRUTH_LOCK(sym, type) \
	pr_info("kdl-truth lock " #sym " " type " %px\n", &(sym))

static void kdl_idle_forever(void)
{
	for (;;)
		msleep_interruptible(60 * 1000);
}

/* Both threads hold their first lock before either takes its second. */
static void kdl_barrier(void)
{
	atomic_inc(&kdl_first_taken);
	while (atomic_read(&kdl_first_taken) < 2)
		cpu_relax();
	if (atomic_inc_return(&kdl_second_tried) == 2)
		pr_info("kdl-info spinning\n");
}

static int kdl_spin_a_fn(void *unused)
{
	msleep(2000);
	spin_lock(&lock_a);
	kdl_barrier();
	spin_lock(&lock_b);
	spin_unlock(&lock_b);
	spin_unlock(&lock_a);
	kdl_idle_forever();
	return 0;
}

static int kdl_spin_b_fn(void *unused)
{
	msleep(2000);
	spin_lock(&lock_b);
	kdl_barrier();
	spin_lock(&lock_a);
	spin_unlock(&lock_a);
	spin_unlock(&lock_b);
	kdl_idle_forever();
	return 0;
}

static struct task_struct *kdl_start_on(int (*fn)(void *), const char *comm, int cpu)
{
	struct task_struct *t = kthread_create(fn, NULL, "%s", comm);

	if (IS_ERR(t)) {
		pr_err("kdl-error cannot start %s: %ld\n", comm, PTR_ERR(t));
		return t;
	}
	kthread_bind(t, cpu);
	pr_info("kdl-truth task %s %d\n", t->comm, t->pid);
	pr_info("kdl-truth cpu %s %d\n", t->comm, cpu);
	return t;
}

static int __init kdl_spin_init(void)
{
	struct task_struct *a, *b;

	KDL_TRUTH_LOCK(lock_a, "spinlock");
	KDL_TRUTH_LOCK(lock_b, "spinlock");
	a = kdl_start_on(kdl_spin_a_fn, "kdl_spin_a", 0);
	b = kdl_start_on(kdl_spin_b_fn, "kdl_spin_b", 1);
	if (IS_ERR(a) || IS_ERR(b))
		return 0;
	wake_up_process(a);
	wake_up_process(b);
	return 0;
}
module_init(kdl_spin_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: spinlock ABBA across two CPUs");
