/*
 * pyproc.c - the Python process that does kdlgdb's work inside crash, and its socket.
 *
 * Started by the first kd-* command (start_python), it lives to the end of the
 * crash session or until a command is interrupted (stop_python). The frames on
 * the socket are "VERB LENGTH\n" and LENGTH bytes; the protocol is described
 * once, in src/kdlgdb/target/crash.py.
 */

#define _GNU_SOURCE	/* dladdr */
#include "kdlgdb.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

struct python_process py = { 0, -1, NULL, 0 };
struct buffer payload, scratch;
static struct buffer inbuf;
static size_t in_start, in_end;

void
free_python_buffers(void)
{
	free(inbuf.data);
	free(payload.data);
	free(scratch.data);
}

int
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

void
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

int
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

void
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

/* TRUE if the Python process of an earlier command still runs (it may have died since). */
int
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

int
send_frame(const char *verb, const void *data, size_t len)
{
	char header[64];

	snprintf(header, sizeof(header), "%s %zu\n", verb, len);
	return send_all(header, strlen(header)) && send_all(data, len);
}

int
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
int
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
