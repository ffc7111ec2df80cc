/*
 * outcommit.c - hold a service's output until the backup has its state.
 *
 * Mechanism: an NFQUEUE. A chain of our own in the mangle table's OUTPUT
 * (CHECKSYNC-OC-<hash of the service name>) sends every packet whose source
 * port is one the service listens on (TCP) or is bound to (UDP) to a
 * netfilter queue that this daemon binds. The kernel keeps each packet and
 * tells us only its id (copy mode "meta": no payload crosses to us); ids
 * grow in the order packets were queued. At an epoch's stop point the
 * newest id seen is that epoch's mark; when the backup acknowledges epoch
 * E, one batch verdict accepts every packet up to the mark of the newest
 * epoch <= E. This is the plug qdisc's buffer/release_one, in the place
 * where this host's kernel can do it: it is built without sch_plug
 * (CONFIG_NET_SCH_PLUG) and cannot load modules, so sch_plug through
 * libnl-route-3 is not available here.
 *
 * Scope: OUTPUT sees every packet sent from this host, loopback included,
 * so a client on the same host is held as one elsewhere is. The rule
 * matches the service's cgroup (cgroup.h): a socket belongs to the cgroup
 * of the process that made it, a connection accepted on it to the
 * listener's. So every packet of the service is held from its first, on
 * any port, listened on, bound later or dialled out, and no packet of any
 * other program (our own link to the backup, a client on this host) is.
 * Chosen over the list of the service's ports (which held a port only
 * from the first epoch that saw it, and never a connection the service
 * opened itself), over its uid (a service may run as root, as we do),
 * and over a network namespace of its own (that would change the
 * service's network and the address a takeover moves).
 *
 * Why the mark is taken just before the stop, not while the service is
 * held (the capture owns that moment): a packet is queued when the kernel
 * sends it, never before the write that made it, so every id seen before
 * the stop is output of state the epoch holds. Output sent between the
 * mark and the stop waits one epoch more, which is safe; a mark taken once
 * the service runs again could count a reply of the next epoch into this.
 *
 * Fail closed: the queue is bound without "bypass", so when this daemon is
 * gone (its queue with it) the service's packets are dropped, not sent;
 * TCP sends them again once someone serves. A chain left by a primaryd
 * killed with -9 is emptied by the next one that starts for the service.
 * On an orderly end (outcommit_close) the service is already dead: what
 * its sockets still hold is destroyed before the rules go.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <event2/event.h>
#include <fcntl.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_queue.h>
#include <netinet/in.h>
#include <netlink/attr.h>
#include <netlink/msg.h>
#include <netlink/netfilter/nfnl.h>
#include <netlink/netfilter/queue.h>
#include <netlink/netfilter/queue_msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <stdarg.h>
#include <sys/wait.h>

#include "log.h"
#include "outcommit.h"
#include "status.h"
#include "util.h"

#define QUEUE_FIRST 17200 /* queue numbers tried, per network namespace */
#define QUEUE_TRIES 64
#define QUEUE_MAXLEN 65536 /* packets held at once; more are dropped (TCP resends) */
#define RCVBUF (16 << 20)  /* one meta message per packet, ~100 bytes */
#define MAX_MARKS 4096

struct oc_mark {
	uint64_t epoch;
	uint32_t id;   /* newest packet of the epoch */
	uint64_t seen; /* packets queued up to it */
};

struct outcommit {
	char *service;
	char chain[32];
	uint16_t queue;
	struct nl_sock *sk;
	struct event *ev;

	bool have_id;
	uint32_t last_id; /* newest packet queued */
	uint64_t seen;	  /* packets queued since we started */
	struct oc_mark stop;
	bool stop_valid;
	struct oc_mark *marks; /* sent epochs not yet acknowledged, oldest first */
	size_t n_marks, cap_marks;
	bool passing; /* no backup can hold the state yet: packets go at once (outcommit_pass) */
	bool released_any;
	uint32_t released_id;
	uint64_t released; /* packets let go */
	uint64_t overruns;

	char cgroup[PATH_MAX]; /* the service's, in the cgroup v2 hierarchy */

	bool chain_made; /* ours is set up (or half set up) */
	bool failed;
	char error[256];
};

/* ---------- ids ---------- */

/* Packet ids wrap at 2^32: a is after b if the distance forward is under half of that. */
static bool id_after(uint32_t a, uint32_t b) { return (int32_t)(a - b) > 0; }

