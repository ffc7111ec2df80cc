/*
 * config.h - the daemons' configuration files, parsed with inih.
 *
 * Two kinds of file. The daemon's own, primary.conf or backup.conf, says
 * where it listens, where its TLS files and state live. One file per
 * protected service, services/NAME.conf, says how to start or find the
 * service, where its backup is and how fast to replicate and fail over.
 *
 * Both are strict: an unknown section or key, a value out of range or a
 * missing required key is an error, because a misspelt failover timeout that
 * silently fell back to its default would only show up during a failover.
 * Every error is one line, "FILE:LINE: what was expected", so an operator can
 * go straight to it.
 *
 * A service file may be copied unchanged to both hosts: keys that only one
 * side uses (backup, primary, command, ...) are accepted on the other.
 *
 * Limits that come from inih: a line holds at most ~200 characters (a longer
 * one is an error, not truncated), ';' after whitespace starts a comment, and
 * an indented line continues the previous value: a command line (command,
 * fence_hook, takeover_hook) takes its words, so a command of any length fits;
 * any other key refuses it.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The exit status of a daemon whose configuration is wrong (sysexits.h's
 * EX_CONFIG). The units name it in RestartPreventExitStatus=: restarting
 * cannot mend a file, and a unit that fails once keeps the error line in
 * the tail of `systemctl status`, where a restart loop would push it out.
 */
#define EXIT_CONFIG 78

enum role {
	ROLE_PRIMARY = 0,
	ROLE_BACKUP = 1,
};

const char *role_to_string(enum role role);

#define HOSTPORT_HOST_MAX 253

/* A TCP endpoint as written in a file; port 0 means "not set". */
struct hostport {
	char host[HOSTPORT_HOST_MAX + 1]; /* an IPv6 literal without its brackets */
	uint16_t port;
};

/*
 * Parse "host:port", "1.2.3.4:port" or "[v6]:port". Port 0 is refused unless
 * allow_port_zero (for "any free port", as tests want). Returns 0, or -EINVAL
 * with *why saying what was expected.
 */
int hostport_parse(const char *s, bool allow_port_zero, struct hostport *out, const char **why);

/* The same text back ("[::1]:7000"), for messages; returns buf. */
const char *hostport_format(const struct hostport *hp, char *buf, size_t len);

static inline bool hostport_is_set(const struct hostport *hp) { return hp->port != 0; }

#define CONFIG_DEFAULT_STATE_DIR "/var/lib/checksync"
#define CONFIG_DEFAULT_SERVICES_DIR "/etc/checksync/services"

/* primary.conf / backup.conf */
struct daemon_config {
	char *path; /* the file it came from, for messages */
	enum role role;
	struct hostport listen; /* [daemon] listen: backup only, required there */
	char *state_dir;	/* [daemon] state_dir, default CONFIG_DEFAULT_STATE_DIR */
	char *services_dir;	/* [daemon] services_dir, default CONFIG_DEFAULT_SERVICES_DIR */
	char *status_socket;	/* [daemon] status_socket, default /run/checksync-ROLE.sock */
	struct hostport metrics_listen; /* [daemon] metrics_listen, optional */
	char *tls_ca;			/* [tls] ca, required */
	char *tls_cert;			/* [tls] cert, required */
	char *tls_key;			/* [tls] key, required */
	char *host_name;		/* [daemon] host_name: this host in services' hosts (role swap) */
	char *primaryd_socket;		/* [daemon] primaryd_socket (backup): the local primaryd's
					   status socket, to hand it a restored service (role swap) */
	char *backupd_socket;		/* [daemon] backupd_socket (primary): the local backupd's
					   status socket, asked before a fresh start (role swap) */
	int host_name_line;		/* for messages */
};

enum dirty_tracking {
	DIRTY_UFFD = 0,
	DIRTY_HASH,
};

/* Same values as enum delta_codec (delta.h): what DELTA messages are compressed with. */
enum compression {
	COMPRESSION_NONE = 0,
	COMPRESSION_LZ4,
	COMPRESSION_ZSTD,
};

/* A command line split into words; argc == 0 when the key was not given. */
struct cmdline {
	char *line;  /* as written, for messages */
	char **argv; /* NULL-terminated */
	size_t argc;
};

/* What the primary does when its backup is gone (no heartbeat for lease_ms). */
enum backup_loss {
	BACKUP_LOSS_FREEZE = 0, /* freeze the service until the backup is heard (no witness: default) */
	BACKUP_LOSS_CONTINUE,	/* keep serving, unprotected: needs a witness or a fence hook */
};

