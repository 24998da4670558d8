// SPDX-License-Identifier: GPL-2.0
/*
 * kdl_scale - kdlgdb scale scenario: n kthreads (module parameter n), about a
 * fifth of them blocked in wait chains on a few hundred mutexes, semaphores and
 * rwsems, three deadlock cycles of different lengths hidden among them, and the
 * rest asleep in msleep_interruptible (S).
 *
 *   cycle A, 2 tasks: mutex, mutex                                   (deadlock)
 *   cycle B, 3 tasks: semaphore, mutex, rwsem write-held              (probable)
 *   cycle C, 5 tasks: mutex, rwsem write-held, rwsem read-held, mutex, mutex
 *                                                                     (probable)
 *     Member k waits on lock k, which member k+1 holds. Every cycle lock has
 *     two more waiters, and behind cycle A's first lock waits the holder of one
 *     more mutex, with three waiters of its own.
 *   chains, n/50 of them: a root takes a lock and sleeps in msleep (D); each of
 *     the chain's other 0-3 locks is held by a task that waits on the previous
 *     one. The rest of the n/5 blocked tasks wait on chain locks, round robin.
 *
 * Chain locks rotate through mutex, rwsem write-held, semaphore, mutex, rwsem
 * read-held. Semaphores and read-held rwsems record no owner: kdlgdb infers
 * their holders from the holder's code, so those locks are static variables,
 * each taken by its own small function (kdl_hold_sem_XX, kdl_hold_rread_XX)
 * that stays on the holder's stack. Mutexes and write-held rwsems, whose owner
 * the kernel records, are allocated.
 *
 * Threads are started in a shuffled order (pids say nothing about roles) and
 * named kdl_s<i>. Every holder takes its lock, then all wait for "go"; after it
 * the waiters take theirs. module_init returns once every waiter and root sleeps
 * in D and every other thread in S (twice, two seconds apart), having printed
 * a compact truth on the console:
 *
 *   kdl-truth task COMM PID                       each cycle member
 *   kdl-truth cycle NAME COMM:KIND:ADDRESS ...    member k waits on that lock,
 *                                                 which member k+1 holds
 *   kdl-truth behind NAME COUNT                   tasks blocked behind a cycle
 *   kdl-truth chain ROOTPID BLOCKED LOCKS         one line per chain
 *   kdl-truth count WHAT NUMBER                   threads, blocked (waiting on a
 *                                                 lock), roots, locks, locks-KIND
 *
 * KIND is mutex, semaphore, rwsem-write (write-held) or rwsem-read (read-held).
 * There is deliberately no module_exit.
 */
#include <linux/module.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mutex.h>
#include <linux/rwsem.h>
#include <linux/semaphore.h>
#include <linux/slab.h>
#include <linux/wait.h>
#include <linux/err.h>

static unsigned int n = 1000;
module_param(n, uint, 0444);
MODULE_PARM_DESC(n, "number of kthreads to start (at least 500)");

enum kdl_kind { KDL_MUTEX, KDL_RWSEM_W, KDL_SEM, KDL_RWSEM_R };
static const char *const kdl_kind_names[] = { "mutex", "rwsem-write", "semaphore", "rwsem-read" };

struct kdl_thread;
typedef void (*kdl_holder_fn)(struct kdl_thread *);

static noinline void kdl_then(struct kdl_thread *t);

/*
 * The static locks: 128 semaphores and 128 rwsems that are read-held, each with
 * the one function that takes it. KDL_IDS(X) expands X(00) ... X(7f).
 */