/* ---------- failing loudly, once ---------- */

static void step_aside(struct outcommit *oc);
static void fail(struct outcommit *oc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct outcommit *oc, const char *fmt, ...)
{
	va_list ap;
	if (oc->failed)
		return;
	va_start(ap, fmt);
	vsnprintf(oc->error, sizeof(oc->error), fmt, ap);
	va_end(ap);
	oc->failed = true;
	log_error("%s: output commit is NOT in force, replies leave unheld: %s", oc->service,
		  oc->error);
	step_aside(oc);
}

/* ---------- iptables and ss ---------- */

/*
 * Run a tool (no shell), its output kept for the message. There is no kept
 * library for xtables rules, and nftables' own queue statement is not built
 * into this kernel; the NFQUEUE target is, through the iptables command.
 * Returns 0, or -EIO with the command and its first line of complaint in err.
 */
static int run_tool(const char *const *argv, char *err, size_t errlen)
{
	static const char *const dirs[] = {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"};
	int pipefd[2], st;

	if (pipe2(pipefd, O_CLOEXEC) < 0)
		return -errno;
	pid_t pid = fork();
	if (pid < 0) {
		close(pipefd[0]);
		close(pipefd[1]);
		return -errno;
	}
	if (pid == 0) {
		char full[64];
		dup2(pipefd[1], 1);
		dup2(pipefd[1], 2);
		for (size_t i = 0; i < ARRAY_SIZE(dirs); i++) {
			snprintf(full, sizeof(full), "%s%s", dirs[i], argv[0]);
			execv(full, (char *const *)argv);
		}
		dprintf(2, "not found in /usr/sbin, /sbin, /usr/bin or /bin\n");
		_exit(127);
	}
	close(pipefd[1]);
	char out[512];
	ssize_t len = 0, k;
	while ((k = read(pipefd[0], out + len, sizeof(out) - 1 - len)) > 0 &&
	       (size_t)(len += k) < sizeof(out) - 1)
		;
	close(pipefd[0]);
	out[len] = 0;
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0)
		return 0;
	out[strcspn(out, "\n")] = 0;
	size_t off = 0;
	for (size_t i = 0; argv[i] && off < errlen; i++)
		off += snprintf(err + off, errlen - off, "%s%s", i ? " " : "`", argv[i]);
	if (off < errlen)
		snprintf(err + off, errlen - off, "` failed: %.160s", *out ? out : "no output");
	return -EIO;
}

/* iptables (or ip6tables) -w -t mangle ARGS... */
static int xtables(bool v6, const char *const *args, char *err, size_t errlen)
{
	const char *argv[16] = {v6 ? "ip6tables" : "iptables", "-w", "-t", "mangle"};
	size_t n = 4;
	for (size_t i = 0; args[i] && n < ARRAY_SIZE(argv) - 1; i++)
		argv[n++] = args[i];
	argv[n] = NULL;
	return run_tool(argv, err, errlen);
}

/* The one rule: the service's cgroup's packets to our queue. */
static int rule(struct outcommit *oc, bool v6, char *err, size_t errlen)
{
	char queue[8];
	snprintf(queue, sizeof(queue), "%u", oc->queue);
	const char *args[] = {"-A",	 oc->chain, "-m",	   "cgroup", "--path", oc->cgroup,
			      "-j",	 "NFQUEUE", "--queue-num", queue,    NULL};
	return xtables(v6, args, err, errlen);
}

/* An empty chain of ours, jumped to from OUTPUT, in both tables. */
static int chain_setup(struct outcommit *oc, char *err, size_t errlen)
{
	for (int v6 = 0; v6 < 2; v6++) {
		const char *new[] = {"-N", oc->chain, NULL}, *flush[] = {"-F", oc->chain, NULL};
		const char *check[] = {"-C", "OUTPUT", "-j", oc->chain, NULL};
		const char *jump[] = {"-I", "OUTPUT", "1", "-j", oc->chain, NULL};
		xtables(v6, new, err, errlen); /* it may be there from a primaryd killed with -9 */
		int r = xtables(v6, flush, err, errlen);
		if (r == 0)
			r = rule(oc, v6, err, errlen);
		if (r == 0 && xtables(v6, check, err, errlen) < 0)
			r = xtables(v6, jump, err, errlen);
		if (r < 0)
			return r;
	}
	return 0;
}

