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
 * The process and the frames on its socket are pyproc.c's; the protocol is
 * described once, in src/kdlgdb/target/crash.py.
 *
 * The Python process lives from the first kd-* command to the end of the crash
 * session, so a kernel is read once.  A command interrupted before the Python
 * process has answered (Ctrl-C) leaves it in an unknown state: crash's restart()
 * calls kd_cleanup(), which ends it; the next kd-* command starts a new one.
 * Only crash handles Ctrl-C: the Python process ignores SIGINT.
 */

#include "kdlgdb.h"

static void cmd_kd(void);

#include "help.h" /* help_kd_*[] and KD_COMMANDS, generated from the commands' argparse declarations */

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

static struct {
	int debug;
	int color;		/* 0 off, 1 on, 2 auto */
} settings = { 0, 2 };

static FILE *gdb_output;

static void __attribute__((constructor))
kdlgdb_init(void)
{
	register_extension(command_table);
}

static void __attribute__((destructor))
kdlgdb_fini(void)
{
	stop_python();
	if (gdb_output)
		fclose(gdb_output);
	free_python_buffers();
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
