// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_exit - kdlgdb scenario: a mutex whose owner exited without releasing it.
 *
 * A small "device" lives in a kmalloc'd struct; its mutex is reached through
 * a pointer. kdl_dev_get() takes dev->lock and returns with it held, and
 * kdl_dev_put() drops it. The probe thread (kdl_x_owner) gets the device,
 * fails to configure it and returns on the error path without the put: it
 * exits holding dev->lock, and its task_struct is freed. Then
 *
 *   kdl_x_reader, kdl_x_writer: kdl_dev_get(dev)  -> block on dev->lock forever
 *
 * and, after they sleep, twenty kdlx_idle/N threads start and sleep in
 * msleep_interruptible() loops, so that a new task (or one of the waiters)
 * likely lands in the freed task_struct slot: the mutex's owner field then
 * names a live task that never took it. A debugger must not call any of them
 * the owner. Ground truth goes to the console as "kdl-truth ..." lines; the
 * exited owner's pid and task_struct as "kdl-info owner ...".
 *
 * On PREEMPT_RT the mutex is an rt_mutex: a waiter that landed in the freed
 * slot asks for a lock whose owner field names itself, and rt_mutex's own
 * deadlock check parks it (S) with "rtmutex deadlock detected": the kernel
 * is fooled too. That waiter is not in D, so /init does not wait for D
 * states (expected.json says "blocked_when_loaded"): init returns once the
 * waiters have been stuck for a second, after printing "kdl-info blocked".
 * No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/slab.h>
#include <linux/err.h>

#define KDL_IDLE_THREADS 20

enum kdl_dev_state { KDL_DEV_NEW, KDL_DEV_LIVE, KDL_DEV_DEAD };

struct kdl_dev {
	const char *name;
	struct mutex lock;	/* protects state, users and cfg */
	enum kdl_dev_state state;
	int users;
	int cfg;
};

static struct kdl_dev *kdl_dev;
static int kdl_fail_cfg = 1;
module_param(kdl_fail_cfg, int, 0444);

/* Take a user reference with dev->lock held; the caller drops both with kdl_dev_put(). */
static noinline int kdl_dev_get(struct kdl_dev *dev)
{
	mutex_lock(&dev->lock);
	if (dev->state == KDL_DEV_DEAD) {
		mutex_unlock(&dev->lock);
		return -ENODEV;
	}
	dev->users++;
	return 0;
}

static noinline void kdl_dev_put(struct kdl_dev *dev)
{
	dev->users--;
	mutex_unlock(&dev->lock);
}

static noinline int kdl_dev_configure(struct kdl_dev *dev)
{
	if (READ_ONCE(kdl_fail_cfg))
		return -EIO;
	dev->cfg = 1;
	dev->state = KDL_DEV_LIVE;
	return 0;
}

static void kdl_idle_forever(void)
{
	for (;;)
		msleep_interruptible(60 * 1000);
}

static int kdl_x_owner_fn(void *data)
{
	struct kdl_dev *dev = data;
	int err;

	pr_info("kdl-info owner %s %d %px\n", current->comm, current->pid, current);
	err = kdl_dev_get(dev);
	if (err)
		return err;
	err = kdl_dev_configure(dev);
	if (err) {
		pr_info("kdl-info %s: configure failed (%d), leaving\n", dev->name, err);
		return err;	/* the bug: no kdl_dev_put(), dev->lock stays held */
	}
	kdl_dev_put(dev);
	return 0;
}

static int kdl_x_reader_fn(void *data)
{
	struct kdl_dev *dev = data;

	if (!kdl_dev_get(dev)) {
		READ_ONCE(dev->cfg);
		kdl_dev_put(dev);
	}
	kdl_idle_forever();
	return 0;
}

static int kdl_x_writer_fn(void *data)
{
	struct kdl_dev *dev = data;

	msleep(200);
	if (!kdl_dev_get(dev)) {
		dev->cfg++;
		kdl_dev_put(dev);
	}
	kdl_idle_forever();
	return 0;
}

static int kdlx_idle_fn(void *unused)
{
	while (!kthread_should_stop())
		msleep_interruptible(1000);
	return 0;
}

static void kdl_truth_task(struct task_struct *t, const char *comm)
{
	if (IS_ERR(t))
		pr_err("kdl-error cannot start %s: %ld\n", comm, PTR_ERR(t));
	else
		pr_info("kdl-truth task %s %d\n", t->comm, t->pid);
}

static int __init kdl_exit_init(void)
{
	struct task_struct *t;
	int i;

	kdl_dev = kzalloc(sizeof(*kdl_dev), GFP_KERNEL);
	if (!kdl_dev)
		return -ENOMEM;
	kdl_dev->name = "kdl_dev0";
	mutex_init(&kdl_dev->lock);
	pr_info("kdl-truth lock dev_lock mutex %px\n", &kdl_dev->lock);

	t = kthread_run(kdl_x_owner_fn, kdl_dev, "kdl_x_owner");
	if (IS_ERR(t))
		return PTR_ERR(t);
	/* It takes dev->lock and exits; its task_struct goes back to the slab after an RCU grace period. */
	msleep(1500);
	kdl_truth_task(kthread_run(kdl_x_reader_fn, kdl_dev, "kdl_x_reader"), "kdl_x_reader");
	kdl_truth_task(kthread_run(kdl_x_writer_fn, kdl_dev, "kdl_x_writer"), "kdl_x_writer");
	msleep(1000);
	for (i = 0; i < KDL_IDLE_THREADS; i++) {
		t = kthread_run(kdlx_idle_fn, NULL, "kdlx_idle/%d", i);
		if (!IS_ERR(t))
			pr_info("kdl-info idle %s %d %px\n", t->comm, t->pid, t);
	}
	msleep(1000);
	pr_info("kdl-info blocked\n");
	return 0;
}
module_init(kdl_exit_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: a mutex whose owner exited holding it");