static void chain_remove(struct outcommit *oc)
{
	char err[256];
	for (int v6 = 0; v6 < 2; v6++) {
		const char *unjump[] = {"-D", "OUTPUT", "-j", oc->chain, NULL};
		const char *flush[] = {"-F", oc->chain, NULL}, *del[] = {"-X", oc->chain, NULL};
		if (xtables(v6, unjump, err, sizeof(err)) < 0 ||
		    xtables(v6, flush, err, sizeof(err)) < 0 ||
		    xtables(v6, del, err, sizeof(err)) < 0)
			log_warn("%s: output commit: %s", oc->service, err);
	}
}

/* ---------- the queue ---------- */

static int on_packet(struct nl_msg *msg, void *arg)
{
	struct outcommit *oc = arg;
	struct nlmsghdr *nlh = nlmsg_hdr(msg);
	struct nlattr *tb[NFQA_MAX + 1];

	if (nfnlmsg_subsys(nlh) != NFNL_SUBSYS_QUEUE || nfnlmsg_subtype(nlh) != NFQNL_MSG_PACKET)
		return NL_SKIP;
	if (nlmsg_parse(nlh, sizeof(struct nfgenmsg), tb, NFQA_MAX, NULL) < 0 ||
	    !tb[NFQA_PACKET_HDR] ||
	    nla_len(tb[NFQA_PACKET_HDR]) < (int)sizeof(struct nfqnl_msg_packet_hdr))
		return NL_SKIP;
	const struct nfqnl_msg_packet_hdr *h = nla_data(tb[NFQA_PACKET_HDR]);
	oc->last_id = ntohl(h->packet_id);
	oc->have_id = true;
	oc->seen++;
	return NL_OK;
}

/* Read every packet notice waiting on the socket (nl_recvmsgs reads one datagram a call). */
static void drain(struct outcommit *oc)
{
	struct nl_cb *cb = nl_socket_get_cb(oc->sk);
	for (;;) {
		int r = nl_recvmsgs_report(oc->sk, cb);
		if (r > 0 || r == -NLE_INTR)
			continue;
		if (r == -NLE_NOMEM) {
			/* ENOBUFS: the kernel dropped packets it could not tell us of. */
			oc->overruns++;
			continue;
		}
		if (r < 0 && r != -NLE_AGAIN)
			fail(oc, "reading the queue: %s", nl_geterror(r));
		break;
	}
	nl_cb_put(cb);
}

static void release_to(struct outcommit *oc, const struct oc_mark *m);

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
	struct outcommit *oc = arg;
	(void)fd;
	(void)what;
	drain(oc);
	if (oc->passing && oc->have_id && !oc->failed)
		release_to(oc, &(struct oc_mark){.id = oc->last_id, .seen = oc->seen});
}

/* Bind the first free queue number: meta copies only, GSO packets whole, a long queue. */
static int queue_bind(struct outcommit *oc)
{
	int r = -EBUSY;
	for (int i = 0; i < QUEUE_TRIES; i++) {
		struct nfnl_queue *q = nfnl_queue_alloc();
		struct nl_msg *msg = NULL;
		if (!q)
			return -NLE_NOMEM;
		nfnl_queue_set_group(q, QUEUE_FIRST + i);
		nfnl_queue_set_copy_mode(q, NFNL_QUEUE_COPY_META);
		nfnl_queue_set_maxlen(q, QUEUE_MAXLEN);
		r = nfnl_queue_build_create_request(q, &msg);
		nfnl_queue_put(q);
		if (r < 0)
			return r;
		nla_put_u32(msg, NFQA_CFG_FLAGS, htonl(NFQA_CFG_F_GSO));
		nla_put_u32(msg, NFQA_CFG_MASK, htonl(NFQA_CFG_F_GSO));
		r = nl_send_auto(oc->sk, msg);
		nlmsg_free(msg);
		if (r >= 0)
			r = nl_wait_for_ack(oc->sk);
		if (r >= 0) {
			oc->queue = QUEUE_FIRST + i;
			return 0;
		}
		/* Taken by another socket (another service, another primaryd): EPERM. */
		if (r != -NLE_PERM && r != -NLE_BUSY && r != -NLE_EXIST)
			return r;
	}
	return r;
}

