// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_flush - kdlgdb test scenario: waits for work items, written the way a driver writes them.
 *
 * One kmalloc'd struct kdl_dev holds the driver's mutexes, its work items and its own
 * workqueue ("kdl_wq"); every thread reaches them through a pointer, and the locks are
 * taken in small helpers that return with the lock held.
 *
 *   kdl_reset:   kdl_dev_lock(dev); schedule_work(reset_work); flush_work(reset_work)
 *                reset_work's function (kdl_reset_work) takes dev->lock: the flusher waits for the kworker running
 *                it, the kworker waits for the flusher's mutex. The classic flush_work deadlock.
 *   kdl_holder:  takes dev->stats_lock, then waits for kdl_never (nobody completes it): a root.
 *   kdl_flusher: queues stats_work on kdl_wq and flush_work()s it; stats_work's function blocks on
 *                dev->stats_lock: a chain through a work item to kdl_holder.
 *   kdl_cancel:  queues poll_work on kdl_wq and cancel_work_sync()s it while it runs (it blocks on
 *                dev->stats_lock too).
 *   kdl_drain:   flush_workqueue(kdl_wq) while stats_work and poll_work run.
 *   kdl_ordflush: queues ord_a then ord_b on an ordered workqueue ("kdl_ordered") and flush_work()s
 *                ord_b, which cannot start: ord_a runs first and blocks on dev->stats_lock.
 *
 * The kworkers print "kdl-truth task kworker_<work> PID" when their work starts. Ground truth goes
 * to the console as "kdl-truth ..." lines. No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/completion.h>
#include <linux/workqueue.h>
#include <linux/slab.h>
#include <linux/sched.h>
#include <linux/err.h>

struct kdl_dev {
	int id;
	struct mutex lock;		/* the device's state */
	struct mutex stats_lock;	/* its counters */
	unsigned long resets;
	struct work_struct reset_work;	/* on system_wq ("events") */
	struct work_struct stats_work;	/* on dev->wq */
	struct work_struct poll_work;	/* on dev->wq */
	struct work_struct ord_a;	/* on dev->ordered, one at a time */
	struct work_struct ord_b;
	struct workqueue_struct *wq;
	struct workqueue_struct *ordered;
};

static DECLARE_COMPLETION(kdl_never);
static struct kdl_dev *kdl_the_dev;

static void kdl_dev_lock(struct kdl_dev *dev)
{
	mutex_lock(&dev->lock);
}

static void kdl_dev_unlock(struct kdl_dev *dev)
{
	mutex_unlock(&dev->lock);
}

static void kdl_reset_work(struct work_struct *work)
{
	struct kdl_dev *dev = container_of(work, struct kdl_dev, reset_work);

	pr_info("kdl-truth task kworker_reset %d\n", current->pid);
	kdl_dev_lock(dev);
	dev->resets++;
	kdl_dev_unlock(dev);
}

static void kdl_stats_work(struct work_struct *work)
{
	struct kdl_dev *dev = container_of(work, struct kdl_dev, stats_work);

	pr_info("kdl-truth task kworker_stats %d\n", current->pid);
	mutex_lock(&dev->stats_lock);
	mutex_unlock(&dev->stats_lock);
}

static void kdl_poll_work(struct work_struct *work)
{
	struct kdl_dev *dev = container_of(work, struct kdl_dev, poll_work);

	pr_info("kdl-truth task kworker_poll %d\n", current->pid);
	mutex_lock(&dev->stats_lock);
	mutex_unlock(&dev->stats_lock);
}

static void kdl_ord_a_work(struct work_struct *work)
{
	struct kdl_dev *dev = container_of(work, struct kdl_dev, ord_a);

	pr_info("kdl-truth task kworker_ord %d\n", current->pid);
	mutex_lock(&dev->stats_lock);
	mutex_unlock(&dev->stats_lock);
}

static void kdl_ord_b_work(struct work_struct *work)
{
	struct kdl_dev *dev = container_of(work, struct kdl_dev, ord_b);

	dev->resets++;
}

/* Where a thread goes once it is done (never reached while the waits stand). */
static void kdl_idle_forever(void)
{
	for (;;)
		msleep_interruptible(60 * 1000);
}

