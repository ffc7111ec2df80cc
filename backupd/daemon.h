/*
 * daemon.h - checksync-backupd as a daemon: the event loop and what hangs
 * off it (TLS listener, services, journal writer, status server, signals,
 * sd_notify). This struct is the daemon's only state; it lives on
 * daemon_run()'s stack.
 */
#pragma once

#include <openssl/ssl.h>
#include <sys/queue.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include "config.h"
#include "loopwatch.h"
#include "wire.h"

struct event;
struct event_base;
struct journal_writer;
struct conn_policy;
struct service;
struct peer;
struct status_server;
struct control_server;
struct tls_listener;

struct daemon {
	struct daemon_config cfg;
	struct service_config *svc_cfgs;
	struct service *services;
	size_t n_services;

	struct event_base *base;
	SSL_CTX *tls;
	struct tls_listener *listener;
	struct conn_policy *policy; /* what the listener lets in (listener.h) */
	struct journal_writer *writer;
	struct status_server *status;
	struct control_server *control;
	LIST_HEAD(, peer) peers; /* every connection, for shutdown */
	uint64_t next_peer_id;

	char boot_id[WIRE_MAX_NAME + 1]; /* ours, for HELLO */
	uint64_t started_us;
	char last_status[1024]; /* the STATUS= we sent last */
	struct event *sig_term, *sig_int, *watchdog, *notify;
	struct loopwatch watch; /* how long the loop was held (loopwatch.h) */
};

/* The service called name, or NULL. */
struct service *daemon_service(struct daemon *d, const char *name);

/* Something an operator would want to see changed: send STATUS= now. */
void daemon_status_changed(struct daemon *d);

/* A connection handed to peer_accept() is gone (frees its place under the limits). */
void daemon_connection_closed(struct daemon *d, const char *peer);

/* Run until SIGTERM or SIGINT: 0, EXIT_CONFIG for a bad configuration, or 1 if it
 * could not start (logged). */
int daemon_run(const char *config_path);
