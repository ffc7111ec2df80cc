/*
 * tclient.h - what the backupd tests share: a temporary directory with
 * certificates made by the openssl command, a blocking mutual-TLS client
 * that plays the primary (real TLS, the wire module's encoding and epoch
 * hash, as a primary would use them), a synthetic image, and a few
 * process helpers.
 *
 * The client is blocking on purpose: a test reads top-down as the
 * conversation it has with the daemon.
 */
#pragma once

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "image/image.h"
#include "wire.h"

/* ---------- files ---------- */

/* mkdtemp under /tmp with prefix; returns the path (static storage) or NULL. */
const char *t_tmpdir(const char *prefix);
/* "DIR/name" in a rotating static buffer. */
const char *t_path(const char *dir, const char *name);
int t_write_file(const char *path, const char *text);
char *t_read_file(const char *path); /* malloc'd, or NULL */
void t_rm_rf(const char *dir);

/* CA, backup (CN backup.test), primary (CN primary.test), and one from another CA. 0, 77, 1. */
int t_make_certs(const char *dir);

/* A free TCP port on 127.0.0.1. */
int t_free_port(void);

/* ---------- processes ---------- */

/* Start argv with stdout and stderr appended to log; returns the pid or -1. */
pid_t t_spawn(char *const argv[], const char *log);
/* Wait up to ms for pid (our child) to exit: its wait status, or -1 on timeout. */
int t_wait_exit(pid_t pid, int ms);
/* Run a shell command line, output to log; its exit status. */
int t_sh(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Wait up to ms for path to contain needle. */
bool t_wait_file_contains(const char *path, const char *needle, int ms);
uint64_t t_now_ms(void);
void t_sleep_ms(int ms);

/* ---------- HTTP (for the restored service and /metrics) ---------- */

/* GET path from 127.0.0.1:port; the body (malloc'd) and *status, or NULL if nothing answered. */
char *t_http_get(int port, const char *path, int *status);

/* ---------- the primary ---------- */

/* The one run of the service this fake primary plays (wire.h). */
#define TC_INCARNATION 0x7e57c11e47ULL
/* What tc_hello() and the epochs send: TC_INCARNATION and no flags unless a test changes them. */
extern uint64_t tc_incarnation;
extern uint32_t tc_hello_flags;

struct tclient {
	int fd;
	SSL *ssl;
	struct wire_decoder *dec;
	char err[512];
	uint64_t hb_seq;
	uint64_t last_heartbeat_epoch; /* from the backup's heartbeats */
	unsigned heartbeats_seen;
	uint64_t peer_time_us, peer_at_us; /* the peer's newest heartbeat stamp, when it came */
};

/* Connect and handshake; NULL with err filled (a refused certificate may only show on first read).
 */
struct tclient *tc_connect(SSL_CTX *ctx, int port, char *err, size_t errlen);
void tc_close(struct tclient *c);

int tc_send(struct tclient *c, const struct wire_msg *m);
int tc_send_raw(struct tclient *c, const void *p, size_t n);
int tc_hello(struct tclient *c, const char *service);
int tc_heartbeat(struct tclient *c, uint64_t epoch);

/*
 * The next message other than HEARTBEAT (those are counted) within ms:
 * 1 with *m filled, 0 on timeout, -1 on EOF or error (c->err says).
 * If hb_ms, send a heartbeat that often while waiting.
 */
int tc_recv(struct tclient *c, struct wire_msg *m, int ms, int hb_ms);

/* Pages to send: npages pages at addr, bytes at data. */
struct tc_run {
	uint64_t addr;
	uint64_t npages;
	const uint8_t *data;
};

/*
 * Every message of one epoch, as a primary makes them: EPOCH_BEGIN,
 * MAPPINGS, THREADS and FDS from img's metadata, runs as PAGES of at most
 * WIRE_MAX_PAGES, and a COMMIT carrying the epoch hash. fn returning
 * non-zero stops there; that value is returned.
 */
typedef int (*t_epoch_fn)(const struct wire_msg *m, void *arg);
int t_epoch_each(const struct image *img, uint64_t epoch, uint64_t base, const struct tc_run *runs,
		 size_t n_runs, t_epoch_fn fn, void *arg);

/*
 * Send one epoch: EPOCH_BEGIN, MAPPINGS, THREADS and FDS from img's
 * metadata, runs as PAGES of at most WIRE_MAX_PAGES, COMMIT. If torn_at_page
 * is not UINT64_MAX, stop halfway through the PAGES message holding that
 * page (no COMMIT): a torn epoch. Returns 0 or -1 (c->err).
 */
int tc_send_epoch(struct tclient *c, const struct image *img, uint64_t epoch, uint64_t base,
		  const struct tc_run *runs, size_t n_runs, uint64_t torn_at_page);

/* img's own page runs as tc_runs (malloc'd array). */
struct tc_run *tc_image_runs(const struct image *img, size_t *n);

/* ---------- a synthetic image ---------- */

/*
 * A small image that passes image_validate(): /bin/true as its executable,
 * a private anonymous mapping of 64 pages at 0x10000000, a shared one of 4
 * pages at 0x20000000, one thread, no fds; no pages.
 */
struct image *t_synth_image(void);
