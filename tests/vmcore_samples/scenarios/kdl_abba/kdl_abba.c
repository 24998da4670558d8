// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_abba - kdlgdb test scenario: the canonical ABBA deadlock on semaphores.
 *
 *   kdl_a: down(sem1); msleep(500); down(sem2)   -> waits for sem2, held by kdl_b
 *   kdl_b: down(sem2); msleep(500); down(sem1)   -> waits for sem1, held by kdl_a
 *
 * Semaphores do not record their holder, so a debugger can only infer who
 * holds them (verdict "probable"). The module prints its ground truth as
 * "kdl-truth ..." console lines; tests/vmcore_samples/build.py parses them.
 * There is deliberately no module_exit: the module can never be unloaded.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/semaphore.h>
#include <linux/err.h>

/* File-scope statics, so each lock has its own symbol in the module's kallsyms. */
static struct semaphore sem1;
static struct semaphore sem2;

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

static int kdl_a_fn(void *unused)
{
	down(&sem1);
	msleep(500);
	down(&sem2);
	up(&sem2);
	up(&sem1);
	kdl_idle_forever();
	return 0;
}

static int kdl_b_fn(void *unused)
{
	down(&sem2);
	msleep(500);
	down(&sem1);
	up(&sem1);
	up(&sem2);
	kdl_idle_forever();
	return 0;
}

static int __init kdl_abba_init(void)
{
	/* sema_init() rather than DEFINE_SEMAPHORE, whose arity changed in 6.4. */
	sema_init(&sem1, 1);
	sema_init(&sem2, 1);
	KDL_TRUTH_LOCK(sem1, "semaphore");
	KDL_TRUTH_LOCK(sem2, "semaphore");
	kdl_truth_task(kthread_run(kdl_a_fn, NULL, "kdl_a"), "kdl_a");
	kdl_truth_task(kthread_run(kdl_b_fn, NULL, "kdl_b"), "kdl_b");
	return 0;
}
module_init(kdl_abba_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: ABBA deadlock on two semaphores");