static int queue_open(struct outcommit *oc, struct event_base *base)
{
	int r;
	oc->sk = nfnl_queue_socket_alloc();
	if (!oc->sk)
		return -NLE_NOMEM;
	nl_socket_enable_auto_ack(oc->sk); /* for the bind: its errors come in the ack */
	r = nfnl_connect(oc->sk);
	if (r < 0)
		return r;
	int fd = nl_socket_get_fd(oc->sk), sz = RCVBUF;
	setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof(sz));
	r = queue_bind(oc);
	if (r < 0)
		return r;
	nl_socket_disable_auto_ack(oc->sk);  /* verdicts are not answered */
	nl_socket_disable_seq_check(oc->sk); /* packet notices carry no sequence */
	nl_socket_modify_cb(oc->sk, NL_CB_VALID, NL_CB_CUSTOM, on_packet, oc);
	r = nl_socket_set_nonblocking(oc->sk);
	if (r < 0)
		return r;
	oc->ev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, oc);
	if (!oc->ev || event_add(oc->ev, NULL) < 0)
		return -NLE_NOMEM;
	return 0;
}

/* Accept every packet up to id, in one message. */
static void release_to(struct outcommit *oc, const struct oc_mark *m)
{
	if (oc->released_any && !id_after(m->id, oc->released_id))
		return;
	struct nfnl_queue_msg *v = nfnl_queue_msg_alloc();
	struct nl_msg *msg = NULL;
	int r = -NLE_NOMEM;
	if (v) {
		nfnl_queue_msg_set_group(v, oc->queue);
		nfnl_queue_msg_set_family(v, AF_UNSPEC);
		nfnl_queue_msg_set_packetid(v, m->id);
		nfnl_queue_msg_set_verdict(v, NF_ACCEPT);
		msg = nfnl_queue_msg_build_verdict_batch(v);
		nfnl_queue_msg_put(v);
	}
	if (msg) {
		r = nl_send_auto(oc->sk, msg);
		nlmsg_free(msg);
	}
	if (r < 0) {
		fail(oc, "releasing packets up to id %u: %s", m->id, nl_geterror(r));
		return;
	}
	oc->released_any = true;
	oc->released_id = m->id;
	oc->released = m->seen;
}

/*
 * Once output commit has failed, our rules must not go on holding what
 * nobody will release (the service would be cut off): remove them, then
 * let go of what the queue still holds, so that the service runs unheld,
 * as the log and status say.
 */
static void step_aside(struct outcommit *oc)
{
	if (oc->chain_made) {
		chain_remove(oc);
		oc->chain_made = false;
	}
	if (oc->sk && oc->queue) {
		drain(oc);
		if (oc->have_id)
			release_to(oc, &(struct oc_mark){.id = oc->last_id, .seen = oc->seen});
	}
}

/* ---------- the hooks ---------- */

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

struct outcommit *outcommit_open(struct event_base *base, const char *service,
				 const char *cgroup)
{
	struct outcommit *oc = calloc(1, sizeof(*oc));
	char err[256];
	if (!oc || !(oc->service = strdup(service))) {
		free(oc);
		return NULL;
	}
	snprintf(oc->chain, sizeof(oc->chain), "CHECKSYNC-OC-%08x", name_hash(service));
	if (!cgroup)
		return oc; /* outcommit_refuse() says why */
	snprintf(oc->cgroup, sizeof(oc->cgroup), "%s", cgroup);
	int r = queue_open(oc, base);
	if (r < 0) {
		fail(oc, "cannot bind a netfilter queue (%d-%d all taken, or not permitted): %s",
		     QUEUE_FIRST, QUEUE_FIRST + QUEUE_TRIES - 1, nl_geterror(r));
		return oc;
	}
	oc->chain_made = true;
	if (chain_setup(oc, err, sizeof(err)) < 0) {
		fail(oc, "%s", err);
		return oc;
	}
	log_info("%s: output commit: the packets of cgroup %s wait in queue %u (chain %s) until "
		 "their epoch is acknowledged",
		 service, oc->cgroup, oc->queue, oc->chain);
	return oc;
}

void outcommit_refuse(struct outcommit *oc, const char *why)
{
	fail(oc, "%s", why);
}

void outcommit_pass(struct outcommit *oc, bool pass)
{
	if (!oc || oc->failed || oc->passing == pass)
		return;
	oc->passing = pass;
	if (pass) {
		log_info("%s: output commit: no backup holds the service's state yet: its packets "
			 "pass unheld until one answers", oc->service);
		on_readable(-1, 0, oc); /* what waits already */
	} else {
		/* What is still queued waits for the first epoch, whose mark comes after it. */
		log_info("%s: output commit: a backup answered: packets wait for their epoch again",
			 oc->service);
	}
}

