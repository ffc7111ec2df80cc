/*
 * control.h - operator commands to a running daemon, over a local socket
 * beside the status socket: STATUS_SOCKET.ctl, mode 0600 (root only),
 * since unlike figures a command changes what the daemon does.
 *
 * Protocol: the client sends one line, the command and its words
 * separated by spaces ("handover kvserver"); the daemon answers any number
 * of progress lines "- TEXT" and then one final line, "ok TEXT" or
 * "error TEXT", and closes. The answer may take as long as the command
 * does (a handover waits for the backup): the daemon keeps the request
 * until it calls control_reply(), even if the client has gone meanwhile.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#define CONTROL_SUFFIX ".ctl"
#define CONTROL_MAX_LINE 512
#define CONTROL_MAX_WORDS 8
#define CONTROL_CLIENT_TIMEOUT_SEC 60 /* a handover waits on the backup; never longer */

struct event_base;
struct control_server;
struct control_request;

/* A command: argv[0] is its name. Answer with control_reply(), now or later. */
typedef void (*control_fn)(struct control_request *req, int argc, char **argv, void *userdata);

/* Serve STATUS_SOCKET.ctl. Returns 0 or -errno with err filled. */
int control_server_new(struct event_base *base, const char *status_socket, control_fn fn,
		       void *userdata, struct control_server **out, char *err, size_t errlen);
/* Drop the clients (unanswered requests are freed) and remove the socket file. */
void control_server_free(struct control_server *s);

/* A progress line; the request stays open. */
void control_progress(struct control_request *req, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The final line; req is freed (its client gets the answer if it is still there). */
void control_reply(struct control_request *req, bool ok, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * The client side: send argv (argc words) to the daemon whose status
 * socket is status_socket, print progress and the final line's text to
 * out. Returns 0 for "ok", 1 for "error" (the text then goes to stderr as
 * an error line), or -errno with err filled when the daemon cannot be asked.
 */
int control_send(const char *status_socket, int argc, char *const argv[], FILE *out, char *err,
		 size_t errlen);
