/*
 * kdlgdb.c - kdlgdb's kd-* commands in the crash utility.
 *
 *   crash> extend /path/to/kdlgdb/crashext/kdlgdb.so
 *   crash> kd-waitfor
 *
 * crash's embedded gdb has no Python, so the analysis runs in a Python process
 * (/usr/bin/python3 -m kdlgdb.frontends.crash, the same package the gdb commands
 * use) and this file is kdlgdb's target inside crash: it answers that process's
 * questions (read memory, symbol, type size, member offset, a gdb command's
 * output, a VMCOREINFO key) from crash, and prints what the process sends back.
 * The frames on the socket are "VERB LENGTH\n" and LENGTH bytes; the protocol is
 * described once, in src/kdlgdb/target/crash.py.
 *
 * The Python process lives from the first kd-* command to the end of the crash
 * session, so a kernel is read once.  A command interrupted before the Python
 * process has answered (Ctrl-C) leaves it in an unknown state: crash's restart()
 * calls kd_cleanup(), which ends it; the next kd-* command starts a new one.
 * Only crash handles Ctrl-C: the Python process ignores SIGINT.
 */

#define _GNU_SOURCE	/* dladdr */
#include "defs.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

static void cmd_kd(void);

#include "help.h" /* help_kd_*[] and KD_COMMANDS, generated from the commands' argparse declarations */

#define PYTHON_DEFAULT "/usr/bin/python3"
#define MAX_READ (64L << 20)
#define MAX_FRAME (256L << 20)

static void cmd_kd_set(void);
static void kd_cleanup(void);

static char *help_kd_set[] = {
	"kd-set",
	"kdlgdb settings for the kd-* commands",
	"[color on|off|auto] [debug on|off]",
	"  Without arguments, shows the settings.",
	"    color  colour in kd-* output: on, off, or auto (only when the output",
	"           is a terminal; not through a pipe or into a file).",
	"    debug  on: a kdlgdb error shows the Python traceback, not one line.",
	"\n  The Python interpreter is $KDLGDB_PYTHON (default " PYTHON_DEFAULT "),",
	"  the kdlgdb package is found next to this extension (crashext/../src) or",
	"  in $KDLGDB_SRC.",
	NULL
};

static struct command_table_entry command_table[] = {
	KD_COMMANDS	/* from help.h: every kd-* command of kdlgdb.frontends.commands, and kd-report */
	{ "kd-set", cmd_kd_set, help_kd_set, 0 },
	{ "kd-cleanup", kd_cleanup, NULL, CLEANUP },
	{ NULL },
};

/* The Python process, while it runs. */
static struct {
	pid_t pid;
	int sock;		/* our end of its socket */
	FILE *stderr_file;	/* what it writes on stderr (shown if it dies) */
	int busy;		/* a command is in progress */
} py = { 0, -1, NULL, 0 };

static struct {
	int debug;
	int color;		/* 0 off, 1 on, 2 auto */
} settings = { 0, 2 };

/* Buffers reused across requests: a longjmp out of a command leaks nothing. */
struct buffer {
	char *data;
	size_t size;
};
static struct buffer inbuf, payload, scratch;
static size_t in_start, in_end;
static FILE *gdb_output;

static void __attribute__((constructor))
kdlgdb_init(void)
{
	register_extension(command_table);
}

static void stop_python(void);

static void __attribute__((destructor))
kdlgdb_fini(void)
{
	stop_python();
	if (gdb_output)
		fclose(gdb_output);
	free(inbuf.data);
	free(payload.data);
	free(scratch.data);
}

static int
reserve(struct buffer *buf, size_t size)
{
	char *bigger;

	if (size <= buf->size)
		return TRUE;
	if (!(bigger = realloc(buf->data, size)))
		return FALSE;
	buf->data = bigger;
	buf->size = size;
	return TRUE;
}

/* -- the Python process ---------------------------------------------------- */

/* The directory holding the kdlgdb package: $KDLGDB_SRC, or ../src next to this file. */
static int
find_src(char *out, size_t size)
{
	Dl_info info;
	char here[PATH_MAX], probe[PATH_MAX + 64];
	char *env = getenv("KDLGDB_SRC");
	char *slash;

	snprintf(out, size, "%s", env && *env ? env : "crashext/../src");
	if (!(env && *env)) {
		if (!dladdr((void *)find_src, &info) || !info.dli_fname ||
		    !realpath(info.dli_fname, here))
			return FALSE;
		if ((slash = strrchr(here, '/')))
			*slash = NULLCHAR;
		if ((slash = strrchr(here, '/')))	/* crashext/ */
			*slash = NULLCHAR;
		snprintf(out, size, "%s/src", here);
	}
	snprintf(probe, sizeof(probe), "%s/kdlgdb/frontends/crash.py", out);
	return access(probe, R_OK) == 0;
}