void outcommit_stop_point(struct outcommit *oc)
{
	if (!oc || oc->failed)
		return;
	drain(oc);
	oc->stop = (struct oc_mark){.id = oc->last_id, .seen = oc->seen};
	oc->stop_valid = oc->have_id;
}

void outcommit_epoch(struct outcommit *oc, uint64_t epoch)
{
	if (!oc || oc->failed)
		return;
	if (oc->stop_valid &&
	    (!oc->n_marks || id_after(oc->stop.id, oc->marks[oc->n_marks - 1].id))) {
		if (oc->n_marks == MAX_MARKS) /* never acked for this long: fold the oldest two */
			memmove(oc->marks, oc->marks + 1, --oc->n_marks * sizeof(*oc->marks));
		struct oc_mark *m =
		    array_push(&oc->marks, &oc->n_marks, &oc->cap_marks, sizeof(*m));
		if (!m) {
			fail(oc, "out of memory");
			return;
		}
		*m = oc->stop;
		m->epoch = epoch;
	}
	oc->stop_valid = false;
}

/*
 * Epoch E acknowledged: the backup holds the state of every epoch up to E
 * (epochs merge, and a full epoch after a reconnect covers those whose ACK
 * was lost with the old connection), so the newest mark at or below E goes.
 */
void outcommit_acked(struct outcommit *oc, uint64_t epoch)
{
	size_t k = 0;
	if (!oc || oc->failed)
		return;
	while (k < oc->n_marks && oc->marks[k].epoch <= epoch)
		k++;
	if (!k)
		return;
	release_to(oc, &oc->marks[k - 1]);
	memmove(oc->marks, oc->marks + k, (oc->n_marks - k) * sizeof(*oc->marks));
	oc->n_marks -= k;
}

/*
 * TCP keeps sending what the service wrote before it died (orphaned
 * sockets flush their queues, then FIN): once our rules are gone that
 * would leave unheld, so the cgroup's sockets are destroyed first
 * (SOCK_DESTROY, through ss -K; their RST is still dropped by the rule
 * with no queue).
 */
static void destroy_sockets(struct outcommit *oc)
{
	char err[256];
	const char *argv[] = {"ss", "-K", "-a", "-n", "cgroup", oc->cgroup, NULL};
	if (run_tool(argv, err, sizeof(err)) < 0)
		log_warn("%s: output commit: %s", oc->service, err);
}

void outcommit_close(struct outcommit *oc)
{
	if (!oc)
		return;
	/* Closing the queue drops what it still holds: no acknowledged epoch covers it. */
	if (oc->ev)
		event_free(oc->ev);
	if (oc->sk)
		nl_socket_free(oc->sk);
	if (oc->chain_made) {
		destroy_sockets(oc);
		chain_remove(oc);
	}
	if (oc->seen > oc->released)
		log_info("%s: output commit: dropped %lu packets no acknowledged epoch covered",
			 oc->service, (unsigned long)(oc->seen - oc->released));
	free(oc->marks);
	free(oc->service);
	free(oc);
}

bool outcommit_wait(const struct outcommit *oc, uint64_t sent, uint64_t acked)
{
	return oc && !oc->failed && sent > acked;
}

bool outcommit_failed(const struct outcommit *oc) { return oc && oc->failed; }

void outcommit_status_fill(const struct outcommit *oc, struct status_report *r)
{
	status_report_gauge(r, "output_commit", "",
			    !oc		 ? 0
			    : oc->failed ? -1
					 : 1,
			    "1: output held until acknowledged; 0: off; -1: asked for but not in "
			    "force (see the log)");
	if (!oc)
		return;
	status_report_gauge(r, "output_passing", "", oc->passing,
			    "1: no backup holds the service's state yet (adopted, none has answered): "
			    "its packets pass unheld");
	status_report_gauge(r, "output_held_packets", "", (double)(oc->seen - oc->released),
			    "packets of the service waiting for their epoch's acknowledgement");
	status_report_gauge(r, "output_held_epochs", "", oc->n_marks,
			    "epochs whose packets wait for their acknowledgement");
	status_report_counter(r, "output_released_packets", "", oc->released,
			      "packets let go once their epoch was acknowledged");
	status_report_counter(r, "output_overruns", "", oc->overruns,
			      "times the queue's notices overflowed (the kernel dropped packets)");
}
