// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_spinjob - kdlgdb scenario: spinlock ABBA through pointers held in a structure.
 *
 * Two queues live in kmalloc'd structs, each with its own spinlock. A
 * transfer job names its source and destination queue; kdl_xfer() locks the
 * source, then the destination (spin_lock(&job->src->lock), no static lock
 * anywhere). Two jobs move items in opposite directions, one per CPU:
 *
 *   kdl_job_ab (CPU 0): lock(qa->lock); barrier; lock(qb->lock)  -> spins on qb->lock
 *   kdl_job_ba (CPU 1): lock(qb->lock); barrier; lock(qa->lock)  -> spins on qa->lock
 *
 * A spinlock records no owner, and no code names these locks as a constant:
 * the holders are only in the CPUs' registers and on their stacks. Both CPUs
 * spin forever with preemption off. The second job to reach the barrier
 * prints "kdl-info spinning" on its way into its second spin_lock() (a timer
 * would not do: a softirq deferred to ksoftirqd never runs on a CPU that
 * spins), and init prints the truth first (expected.json says
 * "blocked_when_loaded"). On PREEMPT_RT spinlock_t is an rt_mutex: the same
 * code is a sleeping ABBA whose owners are recorded.
 * No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/spinlock.h>
#include <linux/slab.h>
#include <linux/atomic.h>
#include <linux/err.h>

struct kdl_queue {
	const char *name;
	spinlock_t lock;	/* protects items */
	int items;
};

struct kdl_job {
	struct kdl_queue *src;
	struct kdl_queue *dst;
	int count;
};

static struct kdl_queue *qa, *qb;
static struct kdl_job *job_ab, *job_ba;
static atomic_t kdl_first_taken = ATOMIC_INIT(0);
static atomic_t kdl_second_tried = ATOMIC_INIT(0);

static void kdl_idle_forever(void)
{
	for (;;)
		msleep_interruptible(60 * 1000);
}

/* Both jobs hold their source queue before either locks its destination. */
static void kdl_barrier(void)
{
	atomic_inc(&kdl_first_taken);
	while (atomic_read(&kdl_first_taken) < 2)
		cpu_relax();
	if (atomic_inc_return(&kdl_second_tried) == 2)
		pr_info("kdl-info spinning\n");
}

/* Move job->count items from job->src to job->dst, both locked. */
static noinline void kdl_xfer(struct kdl_job *job)
{
	struct kdl_queue *src = job->src, *dst = job->dst;
	int n = min(job->count, src->items);

	spin_lock(&src->lock);
	kdl_barrier();
	spin_lock(&dst->lock);
	src->items -= n;
	dst->items += n;
	spin_unlock(&dst->lock);
	spin_unlock(&src->lock);
}

static int kdl_job_ab_fn(void *data)
{
	msleep(2000);
	kdl_xfer(data);
	kdl_idle_forever();
	return 0;
}

static int kdl_job_ba_fn(void *data)
{
	msleep(2000);
	kdl_xfer(data);
	kdl_idle_forever();
	return 0;
}

static struct task_struct *kdl_start_on(int (*fn)(void *), struct kdl_job *job, const char *comm, int cpu)
{
	struct task_struct *t = kthread_create(fn, job, "%s", comm);

	if (IS_ERR(t)) {
		pr_err("kdl-error cannot start %s: %ld\n", comm, PTR_ERR(t));
		return t;
	}
	kthread_bind(t, cpu);
	pr_info("kdl-truth task %s %d\n", t->comm, t->pid);
	pr_info("kdl-truth cpu %s %d\n", t->comm, cpu);
	return t;
}

static struct kdl_queue *kdl_queue_new(const char *name, int items)
{
	struct kdl_queue *q = kzalloc(sizeof(*q), GFP_KERNEL);

	if (q) {
		q->name = name;
		spin_lock_init(&q->lock);
		q->items = items;
	}
	return q;
}

static int __init kdl_spinjob_init(void)
{
	struct task_struct *a, *b;

	qa = kdl_queue_new("qa", 10);
	qb = kdl_queue_new("qb", 10);
	job_ab = kzalloc(sizeof(*job_ab), GFP_KERNEL);
	job_ba = kzalloc(sizeof(*job_ba), GFP_KERNEL);
	if (!qa || !qb || !job_ab || !job_ba)
		return -ENOMEM;
	*job_ab = (struct kdl_job){ .src = qa, .dst = qb, .count = 3 };
	*job_ba = (struct kdl_job){ .src = qb, .dst = qa, .count = 4 };
	pr_info("kdl-truth lock qa_lock spinlock %px\n", &qa->lock);
	pr_info("kdl-truth lock qb_lock spinlock %px\n", &qb->lock);
	a = kdl_start_on(kdl_job_ab_fn, job_ab, "kdl_job_ab", 0);
	b = kdl_start_on(kdl_job_ba_fn, job_ba, "kdl_job_ba", 1);
	if (IS_ERR(a) || IS_ERR(b))
		return 0;
	wake_up_process(a);
	wake_up_process(b);
	return 0;
}
module_init(kdl_spinjob_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: spinlock ABBA through pointers held in a structure");
