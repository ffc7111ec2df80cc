/*
 * status.h - a daemon's figures for operators: a local status socket, the
 * `status` command that reads it, and the same figures as Prometheus text
 * over HTTP.
 *
 * The daemon supplies one callback that fills a report: for each service a
 * name and a role, then rows of (name, unit, value). The server calls it
 * afresh for every client, so figures are never stale and the daemon keeps
 * no second copy of them. Both outputs come from the same rows:
 *   - the status socket answers one text line per row,
 *     "SERVICE<TAB>ROLE<TAB>NAME<TAB>UNIT<TAB>VALUE", after a version line,
 *     then closes; status_print() turns that into a block per service;
 *   - GET /metrics answers PREFIX_NAME[_UNIT]{service="S",role="R"} VALUE,
 *     grouped by metric as the exposition format wants.
 * A row whose value is NAN ("not yet": no heartbeat so far, no pid) shows
 * as "-" and is left out of the metrics.
 *
 * The socket is local and has no authentication beyond its file mode
 * (0660): it tells figures, it takes no commands.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "config.h"

#define STATUS_PROTO_LINE "checksync-status 1"

struct event_base;
struct status_report;

/* Start the rows of one service; role ("backup", "serving", ...) labels them. */
void status_report_service(struct status_report *r, const char *service, const char *role);

/*
 * One figure of the current service. unit is "" (a count or a number),
 * "bytes" or "seconds" (status_print shows seconds as milliseconds); help
 * is the metric's # HELP text. Names are [a-z0-9_]; a counter only grows.
 * The metric is PREFIX_NAME_UNIT, and a counter's ends in _total too
 * (Prometheus's conventions): name it without either. A figure both
 * daemons report has the same name on both.
 */
void status_report_gauge(struct status_report *r, const char *name, const char *unit, double value,
			 const char *help);
void status_report_counter(struct status_report *r, const char *name, const char *unit,
			   double value, const char *help);

/*
 * A figure that is words, not a number ("live", a file's path): the status
 * socket carries the text in the VALUE field with unit "text", and /metrics
 * an info-style sample, PREFIX_NAME{service=..,role=..,NAME="TEXT"} 1.
 * Text is cut at 255 bytes.
 */
void status_report_text(struct status_report *r, const char *name, const char *text,
			const char *help);

/*
 * A duration histogram (hist.h) of the current service, in seconds: on the
 * socket as NAME_p50, NAME_p99 and NAME_count rows; in the metrics as a
 * Prometheus histogram (NAME_seconds_bucket{le=...}, _sum, _count). h must
 * stay valid until the fill callback returns (the report is rendered then).
 */
struct hist;
void status_report_histogram(struct status_report *r, const char *name, const struct hist *h,
			     const char *help);

typedef void (*status_fill_fn)(struct status_report *r, void *userdata);

struct status_server;

/*
 * Serve the status socket at socket_path (a stale socket file is replaced;
 * one a live daemon answers on is -EADDRINUSE) and, if metrics is set,
 * GET /metrics on it. Metric names start with prefix ("checksync").
 * Returns 0 or -errno with err filled.
 */
int status_server_new(struct event_base *base, const char *socket_path,
		      const struct hostport *metrics, const char *prefix, status_fill_fn fill,
		      void *userdata, struct status_server **out, char *err, size_t errlen);

/* Stop serving, drop clients still being answered and remove the socket file. */
void status_server_free(struct status_server *s);

/*
 * The status command: ask the daemon at socket_path and print its answer
 * to out, a block per service. Returns 0 or -errno with err filled.
 */
int status_print(const char *socket_path, FILE *out, char *err, size_t errlen);

/*
 * One figure (row name) of one service from the daemon at socket_path,
 * waiting at most timeout_ms for the answer. 0, -ENOENT when it has no
 * such row, or -errno with err filled.
 */
int status_read_value(const char *socket_path, const char *service, const char *name,
		      int timeout_ms, double *value, char *err, size_t errlen);
