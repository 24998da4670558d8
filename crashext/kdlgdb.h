/*
 * kdlgdb.h - what the two halves of kdlgdb's crash extension share.
 *
 * kdlgdb.c: the kd-* commands in crash and the answers to the Python process's
 * requests (memory, symbols, types, from crash). pyproc.c: the Python process
 * itself (started, ended, its last words) and the frames on its socket.
 */
#ifndef KDLGDB_H
#define KDLGDB_H

#include "defs.h"

#define PYTHON_DEFAULT "/usr/bin/python3"
#define MAX_READ (64L << 20)
#define MAX_FRAME (256L << 20)

/* The Python process, while it runs. */
struct python_process {
	pid_t pid;
	int sock;		/* our end of its socket */
	FILE *stderr_file;	/* what it writes on stderr (shown if it dies) */
	int busy;		/* a command is in progress */
};
extern struct python_process py;

/* Buffers reused across requests: a longjmp out of a command leaks nothing. */
struct buffer {
	char *data;
	size_t size;
};
extern struct buffer payload, scratch;	/* the last frame's payload (NUL-terminated); any answer's */

int reserve(struct buffer *buf, size_t size);

int start_python(void);
void stop_python(void);
int python_alive(void);
void python_died(void);
void free_python_buffers(void);

int send_frame(const char *verb, const void *data, size_t len);
int send_text(const char *verb, const char *text);
int recv_frame(char *verb, size_t verb_size, size_t *len);

#endif
