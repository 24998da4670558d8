// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_pcpu - kdlgdb test scenario: a percpu rw-semaphore reader/writer cycle.
 *
 * A kmalloc'd configuration object guarded by a percpu_rw_semaphore (read-mostly, as
 * sb_writers or cgroup_threadgroup_rwsem are) and a mutex for updates:
 *
 *   kdl_pcpu_upd:  kdl_cfg_update_begin(cfg): mutex_lock(&cfg->lock), then
 *                  percpu_down_write(&cfg->rwsem): blocks new readers, waits for kdl_pcpu_rd
 *   kdl_pcpu_rd:   percpu_down_read(&cfg->rwsem); ...; mutex_lock(&cfg->lock): waits for kdl_pcpu_upd
 *   kdl_pcpu_rd2:  percpu_down_read(&cfg->rwsem) after the writer blocked readers: queued behind it
 *
 * Readers are only counted per CPU, so the reader's hold is inferred: a probable deadlock.
 * Ground truth goes to the console as "kdl-truth ..." lines. No module_exit on purpose.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/percpu-rwsem.h>
#include <linux/slab.h>
#include <linux/err.h>

struct kdl_cfg {
	unsigned long generation;
	struct mutex lock;			/* serialises updates */
	struct percpu_rw_semaphore rwsem;	/* readers use the configuration */
	int value;
};

static void kdl_idle_forever(void)
{
	for (;;)
		msleep_interruptible(60 * 1000);
}

static noinline void kdl_cfg_update_begin(struct kdl_cfg *cfg)
{
	mutex_lock(&cfg->lock);
	msleep(200);
	percpu_down_write(&cfg->rwsem);
}

static noinline void kdl_cfg_update_end(struct kdl_cfg *cfg)
{
	cfg->generation++;
	percpu_up_write(&cfg->rwsem);
	mutex_unlock(&cfg->lock);
}

static int kdl_pcpu_upd_fn(void *data)
{
	struct kdl_cfg *cfg = data;

	msleep(100);
	kdl_cfg_update_begin(cfg);
	cfg->value++;
	kdl_cfg_update_end(cfg);
	kdl_idle_forever();
	return 0;
}

static int kdl_pcpu_rd_fn(void *data)
{
	struct kdl_cfg *cfg = data;
	int seen;

	percpu_down_read(&cfg->rwsem);
	seen = cfg->value;
	msleep(600);
	mutex_lock(&cfg->lock);		/* "refresh": takes the update lock under the read side */
	cfg->value = seen + 1;
	mutex_unlock(&cfg->lock);
	percpu_up_read(&cfg->rwsem);
	kdl_idle_forever();
	return 0;
}

static int kdl_pcpu_rd2_fn(void *data)
{
	struct kdl_cfg *cfg = data;

	msleep(1200);
	percpu_down_read(&cfg->rwsem);
	percpu_up_read(&cfg->rwsem);
	kdl_idle_forever();
	return 0;
}

static void kdl_start(int (*fn)(void *), void *data, const char *comm)
{
	struct task_struct *t = kthread_run(fn, data, "%s", comm);

	if (IS_ERR(t))
		pr_err("kdl-error cannot start %s: %ld\n", comm, PTR_ERR(t));
	else
		pr_info("kdl-truth task %s %d\n", t->comm, t->pid);
}

static int __init kdl_pcpu_init(void)
{
	struct kdl_cfg *cfg = kzalloc(sizeof(*cfg), GFP_KERNEL);

	if (!cfg)
		return -ENOMEM;
	mutex_init(&cfg->lock);
	if (percpu_init_rwsem(&cfg->rwsem)) {
		kfree(cfg);
		return -ENOMEM;
	}
	pr_info("kdl-truth lock cfg_lock mutex %px\n", &cfg->lock);
	pr_info("kdl-truth lock cfg_rwsem percpu_rwsem %px\n", &cfg->rwsem);
	pr_info("kdl-truth lock cfg_readers percpu_rwsem_readers %px\n", &cfg->rwsem.writer);
	kdl_start(kdl_pcpu_rd_fn, cfg, "kdl_pcpu_rd");
	kdl_start(kdl_pcpu_upd_fn, cfg, "kdl_pcpu_upd");
	kdl_start(kdl_pcpu_rd2_fn, cfg, "kdl_pcpu_rd2");
	return 0;
}
module_init(kdl_pcpu_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb test scenario: percpu rw-semaphore reader/writer cycle");