/* The etcd client URLs of `witness = URL[,URL...]`; n == 0 when none is configured. */
struct urllist {
	char *line; /* as written, for messages */
	char **v;
	size_t n;
};

#define CONFIG_MAX_HOSTS 8

/* One host of a role-swapping service: its certificate name and its backupd's address. */
struct role_host {
	char name[65];
	struct hostport addr;
};

/* services/NAME.conf */
struct service_config {
	char *path;
	char *name;		/* default: file name without .conf */
	struct cmdline command; /* exactly one of command and pid_file (primary) */
	char *pid_file;
	char *executable;		/* required on the backup, which must start it */
	char *debug_file;		/* the executable's DWARF, when no standard lookup finds it */
	struct hostport backup;		/* required on the primary */
	char *primary;			/* the primary's certificate name (backup: required) */
	char *backup_name;		/* the backup's certificate name (primary: required) */
	uint32_t epoch_interval_ms;	/* default 100 */
	uint32_t heartbeat_interval_ms; /* default 50, < lease_ms */
	uint32_t failover_timeout_ms;	/* default 1000 */
	uint32_t lease_ms;		/* default 500, < failover_timeout_ms */
	enum dirty_tracking dirty_tracking; /* default DIRTY_UFFD */
	enum compression compression;	    /* default COMPRESSION_ZSTD (primary) */
	uint32_t delta_cache_mb;	    /* last-shipped page cache, default 64; 0: no deltas */
	struct cmdline fence_hook;	    /* optional */
	struct cmdline takeover_hook;	    /* optional */
	bool output_commit;		    /* hold output until its epoch is acked; off */
	bool precopy;			    /* read epochs' pages in rounds before the stop; on */
	bool reach;			    /* zero unreachable new objects (capture/reach.c); on */
	struct urllist witness;		    /* etcd arbiter (witness.h); optional */
	uint32_t witness_ttl_ms;	    /* its lease, whole seconds; default 2000 */
	char *witness_ca;		    /* https:// witness: etcd's CA (required then) */
	char *witness_cert, *witness_key;   /* our client certificate for etcd, optional, as a pair */
	enum backup_loss on_backup_loss;    /* default: continue with a witness, else freeze */
	/*
	 * role_swap = on: the same file on every host names them all in hosts
	 * (NAME=HOST:PORT ...); config_resolve_roles() then fills backup and
	 * backup_name with the next host after this one, primary with the
	 * primary's name (on the backup that next host, on the primary this one), and
	 * starts_here says whether this host is the first (the one that starts
	 * the service; the others only take it over).
	 */
	bool role_swap;
	struct role_host hosts[CONFIG_MAX_HOSTS];
	size_t n_hosts;
	int hosts_line; /* for messages */
	bool starts_here;
	char *local_backupd; /* primary: the daemon's backupd_socket, copied by config_resolve_roles */
};

/* Room enough for any message below, the "expected one of" key lists included. */
#define CONFIG_ERR_MAX 1024

/*
 * Each loader returns 0, or a negative errno with err holding one line that
 * names the file (and the line, when there is one). On failure *out holds
 * nothing that needs freeing.
 */
int config_load_daemon(const char *path, enum role role, struct daemon_config *out, char *err,
		       size_t errlen);
int config_load_service(const char *path, enum role role, struct service_config *out, char *err,
			size_t errlen);

/* Every *.conf in dir, in name order; two files naming the same service are an error. */
int config_load_services_dir(const char *dir, enum role role, struct service_config **out,
			     size_t *n, char *err, size_t errlen);

/*
 * After both are loaded: each role_swap service learns its peer (the host
 * after daemon's host_name in its hosts, wrapping round). Returns 0, or
 * -EINVAL with err naming the file and line at fault.
 */
int config_resolve_roles(const struct daemon_config *daemon, struct service_config *svcs,
			 size_t n, char *err, size_t errlen);

void config_daemon_free(struct daemon_config *c);
void config_service_free(struct service_config *c);
void config_services_free(struct service_config *arr, size_t n);

/*
 * Split a command line on whitespace; "double quotes" group words, and inside
 * them \" and \\ stand for " and \. No other shell syntax. Returns 0 or
 * -EINVAL with *why set, or -ENOMEM.
 */
int cmdline_split(const char *s, struct cmdline *out, const char **why);
/* Split s the same way and add its words to c (one line of a multi-line command). */
int cmdline_append(struct cmdline *c, const char *s, const char **why);
void cmdline_free(struct cmdline *c);