static int kdl_reset_fn(void *data)
{
	struct kdl_dev *dev = data;

	kdl_dev_lock(dev);
	schedule_work(&dev->reset_work);
	msleep(400);			/* the kworker is in kdl_reset_work, blocked on dev->lock */
	flush_work(&dev->reset_work);
	kdl_dev_unlock(dev);
	kdl_idle_forever();
	return 0;
}

static int kdl_holder_fn(void *data)
{
	struct kdl_dev *dev = data;

	mutex_lock(&dev->stats_lock);
	wait_for_completion(&kdl_never);
	mutex_unlock(&dev->stats_lock);
	kdl_idle_forever();
	return 0;
}

static int kdl_flusher_fn(void *data)
{
	struct kdl_dev *dev = data;

	msleep(300);
	queue_work(dev->wq, &dev->stats_work);
	msleep(300);
	flush_work(&dev->stats_work);
	kdl_idle_forever();
	return 0;
}

static int kdl_cancel_fn(void *data)
{
	struct kdl_dev *dev = data;

	msleep(500);
	queue_work(dev->wq, &dev->poll_work);
	msleep(300);
	cancel_work_sync(&dev->poll_work);
	kdl_idle_forever();
	return 0;
}

static int kdl_drain_fn(void *data)
{
	struct kdl_dev *dev = data;

	msleep(1200);
	flush_workqueue(dev->wq);
	kdl_idle_forever();
	return 0;
}

static int kdl_ordflush_fn(void *data)
{
	struct kdl_dev *dev = data;

	msleep(300);
	queue_work(dev->ordered, &dev->ord_a);
	msleep(300);
	queue_work(dev->ordered, &dev->ord_b);
	msleep(100);
	flush_work(&dev->ord_b);
	kdl_idle_forever();
	return 0;
}

static void kdl_start(int (*fn)(void *), struct kdl_dev *dev, const char *comm)
{
	struct task_struct *t = kthread_run(fn, dev, "%s", comm);

	if (IS_ERR(t))
		pr_err("kdl-error cannot start %s: %ld\n", comm, PTR_ERR(t));
	else
		pr_info("kdl-truth task %s %d\n", t->comm, t->pid);
}

static int __init kdl_flush_init(void)
{
	struct kdl_dev *dev = kzalloc(sizeof(*dev), GFP_KERNEL);

	if (!dev)
		return -ENOMEM;
	dev->wq = alloc_workqueue("kdl_wq", 0, 0);
	dev->ordered = alloc_ordered_workqueue("kdl_ordered", 0);
	if (!dev->wq || !dev->ordered)
		return -ENOMEM;		/* a test module: what was allocated stays */
	mutex_init(&dev->lock);
	mutex_init(&dev->stats_lock);
	INIT_WORK(&dev->reset_work, kdl_reset_work);
	INIT_WORK(&dev->stats_work, kdl_stats_work);
	INIT_WORK(&dev->poll_work, kdl_poll_work);
	INIT_WORK(&dev->ord_a, kdl_ord_a_work);
	INIT_WORK(&dev->ord_b, kdl_ord_b_work);
	kdl_the_dev = dev;

	pr_info("kdl-truth lock dev_lock mutex %px\n", &dev->lock);
	pr_info("kdl-truth lock stats_lock mutex %px\n", &dev->stats_lock);
	pr_info("kdl-truth lock reset_work work %px\n", &dev->reset_work);
	pr_info("kdl-truth lock stats_work work %px\n", &dev->stats_work);
	pr_info("kdl-truth lock poll_work work %px\n", &dev->poll_work);
	pr_info("kdl-truth lock kdl_wq workqueue %px\n", dev->wq);
	pr_info("kdl-truth lock ord_b work %px\n", &dev->ord_b);
	pr_info("kdl-truth lock kdl_never completion %px\n", &kdl_never);
	kdl_start(kdl_holder_fn, dev, "kdl_holder");
	kdl_start(kdl_reset_fn, dev, "kdl_reset");
	kdl_start(kdl_flusher_fn, dev, "kdl_flusher");
	kdl_start(kdl_cancel_fn, dev, "kdl_cancel");
	kdl_start(kdl_drain_fn, dev, "kdl_drain");
	kdl_start(kdl_ordflush_fn, dev, "kdl_ordflush");
	return 0;
}
module_init(kdl_flush_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: flush_work, cancel_work_sync and flush_workqueue waits");