static void
stop_python(void)
{
	if (py.pid > 0) {
		kill(py.pid, SIGKILL);
		waitpid(py.pid, NULL, 0);
	}
	if (py.sock >= 0)
		close(py.sock);
	if (py.stderr_file)
		fclose(py.stderr_file);
	py.pid = 0;
	py.sock = -1;
	py.stderr_file = NULL;
	py.busy = FALSE;
	in_start = in_end = 0;
}

/* A progress line on crash's terminal (stderr), rewritten in place; nothing without a terminal. */
static int progress_shown;

static void
show_progress(const char *line)
{
	if (isatty(fileno(stderr))) {
		fprintf(stderr, "\r%s\033[K", line);
		fflush(stderr);
		progress_shown = TRUE;
	}
}

static void
end_progress(void)
{
	if (progress_shown) {
		fprintf(stderr, "\r\033[K");
		fflush(stderr);
		progress_shown = FALSE;
	}
}

/* Called by crash's restart() and before each command: end a Python process a command left half-way. */
static void
kd_cleanup(void)
{
	end_progress();
	if (py.busy)
		stop_python();
}

/* crash's environment, with PYTHONPATH starting at the package and the socket's descriptor. */
static char **
python_environment(const char *src)
{
	extern char **environ;
	const char *old = getenv("PYTHONPATH");
	size_t n = 0, i, kept = 0;
	char **env;

	while (environ[n])
		n++;
	if (!(env = calloc(n + 3, sizeof(char *))))
		return NULL;
	for (i = 0; i < n; i++)
		if (!STRNEQ(environ[i], "PYTHONPATH=") && !STRNEQ(environ[i], "KDLGDB_CRASH_FD="))
			env[kept++] = environ[i];
	if (asprintf(&env[kept++], "PYTHONPATH=%s%s%s", src, old && *old ? ":" : "", old && *old ? old : "") < 0) {
		free(env);
		return NULL;
	}
	env[kept] = "KDLGDB_CRASH_FD=3";
	return env;
}

static void
free_environment(char **env)
{
	size_t i;

	for (i = 0; env[i]; i++)
		if (STRNEQ(env[i], "PYTHONPATH="))
			free(env[i]);
	free(env);
}

static int
start_python(void)
{
	char src[PATH_MAX];
	char *python = getenv("KDLGDB_PYTHON");
	char *argv[] = { NULL, "-m", "kdlgdb.frontends.crash", NULL };
	char **env;
	int fds[2], devnull;
	pid_t pid;

	if (!python || !*python)
		python = PYTHON_DEFAULT;
	if (!find_src(src, sizeof(src))) {
		error(INFO, "cannot find the kdlgdb package (%s/kdlgdb): set KDLGDB_SRC to the checkout's src directory\n",
		      src);
		return FALSE;
	}
	if (access(python, X_OK) != 0) {
		error(INFO, "cannot run %s: %s (install python3, or set KDLGDB_PYTHON)\n", python, strerror(errno));
		return FALSE;
	}
	if (!(env = python_environment(src)))
		return FALSE;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
		error(INFO, "cannot start %s: %s\n", python, strerror(errno));
		free_environment(env);
		return FALSE;
	}
	if ((!py.stderr_file && !(py.stderr_file = tmpfile())) || (fflush(NULL), pid = fork()) < 0) {
		error(INFO, "cannot start %s: %s\n", python, strerror(errno));
		close(fds[0]);
		close(fds[1]);
		free_environment(env);
		return FALSE;
	}
	if (pid == 0) {
		/* Only crash decides about Ctrl-C (it ends this process); die with crash. */
		signal(SIGINT, SIG_IGN);
		signal(SIGPIPE, SIG_DFL);
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		devnull = open("/dev/null", O_RDWR);
		dup2(devnull, 0);
		dup2(fileno(py.stderr_file), 1);
		dup2(fileno(py.stderr_file), 2);
		if (fds[1] == 3)
			fcntl(3, F_SETFD, 0);
		else
			dup2(fds[1], 3);
		closefrom(4);	/* crash's pipe to `less` must see its end when crash closes it */
		argv[0] = python;
		execve(python, argv, env);
		dprintf(2, "cannot run %s: %s\n", python, strerror(errno));
		_exit(127);
	}
	free_environment(env);
	close(fds[1]);
	py.pid = pid;
	py.sock = fds[0];
	in_start = in_end = 0;
	return TRUE;
}

