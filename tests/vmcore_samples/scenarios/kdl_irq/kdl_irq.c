// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_irq - kdlgdb test scenario: a spinlock taken in process context without
 * disabling interrupts, and again by a timer callback on the same CPU.
 *
 *   kdl_irq (bound to CPU 0): spin_lock(&l); arm a timer on CPU 0; busy-wait holding l
 *   timer callback (softirq on CPU 0, on top of kdl_irq): spin_lock(&l)  -> spins forever
 *
 * The callback interrupts the very task that holds l: CPU 0 is dead. The fix
 * is spin_lock_bh(&l) (or spin_lock_irqsave) in kdl_irq_fn. CPU 1 stays free.
 * init returns once the callback runs, and prints the pid it runs on behalf
 * of (kdl_irq itself; on PREEMPT_RT the timer thread, which then sleeps on l
 * while kdl_irq keeps running). No module_exit on purpose.
 *
 * A softirq that the kernel has handed to ksoftirqd/0 never runs while
 * kdl_irq spins on CPU 0 with preemption off (irq exit leaves pending
 * softirqs to a ksoftirqd that is already runnable). Under a loaded host that
 * happened, and the callback never ran. So kdl_irq waits for the callback to
 * start for at most a second; if it has not, it takes the timer back, drops
 * l, sleeps (ksoftirqd/0 catches up) and tries again.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/spinlock.h>
#include <linux/timer.h>
#include <linux/completion.h>
#include <linux/sched.h>
#include <linux/err.h>
#include <linux/atomic.h>
#include <linux/jiffies.h>

static DEFINE_SPINLOCK(l);
static struct timer_list kdl_timer;
static DECLARE_COMPLETION(kdl_timer_ran);
static atomic_t kdl_timer_started = ATOMIC_INIT(0);
static char kdl_timer_comm[TASK_COMM_LEN];
static int kdl_timer_pid;

static void kdl_irq_timer_fn(struct timer_list *unused)
{
	strscpy(kdl_timer_comm, current->comm, sizeof(kdl_timer_comm));
	kdl_timer_pid = current->pid;
	atomic_set(&kdl_timer_started, 1);
	complete(&kdl_timer_ran);
	spin_lock(&l);
	spin_unlock(&l);
}

/* The retry's release, out of line: kdl_irq_fn's own code has no unlock of l after its spin_lock(). */
static noinline void kdl_irq_retry(void)
{
	spin_unlock(&l);
	msleep(100);
}

static int kdl_irq_fn(void *unused)
{
	unsigned long give_up;

	for (;;) {
		spin_lock(&l);
		kdl_timer.expires = jiffies + 1;
		add_timer_on(&kdl_timer, 0);
		give_up = jiffies + HZ;
		while (!atomic_read(&kdl_timer_started) && time_before(jiffies, give_up))
			cpu_relax();
		if (atomic_read(&kdl_timer_started) || !del_timer(&kdl_timer))
			break;	/* the callback is on its way: it spins on l from now on */
		kdl_irq_retry();
	}
	for (;;)
		cpu_relax();
	spin_unlock(&l);
	return 0;
}

static int __init kdl_irq_init(void)
{
	struct task_struct *t;

	pr_info("kdl-truth lock l spinlock %px\n", &l);
	timer_setup(&kdl_timer, kdl_irq_timer_fn, 0);
	t = kthread_create(kdl_irq_fn, NULL, "kdl_irq");
	if (IS_ERR(t)) {
		pr_err("kdl-error cannot start kdl_irq: %ld\n", PTR_ERR(t));
		return 0;
	}
	kthread_bind(t, 0);
	pr_info("kdl-truth task %s %d\n", t->comm, t->pid);
	pr_info("kdl-truth cpu %s 0\n", t->comm);
	wake_up_process(t);
	if (!wait_for_completion_timeout(&kdl_timer_ran, 30 * HZ)) {
		pr_err("kdl-error the timer callback never ran\n");
		return 0;
	}
	pr_info("kdl-truth task %s %d\n", kdl_timer_comm, kdl_timer_pid);
	return 0;
}
module_init(kdl_irq_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: spinlock taken by a timer callback on the CPU that holds it");
