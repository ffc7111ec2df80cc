/*
 * handoff.c - see handoff.h.
 */
#include "handoff.h"

#include <event2/event.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "control.h"
#include "daemon.h"
#include "log.h"
#include "service.h"
#include "status.h"
#include "store.h"
#include "util.h"
#include "witness.h"

#define HANDOFF_RETRY_MS 1000

/*
 * The child's exit status: asked and accepted, asked and refused, nobody to
 * ask, or accepted but our primaryd did not take the witness's key in time.
 */
enum { HANDOFF_OK = 0, HANDOFF_REFUSED = 1, HANDOFF_NOBODY = 2, HANDOFF_NO_KEY = 3 };


struct handoff {
	struct service *svc;
	struct child *child;
	struct event *retry;
	pid_t pid;
	uint64_t epoch, incarnation;
	unsigned tries;
};

/*
 * With a witness, the key we took to restore must pass to our primaryd,
 * which serves from now on (its handover, deposed and stop release it).
 * Both take it under this host's name, so its take moves the key onto its
 * own lease; only then may we revoke ours (earlier, the key would be gone
 * for a moment and the peer's backupd could take it). Polled on its status
 * socket, in the child: the loop never waits.
 */
#define HANDOFF_KEY_POLL_MS 100

static bool primaryd_holds_key(const struct handoff *h)
{
	const struct service_config *c = h->svc->cfg;
	uint32_t waited = 0, limit = 2 * c->witness_ttl_ms + c->failover_timeout_ms;
	double held = 0;
	char err[256];

	for (; waited <= limit; waited += HANDOFF_KEY_POLL_MS) {
		if (status_read_value(h->svc->d->cfg.primaryd_socket, c->name, "witness_held",
				      HANDOFF_KEY_POLL_MS, &held, err, sizeof(err)) >= 0 &&
		    held == 1)
			return true;
		usleep(HANDOFF_KEY_POLL_MS * 1000);
	}
	log_warn("%s: this host's primaryd did not take the witness's key within %u ms; "
		 "keeping ours",
		 c->name, limit);
	return false;
}

/* In the child: ask, log the answer, exit with what became of it. */
static int ask(void *arg)
{
	struct handoff *h = arg;
	char pid[16], inc[20], epoch[24], err[512];
	char *argv[] = {"adopt", h->svc->cfg->name, pid, inc, epoch, NULL};
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	int r;

	snprintf(pid, sizeof(pid), "%d", h->pid);
	snprintf(inc, sizeof(inc), "%016" PRIx64, h->incarnation);
	snprintf(epoch, sizeof(epoch), "%" PRIu64, h->epoch);
	if (!out)
		_exit(HANDOFF_NOBODY);
	r = control_send(h->svc->d->cfg.primaryd_socket, 5, argv, out, err, sizeof(err));
	fclose(out);
	if (r < 0) {
		if (h->tries == 0)
			log_warn("%s: cannot hand the restored service (pid %d) to this host's "
				 "primaryd: %s; it runs here UNPROTECTED; asking again every %d ms",
				 h->svc->cfg->name, h->pid, err, HANDOFF_RETRY_MS);
		_exit(HANDOFF_NOBODY);
	}
	if (r == 0)
		log_info("%s: handed the restored service to this host's primaryd: %s",
			 h->svc->cfg->name, text && *text ? strtok(text, "\n") : "accepted");
	else
		log_error("%s: this host's primaryd refused the restored service (pid %d), which "
			  "runs here UNPROTECTED (its reason is above)",
			  h->svc->cfg->name, h->pid);
	if (r != 0)
		_exit(HANDOFF_REFUSED);
	_exit(h->svc->witness && !primaryd_holds_key(h) ? HANDOFF_NO_KEY : HANDOFF_OK);
}

static void send_adopt(struct handoff *h);

static void on_retry(evutil_socket_t fd, short what, void *arg)
{
	struct handoff *h = arg;

	(void)fd, (void)what;
	/* Only while the process we restored still runs and is still what we serve. */
	if (h->svc->fo.state != FAILOVER_SERVING || h->svc->fo.pid_ended ||
	    h->svc->fo.pid != h->pid)
		return;
	send_adopt(h);
}

static void on_answer(pid_t cpid, int status, void *arg)
{
	struct handoff *h = arg;
	struct timeval tv = {.tv_sec = HANDOFF_RETRY_MS / 1000,
			     .tv_usec = HANDOFF_RETRY_MS % 1000 * 1000};

	(void)cpid;
	h->child = NULL;
	h->tries++;
	if (WIFEXITED(status) && WEXITSTATUS(status) == HANDOFF_NOBODY)
		evtimer_add(h->retry, &tv);
	/* Our primaryd holds the key now: a backupd that handed off holds nothing. */
	if (WIFEXITED(status) && WEXITSTATUS(status) == HANDOFF_OK && h->svc->witness) {
		log_info("%s: this host's primaryd holds the witness's key: letting ours go",
			 h->svc->cfg->name);
		witness_want(h->svc->witness, false);
	}
}

static void send_adopt(struct handoff *h)
{
	int r = child_fork(h->svc->d->base, ask, h, on_answer, h, &h->child);

	if (r < 0)
		log_error("%s: cannot hand the restored service to this host's primaryd: %s",
			  h->svc->cfg->name, strerror(-r));
}

struct handoff *handoff_start(struct service *svc, pid_t pid, uint64_t epoch)
{
	struct handoff *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	*h = (struct handoff){.svc = svc,
			      .pid = pid,
			      .epoch = epoch,
			      .incarnation = store_incarnation(svc->store),
			      .retry = evtimer_new(svc->d->base, on_retry, h)};
	if (!h->retry) {
		free(h);
		return NULL;
	}
	send_adopt(h);
	return h;
}

void handoff_free(struct handoff *h)
{
	if (!h)
		return;
	child_free(h->child, true);
	if (h->retry)
		event_free(h->retry);
	free(h);
}