/* The last line the Python process wrote on stderr, for the one-line message when it died. */
static const char *
python_last_words(char *buf, size_t size)
{
	char line[BUFSIZE];

	buf[0] = NULLCHAR;
	if (!py.stderr_file)
		return buf;
	rewind(py.stderr_file);
	while (fgets(line, sizeof(line), py.stderr_file)) {
		strip_linefeeds(line);
		if (*line)
			snprintf(buf, size, "%s", line);
	}
	return buf;
}

static void
python_died(void)
{
	char last[BUFSIZE];
	int status = 0;

	if (py.pid > 0 && waitpid(py.pid, &status, 0) == py.pid)
		py.pid = 0;
	python_last_words(last, sizeof(last));
	if (*last)
		error(INFO, "%s\n", last);
	else if (WIFSIGNALED(status))
		error(INFO, "the kdlgdb Python process was killed by signal %d\n", WTERMSIG(status));
	else
		error(INFO, "the kdlgdb Python process stopped (status %d)\n", WEXITSTATUS(status));
	stop_python();
}

/* -- frames: "VERB LENGTH\n" and LENGTH bytes ------------------------------- */

static int
send_all(const void *data, size_t len)
{
	const char *p = data;
	ssize_t n;

	while (len > 0) {
		n = send(py.sock, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return FALSE;
		p += n;
		len -= n;
	}
	return TRUE;
}

static int
send_frame(const char *verb, const void *data, size_t len)
{
	char header[64];

	snprintf(header, sizeof(header), "%s %zu\n", verb, len);
	return send_all(header, strlen(header)) && send_all(data, len);
}

static int
send_text(const char *verb, const char *text)
{
	return send_frame(verb, text, strlen(text));
}

/* Make at least one more byte available in inbuf; FALSE at end of file. */
static int
fill(void)
{
	ssize_t n;

	if (in_start == in_end)
		in_start = in_end = 0;
	if (in_end == inbuf.size && !reserve(&inbuf, inbuf.size ? 2 * inbuf.size : 65536))
		return FALSE;
	do
		n = recv(py.sock, inbuf.data + in_end, inbuf.size - in_end, 0);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return FALSE;
	in_end += n;
	return TRUE;
}

/* The next frame: its verb, and its payload NUL-terminated in payload.data. */
static int
recv_frame(char *verb, size_t verb_size, size_t *len)
{
	char header[64];
	size_t i = 0, got = 0, chunk;
	unsigned long long length;

	for (;;) {
		if (in_start == in_end && !fill())
			return FALSE;
		if (inbuf.data[in_start] == '\n') {
			in_start++;
			break;
		}
		if (i + 1 >= sizeof(header))
			return FALSE;
		header[i++] = inbuf.data[in_start++];
	}
	header[i] = NULLCHAR;
	if (sscanf(header, "%31s %llu", verb, &length) != 2 || length > MAX_FRAME || strlen(verb) >= verb_size)
		return FALSE;
	if (!reserve(&payload, length + 1))
		return FALSE;
	while (got < length) {
		if (in_start == in_end && !fill())
			return FALSE;
		chunk = MIN(length - got, in_end - in_start);
		memcpy(payload.data + got, inbuf.data + in_start, chunk);
		in_start += chunk;
		got += chunk;
	}
	payload.data[length] = NULLCHAR;
	*len = length;
	return TRUE;
}

/* -- answers to the Python process's requests ------------------------------ */

static int
answer_number(long value)
{
	char buf[32];

	if (value < 0)
		return send_frame("none", "", 0);
	snprintf(buf, sizeof(buf), "%ld", value);
	return send_text("ok", buf);
}

/* read "ADDRESS SIZE" (hex, decimal): the bytes, or err and why. */
static int
answer_read(const char *request)
{
	ulonglong address;
	long size;

	if (sscanf(request, "%llx %ld", &address, &size) != 2 || size < 0 || size > MAX_READ)
		return send_text("err", "bad read request");
	if (!reserve(&scratch, size ? size : 1))
		return send_text("err", "out of memory");
	if (!readmem(address, KVADDR, scratch.data, size, "kdlgdb", RETURN_ON_ERROR | QUIET))
		return send_text("err", "not readable in crash");
	return send_frame("ok", scratch.data, size);
}

/* symbol NAME: its address in the vmlinux (as crash has relocated it). */
static int
answer_symbol(char *name)
{
	struct syment *sp = kernel_symbol_search(name);
	char buf[32];

	if (!sp)
		return send_frame("none", "", 0);
	snprintf(buf, sizeof(buf), "%lx", sp->value);
	return send_text("ok", buf);
}

static int
answer_symbol_size(char *name)
{
	struct gnu_request req;

	if (get_symbol_type(name, NULL, &req) == TYPE_CODE_UNDEF)
		return send_frame("none", "", 0);
	return answer_number(req.length);
}

/*
 * "struct mutex" as crash's datatype_info() finds it fastest: by its tag, which gdb
 * looks up directly (a whole "struct mutex" goes through gdb's expression parser).
 */
static char *
tag(char *type)
{
	if (STRNEQ(type, "struct "))
		return type + strlen("struct ");
	if (STRNEQ(type, "union "))
		return type + strlen("union ");
	return type;
}

/*
 * member "TYPE\tPATH": "OFFSET SIZE" of a member, dotted for nested ones
 * ("thread.sp"); none if there is no such member, err if a step's type has no
 * name to look it up by (the Python side then asks gdb to evaluate the path).
 */
static int
answer_member(char *request)
{
	struct datatype_member dm;
	char *member = strchr(request, '\t');
	char *type = tag(request), *dot;
	long offset = 0;
	char buf[64];

	if (!member)
		return send_frame("none", "", 0);
	*member++ = NULLCHAR;
	for (; member; member = dot) {
		if ((dot = strchr(member, '.')))
			*dot++ = NULLCHAR;
		BZERO(&dm, sizeof(dm));
		if (datatype_info(type, member, &dm) < 0 || dm.member_offset < 0)
			return send_frame("none", "", 0);
		offset += dm.member_offset;
		if (!dot)
			break;
		if (dm.member_typecode == TYPE_CODE_PTR || dm.member_typecode == TYPE_CODE_ARRAY)
			return send_frame("none", "", 0);	/* "a.b" needs a struct, union or typedef of one */
		if (!(type = MEMBER_TYPE_NAME(type, member)))
			return send_text("err", "a member of a type without a name");
	}
	snprintf(buf, sizeof(buf), "%ld %ld", offset, dm.member_size);
	return send_text("ok", buf);
}

/* gdb COMMAND: what crash's gdb prints for it (empty if it failed). */
static int
answer_gdb(char *command)
{
	long size;

	if (!gdb_output && !(gdb_output = tmpfile()))
		return send_frame("ok", "", 0);
	rewind(gdb_output);
	if (ftruncate(fileno(gdb_output), 0) < 0)
		return send_frame("ok", "", 0);
	gdb_pass_through(command, gdb_output, GNU_RETURN_ON_ERROR);
	fflush(gdb_output);
	size = ftell(gdb_output);
	if (size <= 0 || !reserve(&scratch, size))
		return send_frame("ok", "", 0);
	rewind(gdb_output);
	size = fread(scratch.data, 1, size, gdb_output);
	return send_frame("ok", scratch.data, size);
}

static int
answer_vmcoreinfo(char *key)
{
	char *value = pc->read_vmcoreinfo ? pc->read_vmcoreinfo(key) : NULL;
	int sent;

	if (!value)
		return send_frame("none", "", 0);
	sent = send_text("ok", value);
	free(value);
	return sent;
}

/* describe: "FORMAT\tDUMPFILE\tVMLINUX\tcrash VERSION", the format as crash knows it. */
static int
answer_describe(void)
{
	char buf[3 * PATH_MAX];
	const char *format;

	if (ACTIVE())
		format = "live system";
	else if (DISKDUMP_DUMPFILE())
		format = "kdump-compressed vmcore";
	else if (KDUMP_DUMPFILE() || NETDUMP_DUMPFILE())
		format = "ELF vmcore";
	else
		format = "dump";
	snprintf(buf, sizeof(buf), "%s\t%s\t%s\t%s %s", format, pc->dumpfile ? pc->dumpfile : "",
		 pc->namelist ? pc->namelist : "", pc->program_name, pc->program_version);
	return send_text("ok", buf);
}

static int
answer(const char *verb, char *request)
{
	if (STREQ(verb, "read"))
		return answer_read(request);
	if (STREQ(verb, "symbol"))
		return answer_symbol(request);
	if (STREQ(verb, "symbol_size"))
		return answer_symbol_size(request);
	if (STREQ(verb, "type_size"))
		return answer_number(datatype_info(tag(request), NULL, NULL));
	if (STREQ(verb, "member"))
		return answer_member(request);
	if (STREQ(verb, "gdb"))
		return answer_gdb(request);
	if (STREQ(verb, "vmcoreinfo"))
		return answer_vmcoreinfo(request);
	if (STREQ(verb, "describe"))
		return answer_describe();
	return send_text("err", "unknown request");
}

/* -- the commands ----------------------------------------------------------- */

static int
color_wanted(void)
{
	if (settings.color != 2)
		return settings.color;
	return fp == stdout && isatty(fileno(stdout));
}

/* run: "COMMAND\0COLOR\0DEBUG\0LIVE\0ARG\0ARG..." (each flag "0" or "1"). */
static int
send_run(void)
{
	char flags[3][2] = { { '0' + color_wanted() }, { '0' + settings.debug }, { '0' + !!ACTIVE() } };
	char *fields[MAXARGS + 3];
	size_t len = 0, n;
	int i, count = 0;

	fields[count++] = args[0];
	for (i = 0; i < 3; i++)
		fields[count++] = flags[i];
	for (i = 1; i < argcnt && count < MAXARGS + 3; i++)
		fields[count++] = args[i];
	for (i = 0; i < count; i++) {
		n = strlen(fields[i]) + 1;
		if (!reserve(&scratch, len + n))
			return FALSE;
		memcpy(scratch.data + len, fields[i], n);
		len += n;
	}
	return send_frame("run", scratch.data, len - 1);
}

/* TRUE if the Python process of an earlier command still runs (it may have died since). */
static int
python_alive(void)
{
	if (!py.pid)
		return FALSE;
	if (waitpid(py.pid, NULL, WNOHANG) == 0)
		return TRUE;
	py.pid = 0;	/* crash may have reaped it already */
	stop_python();
	return FALSE;
}

/* Every kd-* command: the Python process does the work, asking us for what it reads. */
static void
cmd_kd(void)
{
	char verb[32];
	size_t len;

	kd_cleanup();
	if (!python_alive() && !start_python())
		return;
	py.busy = TRUE;
	if (!send_run()) {
		python_died();
		return;
	}
	while (recv_frame(verb, sizeof(verb), &len)) {
		if (STREQ(verb, "done") || STREQ(verb, "error")) {
			/* The Python process is ready for the next command, even if `| head` cuts this output. */
			py.busy = FALSE;
			end_progress();
			if (STREQ(verb, "error"))
				error(INFO, "%s\n", payload.data);
			else
				fwrite(payload.data, 1, len, fp);
			fflush(fp);
			return;
		} else if (STREQ(verb, "progress")) {
			show_progress(payload.data);
		} else if (!answer(verb, payload.data)) {
			break;
		}
	}
	python_died();
}

static void
show_settings(void)
{
	fprintf(fp, "color %s\ndebug %s\n", settings.color == 2 ? "auto" : settings.color ? "on" : "off",
		settings.debug ? "on" : "off");
}

static void
cmd_kd_set(void)
{
	int i;

	if (argcnt == 1) {
		show_settings();
		return;
	}
	if (argcnt % 2 != 1) {
		error(INFO, "give a setting and its value: kd-set [color on|off|auto] [debug on|off]\n");
		return;
	}
	for (i = 1; i < argcnt; i += 2) {
		if (STREQ(args[i], "color") && STREQ(args[i + 1], "auto"))
			settings.color = 2;
		else if (STREQ(args[i], "color") && (STREQ(args[i + 1], "on") || STREQ(args[i + 1], "off")))
			settings.color = STREQ(args[i + 1], "on");
		else if (STREQ(args[i], "debug") && (STREQ(args[i + 1], "on") || STREQ(args[i + 1], "off")))
			settings.debug = STREQ(args[i + 1], "on");
		else {
			error(INFO, "unknown setting '%s %s': kd-set [color on|off|auto] [debug on|off]\n",
			      args[i], args[i + 1]);
			return;
		}
	}
}