#define KDL_16(X, hi) X(hi##0) X(hi##1) X(hi##2) X(hi##3) X(hi##4) X(hi##5) X(hi##6) X(hi##7) \
		      X(hi##8) X(hi##9) X(hi##a) X(hi##b) X(hi##c) X(hi##d) X(hi##e) X(hi##f)
#define KDL_IDS(X) KDL_16(X, 0) KDL_16(X, 1) KDL_16(X, 2) KDL_16(X, 3) \
		   KDL_16(X, 4) KDL_16(X, 5) KDL_16(X, 6) KDL_16(X, 7)
#define KDL_POOL 128

/* The holder's up()/up_read() after kdl_then() is never reached; it keeps the call from being a tail call. */
#define KDL_STATIC_LOCKS(i)						\
	static struct semaphore kdl_sem_##i;				\
	static DECLARE_RWSEM(kdl_rread_##i);				\
	static noinline void kdl_hold_sem_##i(struct kdl_thread *t)	\
	{								\
		down(&kdl_sem_##i);					\
		kdl_then(t);						\
		up(&kdl_sem_##i);					\
	}								\
	static noinline void kdl_hold_rread_##i(struct kdl_thread *t)	\
	{								\
		down_read(&kdl_rread_##i);				\
		kdl_then(t);						\
		up_read(&kdl_rread_##i);				\
	}
KDL_IDS(KDL_STATIC_LOCKS)

#define KDL_SEM_ADDRESS(i) &kdl_sem_##i,
#define KDL_SEM_HOLDER(i) kdl_hold_sem_##i,
#define KDL_RREAD_ADDRESS(i) &kdl_rread_##i,
#define KDL_RREAD_HOLDER(i) kdl_hold_rread_##i,
static struct semaphore *const kdl_sems[KDL_POOL] = { KDL_IDS(KDL_SEM_ADDRESS) };
static const kdl_holder_fn kdl_sem_holders[KDL_POOL] = { KDL_IDS(KDL_SEM_HOLDER) };
static struct rw_semaphore *const kdl_rreads[KDL_POOL] = { KDL_IDS(KDL_RREAD_ADDRESS) };
static const kdl_holder_fn kdl_rread_holders[KDL_POOL] = { KDL_IDS(KDL_RREAD_HOLDER) };

struct kdl_lock {
	enum kdl_kind kind;
	union {				/* the lock itself, for the allocated kinds */
		struct mutex mutex;
		struct rw_semaphore rwsem;
	};
	int pool;			/* index in the static pools (KDL_SEM, KDL_RWSEM_R) */
	int chain;			/* chain it belongs to, -1 for cycle locks */
};

struct kdl_thread {
	struct task_struct *task;
	struct kdl_lock *holds;		/* taken before "go", or NULL */
	struct kdl_lock *wants;		/* taken after "go" (it blocks), or NULL */
	bool write;			/* wants an rwsem for writing */
	bool root;			/* after "go", sleeps in D while holding */
	bool past_go;			/* about to take wants, or to sleep as a root */
};

struct kdl_cycle {
	const char *name;
	int len;
	struct kdl_thread *members[5];
	struct kdl_lock *locks[5];
	int behind;
};

struct kdl_chain {
	struct kdl_thread *root;
	int blocked;
	int locks;
};

static struct kdl_thread *kdl_threads;
static struct kdl_thread **kdl_order;	/* creation order */
static unsigned int kdl_nthreads;
static struct kdl_lock *kdl_locks;
static unsigned int kdl_nlocks, kdl_nsems, kdl_nrreads;
static struct kdl_chain *kdl_chains;
static unsigned int kdl_nchains;
static struct kdl_cycle kdl_cycles[3];

static DECLARE_WAIT_QUEUE_HEAD(kdl_go_wq);
static DECLARE_WAIT_QUEUE_HEAD(kdl_holding_wq);
static atomic_t kdl_holding = ATOMIC_INIT(0);
static bool kdl_go;

static void *kdl_lock_address(const struct kdl_lock *l)
{
	switch (l->kind) {
	case KDL_MUTEX:
		return (void *)&l->mutex;
	case KDL_RWSEM_W:
		return (void *)&l->rwsem;
	case KDL_SEM:
		return kdl_sems[l->pool];
	default:
		return kdl_rreads[l->pool];
	}
}

static noinline void kdl_take(struct kdl_lock *l, bool write)
{
	switch (l->kind) {
	case KDL_MUTEX:
		mutex_lock(&l->mutex);
		break;
	case KDL_SEM:
		down(kdl_sems[l->pool]);
		break;
	case KDL_RWSEM_W:
		if (write)
			down_write(&l->rwsem);
		else
			down_read(&l->rwsem);
		break;
	case KDL_RWSEM_R:
		if (write)
			down_write(kdl_rreads[l->pool]);
		else
			down_read(kdl_rreads[l->pool]);
		break;
	}
}

static void kdl_sleep_forever(void)
{
	for (;;)
		msleep_interruptible(60 * 1000);
}

/* After the held lock (if any) is taken: wait for "go", then block. */
static noinline void kdl_then(struct kdl_thread *t)
{
	if (t->holds) {
		atomic_inc(&kdl_holding);
		wake_up(&kdl_holding_wq);
	}
	if (!t->wants && !t->root)
		kdl_sleep_forever();
	wait_event_interruptible(kdl_go_wq, READ_ONCE(kdl_go));
	WRITE_ONCE(t->past_go, true);
	if (t->root) {
		for (;;)
			msleep(60 * 1000);
	}
	kdl_take(t->wants, t->write);
	kdl_sleep_forever();	/* not reached: every wanted lock stays held */
}

/* Take a mutex or write-take an rwsem (the kernel records their owner), then go on. */
static noinline void kdl_hold(struct kdl_thread *t)
{
	kdl_take(t->holds, true);
	kdl_then(t);
	kdl_sleep_forever();
}

static int kdl_thread_fn(void *arg)
{
	struct kdl_thread *t = arg;

	if (!t->holds)
		kdl_then(t);
	else if (t->holds->kind == KDL_SEM)
		kdl_sem_holders[t->holds->pool](t);
	else if (t->holds->kind == KDL_RWSEM_R)
		kdl_rread_holders[t->holds->pool](t);
	else
		kdl_hold(t);
	return 0;
}

/* -- the layout: who holds and wants what ---------------------------------- */

static struct kdl_thread *kdl_new_thread(void)
{
	return &kdl_threads[kdl_nthreads++];
}

/* A new lock of that kind; a kind whose static pool is used up falls back to its allocated cousin. */
static struct kdl_lock *kdl_new_lock(enum kdl_kind kind, int chain)
{
	struct kdl_lock *l = &kdl_locks[kdl_nlocks++];

	if (kind == KDL_SEM && kdl_nsems == KDL_POOL)
		kind = KDL_MUTEX;
	if (kind == KDL_RWSEM_R && kdl_nrreads == KDL_POOL)
		kind = KDL_RWSEM_W;
	l->kind = kind;
	l->chain = chain;
	switch (kind) {
	case KDL_MUTEX:
		mutex_init(&l->mutex);
		break;
	case KDL_RWSEM_W:
		init_rwsem(&l->rwsem);
		break;
	case KDL_SEM:
		l->pool = kdl_nsems++;
		break;
	case KDL_RWSEM_R:
		l->pool = kdl_nrreads++;
		break;
	}
	return l;
}

/* A thread that waits on l. A read-held rwsem only gets writers: a reader could share it. */
static struct kdl_thread *kdl_waiter(struct kdl_lock *l, bool write)
{
	struct kdl_thread *t = kdl_new_thread();

	t->wants = l;
	t->write = l->kind == KDL_RWSEM_R || write;
	return t;
}

static void kdl_make_cycle(struct kdl_cycle *c, const char *name, const enum kdl_kind *kinds, int len)
{
	int k;

	c->name = name;
	c->len = len;
	for (k = 0; k < len; k++) {
		c->locks[k] = kdl_new_lock(kinds[k], -1);
		c->members[k] = kdl_waiter(c->locks[k], k % 2);
	}
	for (k = 0; k < len; k++)
		c->members[(k + 1) % len]->holds = c->locks[k];
	for (k = 0; k < len; k++) {
		kdl_waiter(c->locks[k], true);
		kdl_waiter(c->locks[k], false);
		c->behind += 2;
	}
}

static const enum kdl_kind kdl_cycle_a[] = { KDL_MUTEX, KDL_MUTEX };
static const enum kdl_kind kdl_cycle_b[] = { KDL_SEM, KDL_MUTEX, KDL_RWSEM_W };
static const enum kdl_kind kdl_cycle_c[] = { KDL_MUTEX, KDL_RWSEM_W, KDL_RWSEM_R, KDL_MUTEX, KDL_MUTEX };
static const enum kdl_kind kdl_chain_kinds[] = { KDL_MUTEX, KDL_RWSEM_W, KDL_SEM, KDL_MUTEX, KDL_RWSEM_R };

static void kdl_layout(void)
{
	unsigned int blocked, c, i, first_chain_lock, chain_locks, kind = 0;
	struct kdl_thread *t;
	struct kdl_lock *extra;

	kdl_make_cycle(&kdl_cycles[0], "A", kdl_cycle_a, ARRAY_SIZE(kdl_cycle_a));
	kdl_make_cycle(&kdl_cycles[1], "B", kdl_cycle_b, ARRAY_SIZE(kdl_cycle_b));
	kdl_make_cycle(&kdl_cycles[2], "C", kdl_cycle_c, ARRAY_SIZE(kdl_cycle_c));
	extra = kdl_new_lock(KDL_MUTEX, -1);
	t = kdl_waiter(kdl_cycles[0].locks[0], false);
	t->holds = extra;
	for (i = 0; i < 3; i++)
		kdl_waiter(extra, false);
	kdl_cycles[0].behind += 4;

	first_chain_lock = kdl_nlocks;
	for (c = 0; c < kdl_nchains; c++) {
		struct kdl_lock *prev = kdl_new_lock(kdl_chain_kinds[kind++ % 5], c);

		kdl_chains[c].root = kdl_new_thread();
		kdl_chains[c].root->root = true;
		kdl_chains[c].root->holds = prev;
		kdl_chains[c].locks = 1;
		for (i = 1; i < 1 + c % 4; i++) {
			struct kdl_lock *l = kdl_new_lock(kdl_chain_kinds[kind++ % 5], c);

			t = kdl_waiter(prev, i % 2);
			t->holds = l;
			kdl_chains[c].blocked++;
			kdl_chains[c].locks++;
			prev = l;
		}
	}
	chain_locks = kdl_nlocks - first_chain_lock;
	blocked = 0;
	for (i = 0; i < kdl_nthreads; i++)
		blocked += kdl_threads[i].wants != NULL;
	for (i = 0; blocked < n / 5; i++, blocked++) {
		struct kdl_lock *l = &kdl_locks[first_chain_lock + i % chain_locks];

		kdl_waiter(l, i % 3 == 0);
		kdl_chains[l->chain].blocked++;
	}
	while (kdl_nthreads < n)
		kdl_new_thread();	/* a sleeper */
}

/* Fisher-Yates with a fixed xorshift32 seed: the same order on every boot. */
static void kdl_shuffle(void)
{
	u32 seed = 2463534242u;
	unsigned int i;

	for (i = 0; i < n; i++)
		kdl_order[i] = &kdl_threads[i];
	for (i = n - 1; i > 0; i--) {
		unsigned int j;
		struct kdl_thread *tmp;

		seed ^= seed << 13;
		seed ^= seed >> 17;
		seed ^= seed << 5;
		j = seed % (i + 1);
		tmp = kdl_order[i];
		kdl_order[i] = kdl_order[j];
		kdl_order[j] = tmp;
	}
}

/* -- waiting until everyone is where the layout says ------------------------ */

static bool kdl_in_place(const struct kdl_thread *t)
{
	unsigned int state = READ_ONCE(t->task->__state);

	if (t->wants || t->root)
		return READ_ONCE(t->past_go) && state == TASK_UNINTERRUPTIBLE;
	return state == TASK_INTERRUPTIBLE;
}

static unsigned int kdl_not_in_place(void)
{
	unsigned int i, missing = 0;

	for (i = 0; i < n; i++)
		missing += !kdl_in_place(&kdl_threads[i]);
	return missing;
}

static int kdl_wait_in_place(void)
{
	int tries;

	for (tries = 0; tries < 1200; tries++) {
		if (!kdl_not_in_place()) {
			msleep_interruptible(2000);
			if (!kdl_not_in_place())
				return 0;
		}
		msleep_interruptible(500);
	}
	pr_err("kdl-error %u of %u threads not in place after 10 minutes\n", kdl_not_in_place(), n);
	return -ETIMEDOUT;
}

/* -- truth ---------------------------------------------------------------- */

static void kdl_print_truth(void)
{
	unsigned int i, c, blocked = 0, roots = 0, per_kind[4] = { 0, 0, 0, 0 };
	int k;

	for (c = 0; c < ARRAY_SIZE(kdl_cycles); c++) {
		struct kdl_cycle *cyc = &kdl_cycles[c];
		char line[512];
		int len = 0;

		for (k = 0; k < cyc->len; k++) {
			struct task_struct *task = cyc->members[k]->task;

			pr_info("kdl-truth task %s %d\n", task->comm, task->pid);
			len += scnprintf(line + len, sizeof(line) - len, " %s:%s:%px", task->comm,
					 kdl_kind_names[cyc->locks[k]->kind], kdl_lock_address(cyc->locks[k]));
		}
		pr_info("kdl-truth cycle %s%s\n", cyc->name, line);
		pr_info("kdl-truth behind %s %d\n", cyc->name, cyc->behind);
	}
	for (c = 0; c < kdl_nchains; c++)
		pr_info("kdl-truth chain %d %d %d\n", kdl_chains[c].root->task->pid,
			kdl_chains[c].blocked, kdl_chains[c].locks);
	for (i = 0; i < n; i++) {
		blocked += kdl_threads[i].wants != NULL;
		roots += kdl_threads[i].root;
	}
	for (i = 0; i < kdl_nlocks; i++)
		per_kind[kdl_locks[i].kind]++;
	pr_info("kdl-truth count threads %u\n", n);
	pr_info("kdl-truth count blocked %u\n", blocked);
	pr_info("kdl-truth count roots %u\n", roots);
	pr_info("kdl-truth count locks %u\n", kdl_nlocks);
	for (i = 0; i < ARRAY_SIZE(per_kind); i++)
		pr_info("kdl-truth count locks-%s %u\n", kdl_kind_names[i], per_kind[i]);
}

static int __init kdl_scale_init(void)
{
	unsigned int i, holders = 0;

	/* From 500 threads on, the waiters are enough to give every chain lock one. */
	if (n < 500 || n > 100000) {
		pr_err("kdl-error n=%u: give 500 to 100000 threads\n", n);
		return -EINVAL;
	}
	for (i = 0; i < KDL_POOL; i++)
		sema_init(kdl_sems[i], 1);
	kdl_nchains = n / 50;
	kdl_threads = kvcalloc(n, sizeof(*kdl_threads), GFP_KERNEL);
	kdl_order = kvcalloc(n, sizeof(*kdl_order), GFP_KERNEL);
	kdl_locks = kvcalloc(11 + 4 * kdl_nchains, sizeof(*kdl_locks), GFP_KERNEL);
	kdl_chains = kvcalloc(kdl_nchains, sizeof(*kdl_chains), GFP_KERNEL);
	if (!kdl_threads || !kdl_order || !kdl_locks || !kdl_chains) {
		pr_err("kdl-error out of memory for %u threads\n", n);
		return -ENOMEM;
	}
	kdl_layout();
	kdl_shuffle();
	for (i = 0; i < n; i++) {
		struct kdl_thread *t = kdl_order[i];

		holders += t->holds != NULL;
		t->task = kthread_run(kdl_thread_fn, t, "kdl_s%u", i);
		if (IS_ERR(t->task)) {
			/* Threads already run this module's code: it must stay loaded, so no error return. */
			pr_err("kdl-error cannot start thread %u of %u: %ld\n", i, n, PTR_ERR(t->task));
			return 0;
		}
	}
	if (wait_event_interruptible_timeout(kdl_holding_wq, atomic_read(&kdl_holding) == holders, 600 * HZ) <= 0) {
		pr_err("kdl-error only %d of %u holders hold their lock\n", atomic_read(&kdl_holding), holders);
		return 0;
	}
	WRITE_ONCE(kdl_go, true);
	wake_up_all(&kdl_go_wq);
	if (kdl_wait_in_place() == 0)
		kdl_print_truth();
	return 0;
}
module_init(kdl_scale_init);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kdlgdb scale scenario: n kthreads, wait chains and three hidden deadlock cycles");
