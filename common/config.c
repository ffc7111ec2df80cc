/*
 * config.c - strict parsing of the daemon and service files with inih.
 *
 * Each kind of file is a table of keys: section, name, value type, where the
 * value goes, which roles may set it and which must. One handler looks a key
 * up, parses its value by type and remembers the line it came from; checks
 * that involve several keys (command xor pid_file, lease < failover, the
 * defaults) run once the whole file is read and use those lines in their
 * messages.
 *
 * inih tells its handler neither the line number nor about section lines, so
 * we hand ini_parse_stream() our own line reader: it counts lines (the
 * handler always runs for the last line read), checks section names as they
 * go by and refuses lines too long for inih's buffer instead of letting inih
 * cut them in two. Debian's libinih is built with INI_MAX_LINE 200 and
 * INI_ALLOW_MULTILINE, and a shared library's buffer cannot be enlarged from
 * here, so a longer command goes on indented lines below its key.
 */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>

#include "filemode.h"
#include "util.h"

#define R_PRIMARY (1u << ROLE_PRIMARY)
#define R_BACKUP (1u << ROLE_BACKUP)
#define R_BOTH (R_PRIMARY | R_BACKUP)
#define MAX_KEYS 32
#define NAME_MAX_LEN 64

enum key_type {
	KEY_PATH,     /* char *, absolute path */
	KEY_NAME,     /* char *, [A-Za-z0-9._-]{1,64} */
	KEY_HOSTPORT, /* struct hostport */
	KEY_MS,	      /* uint32_t within [min, max] */
	KEY_CMDLINE,  /* struct cmdline */
	KEY_DIRTY,    /* enum dirty_tracking */
	KEY_CODEC,    /* enum compression */
	KEY_ONOFF,    /* bool, "on" or "off" */
	KEY_URLS,     /* struct urllist, http(s)://host:port[,...] */
	KEY_BACKUP_LOSS, /* enum backup_loss */
	KEY_HOSTS,    /* struct role_host[CONFIG_MAX_HOSTS], "NAME=HOST:PORT ..." */
};

struct key_desc {
	const char *section;
	const char *name;
	enum key_type type;
	size_t offset;	   /* of the field in the config struct */
	uint32_t min, max; /* KEY_MS */
	unsigned only;	   /* roles that may set it; 0 for both */
	unsigned required; /* roles that must */
	const char *hint;  /* said when it is missing, or NULL */
	bool from_hosts;   /* role_swap = on: filled from hosts, never written */
};

#define DKEY(sec, key, field, t, ...)                                                              \
	{                                                                                          \
		.section = sec, .name = key, .type = t,                                            \
		.offset = offsetof(struct daemon_config, field), __VA_ARGS__                       \
	}
#define SKEY(key, field, t, ...)                                                                   \
	{                                                                                          \
		.section = "service", .name = key, .type = t,                                      \
		.offset = offsetof(struct service_config, field), __VA_ARGS__                      \
	}

static const struct key_desc daemon_keys[] = {
    DKEY("daemon", "listen", listen, KEY_HOSTPORT, .only = R_BACKUP, .required = R_BACKUP),
    DKEY("daemon", "state_dir", state_dir, KEY_PATH),
    DKEY("daemon", "services_dir", services_dir, KEY_PATH),
    DKEY("daemon", "status_socket", status_socket, KEY_PATH),
    DKEY("daemon", "metrics_listen", metrics_listen, KEY_HOSTPORT),
    DKEY("daemon", "host_name", host_name, KEY_NAME),
    DKEY("daemon", "primaryd_socket", primaryd_socket, KEY_PATH, .only = R_BACKUP),
    DKEY("daemon", "backupd_socket", backupd_socket, KEY_PATH, .only = R_PRIMARY),
    DKEY("tls", "ca", tls_ca, KEY_PATH, .required = R_BOTH),
    DKEY("tls", "cert", tls_cert, KEY_PATH, .required = R_BOTH),
    DKEY("tls", "key", tls_key, KEY_PATH, .required = R_BOTH),
};

static const struct key_desc service_keys[] = {
    SKEY("name", name, KEY_NAME),
    SKEY("command", command, KEY_CMDLINE),
    SKEY("pid_file", pid_file, KEY_PATH),
    SKEY("executable", executable, KEY_PATH, .required = R_BACKUP),
    SKEY("backup", backup, KEY_HOSTPORT, .required = R_PRIMARY, .from_hosts = true),
    SKEY("primary", primary, KEY_NAME, .required = R_BACKUP, .from_hosts = true,
	 .hint = "the name the primary's certificate carries (SAN DNS or IP, else CN); the backup "
		 "accepts no other"),
    SKEY("backup_name", backup_name, KEY_NAME, .required = R_PRIMARY, .from_hosts = true,
	 .hint = "the name the backup's certificate carries (SAN DNS or IP, else CN); the primary "
		 "sends its memory to no other"),
    SKEY("epoch_interval_ms", epoch_interval_ms, KEY_MS, .min = 10, .max = 60000),
    SKEY("heartbeat_interval_ms", heartbeat_interval_ms, KEY_MS, .min = 10, .max = 60000),
    SKEY("failover_timeout_ms", failover_timeout_ms, KEY_MS, .min = 50, .max = 600000),
    SKEY("lease_ms", lease_ms, KEY_MS, .min = 20, .max = 600000),
    SKEY("dirty_tracking", dirty_tracking, KEY_DIRTY),
    SKEY("fence_hook", fence_hook, KEY_CMDLINE),
    SKEY("takeover_hook", takeover_hook, KEY_CMDLINE),
    SKEY("debug_file", debug_file, KEY_PATH),
    SKEY("compression", compression, KEY_CODEC),
    SKEY("delta_cache_mb", delta_cache_mb, KEY_MS, .max = 1048576),
    SKEY("output_commit", output_commit, KEY_ONOFF),
    SKEY("witness", witness, KEY_URLS),
    SKEY("witness_ttl_ms", witness_ttl_ms, KEY_MS, .min = 1000, .max = 600000),
    SKEY("on_backup_loss", on_backup_loss, KEY_BACKUP_LOSS),
    SKEY("witness_ca", witness_ca, KEY_PATH),
    SKEY("witness_cert", witness_cert, KEY_PATH),
    SKEY("witness_key", witness_key, KEY_PATH),
    SKEY("role_swap", role_swap, KEY_ONOFF),
    SKEY("hosts", hosts, KEY_HOSTS),
    SKEY("precopy", precopy, KEY_ONOFF),
    SKEY("reach", reach, KEY_ONOFF),
};

_Static_assert(ARRAY_SIZE(daemon_keys) <= MAX_KEYS, "raise MAX_KEYS");
_Static_assert(ARRAY_SIZE(service_keys) <= MAX_KEYS, "raise MAX_KEYS");

struct parser {
	const char *path;
	FILE *f;
	enum role role;
	const struct key_desc *keys;
	size_t nkeys;
	void *out;
	int line;		/* the line inih is working on */
	bool indented;		/* ...begins with whitespace */
	int set_line[MAX_KEYS]; /* per key: the line that set it, 0 if none */
	int section_line[MAX_KEYS]; /* per key: the line of its section's header, 0 if none */
	int err_line;		/* of the error in err, 0 if it has none */
	int r;
	char *err;
	size_t errlen;
	bool role_swap; /* a service file with role_swap = on: from_hosts keys are not required */
};

const char *role_to_string(enum role role) { return role == ROLE_BACKUP ? "backup" : "primary"; }

/* ---------- errors ---------- */

static void set_error(struct parser *p, int r, int line, const char *msg)
{
	if (line > 0)
		snprintf(p->err, p->errlen, "%s:%d: %s", p->path, line, msg);
	else
		snprintf(p->err, p->errlen, "%s: %s", p->path, msg);
	p->err_line = line;
	p->r = r;
}

/*
 * Keep the first error only: later ones are often its consequences, and one
 * line is what an operator can act on. Returns -EINVAL either way.
 */
static int fail(struct parser *p, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct parser *p, int line, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	if (p->r < 0)
		return -EINVAL;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	set_error(p, -EINVAL, line, msg);
	return -EINVAL;
}

static int oom(struct parser *p)
{
	set_error(p, -ENOMEM, 0, "out of memory");
	return -ENOMEM;
}

/* ---------- the key table ---------- */

static unsigned role_bit(enum role role) { return 1u << role; }

static bool key_allowed(const struct parser *p, const struct key_desc *k)
{
	return !k->only || (k->only & role_bit(p->role));
}

static bool section_known(const struct parser *p, const char *section)
{
	for (size_t i = 0; i < p->nkeys; i++)
		if (strcmp(p->keys[i].section, section) == 0)
			return true;
	return false;
}

static const struct key_desc *key_find(const struct parser *p, const char *section,
				       const char *name)
{
	for (size_t i = 0; i < p->nkeys; i++)
		if (strcmp(p->keys[i].section, section) == 0 && strcmp(p->keys[i].name, name) == 0)
			return &p->keys[i];
	return NULL;
}

static int key_line(const struct parser *p, const char *name)
{
	for (size_t i = 0; i < p->nkeys; i++)
		if (strcmp(p->keys[i].name, name) == 0)
			return p->set_line[i];
	return 0;
}

/* "a, b, c": the keys of section this role may set, for "expected one of". */
static void keys_list(const struct parser *p, const char *section, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = 0;
	for (size_t i = 0; i < p->nkeys && off < len; i++) {
		const struct key_desc *k = &p->keys[i];
		if (strcmp(k->section, section) != 0 || !key_allowed(p, k))
			continue;
		off += snprintf(buf + off, len - off, "%s%s", off ? ", " : "", k->name);
	}
}

/* "[daemon], [tls]" */
static void sections_list(const struct parser *p, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = 0;
	for (size_t i = 0; i < p->nkeys && off < len; i++)
		if (i == 0 || strcmp(p->keys[i - 1].section, p->keys[i].section) != 0)
			off += snprintf(buf + off, len - off, "%s[%s]", off ? ", " : "",
					p->keys[i].section);
}

/* ---------- values ---------- */

static void *field_of(const struct parser *p, const struct key_desc *k)
{
	return (char *)p->out + k->offset;
}

static bool name_valid(const char *s)
{
	size_t n = strlen(s);
	return n >= 1 && n <= NAME_MAX_LEN &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static int dup_into(struct parser *p, char **field, const char *v)
{
	*field = strdup(v);
	return *field ? 0 : oom(p);
}

static int parse_path(struct parser *p, const struct key_desc *k, const char *v)
{
	if (v[0] != '/' || strlen(v) >= PATH_MAX)
		return fail(p, p->line, "%s: expected an absolute path, got '%s'", k->name, v);
	return dup_into(p, field_of(p, k), v);
}

static int parse_name(struct parser *p, const struct key_desc *k, const char *v)
{
	if (!name_valid(v))
		return fail(
		    p, p->line,
		    "%s: expected a name of 1 to %d letters, digits, '.', '_' or '-', got '%s'",
		    k->name, NAME_MAX_LEN, v);
	return dup_into(p, field_of(p, k), v);
}

static int parse_hostport(struct parser *p, const struct key_desc *k, const char *v)
{
	const char *why;

	if (hostport_parse(v, false, field_of(p, k), &why) < 0)
		return fail(p, p->line, "%s: expected %s, got '%s'", k->name, why, v);
	return 0;
}

/* Digits only: "100ms" or "1e3" in a file named *_ms is a mistake worth reporting. */
static int parse_ms(struct parser *p, const struct key_desc *k, const char *v)
{
	size_t n = strlen(v);
	bool digits = n >= 1 && n <= 10 && strspn(v, "0123456789") == n;
	uint64_t x = digits ? strtoull(v, NULL, 10) : 0;

	if (!digits || x < k->min || x > k->max)
		return fail(p, p->line, "%s: expected an integer between %u and %u, got '%s'",
			    k->name, k->min, k->max, v);
	*(uint32_t *)field_of(p, k) = x;
	return 0;
}

/*
 * Commands are run without a shell or $PATH, so the program must be named in full.
 * The value may be empty when indented lines below carry the words (see
 * parse_cmdline_more); service_check_cmdlines() then makes sure some did.
 */
static int parse_cmdline(struct parser *p, const struct key_desc *k, const char *v)
{
	struct cmdline *c = field_of(p, k);
	const char *why;
	int r;

	if (!*v) {
		*c = (struct cmdline){.line = strdup("")};
		return c->line ? 0 : oom(p);
	}
	r = cmdline_split(v, c, &why);
	if (r == -ENOMEM)
		return oom(p);
	if (r < 0)
		return fail(p, p->line, "%s: expected %s, got '%s'", k->name, why, v);
	if (c->argv[0][0] != '/')
		return fail(p, p->line,
			    "%s: expected an absolute path as the program, got '%s' (commands run "
			    "without a shell or $PATH)",
			    k->name, c->argv[0]);
	return 0;
}

/*
 * An indented line after a command line (inih's multi-line value) adds its
 * words to it: a command of any length, a line at most inih's buffer each.
 * A quote must close on the line it opens, so an error names one line.
 */
static int parse_cmdline_more(struct parser *p, const struct key_desc *k, const char *v)
{
	struct cmdline *c = field_of(p, k);
	bool had_program = c->argc > 0;
	const char *why;
	int r;

	r = cmdline_append(c, v, &why);
	if (r == -ENOMEM)
		return oom(p);
	if (r < 0)
		return fail(p, p->line, "%s (continued from line %d): expected %s, got '%s'",
			    k->name, p->set_line[k - p->keys], why, v);
	if (!had_program && c->argc && c->argv[0][0] != '/')
		return fail(p, p->line,
			    "%s: expected an absolute path as the program, got '%s' (commands run "
			    "without a shell or $PATH)",
			    k->name, c->argv[0]);
	return 0;
}

static int parse_dirty(struct parser *p, const struct key_desc *k, const char *v)
{
	enum dirty_tracking *d = field_of(p, k);

	if (strcmp(v, "uffd") == 0)
		*d = DIRTY_UFFD;
	else if (strcmp(v, "hash") == 0)
		*d = DIRTY_HASH;
	else
		return fail(p, p->line, "%s: expected 'uffd' or 'hash', got '%s'", k->name, v);
	return 0;
}

static int parse_codec(struct parser *p, const struct key_desc *k, const char *v)
{
	enum compression *c = field_of(p, k);

	if (strcmp(v, "zstd") == 0)
		*c = COMPRESSION_ZSTD;
	else if (strcmp(v, "lz4") == 0)
		*c = COMPRESSION_LZ4;
	else if (strcmp(v, "none") == 0)
		*c = COMPRESSION_NONE;
	else
		return fail(p, p->line, "%s: expected 'zstd', 'lz4' or 'none', got '%s'", k->name, v);
	return 0;
}

/* "on" or "off" only: a promise about acknowledged writes should not hang on how "1" reads. */
static int parse_onoff(struct parser *p, const struct key_desc *k, const char *v)
{
	bool *b = field_of(p, k);

	if (strcmp(v, "on") != 0 && strcmp(v, "off") != 0)
		return fail(p, p->line, "%s: expected 'on' or 'off', got '%s'", k->name, v);
	*b = strcmp(v, "on") == 0;
	return 0;
}

/* "a=10.0.0.1:7000 b=10.0.0.2:7000": each host's certificate name and its backupd's address. */
static int parse_hosts(struct parser *p, const struct key_desc *k, const char *v)
{
	struct service_config *c = p->out;
	_cleanup_free_ char *copy = strdup(v);
	char *save = NULL, *w, *eq;
	const char *why;

	(void)k;
	if (!copy)
		return oom(p);
	c->n_hosts = 0;
	for (w = strtok_r(copy, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
		struct role_host *h = &c->hosts[c->n_hosts];
		eq = strchr(w, '=');
		if (c->n_hosts == CONFIG_MAX_HOSTS)
			return fail(p, p->line, "hosts: at most %d hosts", CONFIG_MAX_HOSTS);
		if (!eq)
			return fail(p, p->line, "hosts: expected NAME=HOST:PORT, got '%s'", w);
		*eq = 0;
		if (!name_valid(w))
			return fail(p, p->line,
				    "hosts: expected a certificate name of 1 to %d letters, digits, "
				    "'.', '_' or '-' before '=', got '%s'",
				    NAME_MAX_LEN, w);
		if (hostport_parse(eq + 1, false, &h->addr, &why) < 0)
			return fail(p, p->line, "hosts: %s: expected %s, got '%s'", w, why, eq + 1);
		for (size_t i = 0; i < c->n_hosts; i++)
			if (strcmp(c->hosts[i].name, w) == 0)
				return fail(p, p->line, "hosts: '%s' is named twice", w);
		snprintf(h->name, sizeof(h->name), "%s", w);
		c->n_hosts++;
	}
	if (c->n_hosts < 2)
		return fail(p, p->line,
			    "hosts: expected at least two NAME=HOST:PORT entries (this host and "
			    "its peer), got '%s'",
			    v);
	c->hosts_line = p->line;
	return 0;
}

/* Comma-separated http:// or https:// URLs of etcd's client endpoints, no spaces inside one. */
static int parse_urls(struct parser *p, const struct key_desc *k, const char *v)
{
	struct urllist *u = field_of(p, k);
	_cleanup_free_ char *copy = strdup(v);
	char *save = NULL, *tok;

	if (!copy || !(u->line = strdup(v)))
		return oom(p);
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		tok += strspn(tok, " \t");
		tok[strcspn(tok, " \t")] = 0;
		size_t n = strlen(tok), scheme = strncmp(tok, "http://", 7) == 0    ? 7
						 : strncmp(tok, "https://", 8) == 0 ? 8
										    : 0;
		if (!scheme || n == scheme || strchr(tok + scheme, '/') != NULL)
			return fail(p, p->line,
				    "%s: expected http://HOST:PORT or https://HOST:PORT (etcd's client "
				    "URLs, separated by commas), got '%s'",
				    k->name, tok);
		char **nv = realloc(u->v, (u->n + 2) * sizeof(*nv));
		if (!nv)
			return oom(p);
		u->v = nv;
		if (!(u->v[u->n] = strdup(tok)))
			return oom(p);
		u->v[++u->n] = NULL;
	}
	if (!u->n)
		return fail(p, p->line, "%s: expected at least one etcd client URL", k->name);
	return 0;
}

static int parse_backup_loss(struct parser *p, const struct key_desc *k, const char *v)
{
	enum backup_loss *b = field_of(p, k);

	if (strcmp(v, "freeze") == 0)
		*b = BACKUP_LOSS_FREEZE;
	else if (strcmp(v, "continue") == 0)
		*b = BACKUP_LOSS_CONTINUE;
	else
		return fail(p, p->line, "%s: expected 'freeze' or 'continue', got '%s'", k->name, v);
	return 0;
}

static int key_parse(struct parser *p, const struct key_desc *k, const char *v)
{
	switch (k->type) {
	case KEY_PATH:
		return parse_path(p, k, v);
	case KEY_NAME:
		return parse_name(p, k, v);
	case KEY_HOSTPORT:
		return parse_hostport(p, k, v);
	case KEY_MS:
		return parse_ms(p, k, v);
	case KEY_CMDLINE:
		return parse_cmdline(p, k, v);
	case KEY_DIRTY:
		return parse_dirty(p, k, v);
	case KEY_CODEC:
		return parse_codec(p, k, v);
	case KEY_ONOFF:
		return parse_onoff(p, k, v);
	case KEY_URLS:
		return parse_urls(p, k, v);
	case KEY_BACKUP_LOSS:
		return parse_backup_loss(p, k, v);
	case KEY_HOSTS:
		return parse_hosts(p, k, v);
	}
	return fail(p, p->line, "%s: internal error: unknown key type", k->name);
}

/* ---------- what inih calls ---------- */

static const struct key_desc *key_lookup(struct parser *p, const char *section, const char *name)
{
	const struct key_desc *k;
	char list[512];

	if (!*section) {
		sections_list(p, list, sizeof(list));
		fail(p, p->line, "key '%s' outside any section (expected one of %s first)", name,
		     list);
		return NULL;
	}
	if (!section_known(p, section)) {
		fail(p, p->line, "key '%s' in unknown section [%s]", name, section);
		return NULL;
	}
	k = key_find(p, section, name);
	if (k && key_allowed(p, k))
		return k;
	keys_list(p, section, list, sizeof(list));
	if (k)
		fail(p, p->line, "key '%s' in [%s] is only for the %s (expected one of: %s)", name,
		     section, role_to_string(p->role == ROLE_PRIMARY ? ROLE_BACKUP : ROLE_PRIMARY),
		     list);
	else
		fail(p, p->line, "unknown key '%s' in [%s] (expected one of: %s)", name, section,
		     list);
	return NULL;
}

/*
 * inih calls us again for an indented line, as the continuation of the key
 * above it: command lines take more words that way (handle_key), nothing else.
 */
static int key_once(struct parser *p, const struct key_desc *k)
{
	int first = p->set_line[k - p->keys];

	if (!first)
		return 0;
	if (p->indented)
		return fail(p, p->line,
			    "continuation lines are only for command lines (put the value of '%s' "
			    "on line %d)",
			    k->name, first);
	return fail(p, p->line, "duplicate key '%s' in [%s] (first set on line %d)", k->name,
		    k->section, first);
}

static int handle_key(void *user, const char *section, const char *name, const char *value)
{
	struct parser *p = user;
	const struct key_desc *k;

	if (p->r < 0)
		return 1; /* only the first error is reported */
	k = key_lookup(p, section, name);
	if (k && p->indented && k->type == KEY_CMDLINE && p->set_line[k - p->keys])
		return parse_cmdline_more(p, k, value) < 0 ? 0 : 1;
	if (!k || key_once(p, k) < 0 || key_parse(p, k, value) < 0)
		return 0;
	p->set_line[k - p->keys] = p->line;
	return 1;
}

/* An unknown section is an error even when it holds no key at all. */
static void check_section_line(struct parser *p, const char *buf)
{
	const char *s = buf + strspn(buf, " \t");
	const char *end;
	char name[64], list[128];

	if (*s != '[' || !(end = strchr(s, ']')))
		return; /* not a section line, or a syntax error that inih reports */
	snprintf(name, sizeof(name), "%.*s", (int)(end - s - 1), s + 1);
	if (section_known(p, name)) {
		for (size_t i = 0; i < p->nkeys; i++)
			if (!p->section_line[i] && strcmp(p->keys[i].section, name) == 0)
				p->section_line[i] = p->line;
		return;
	}
	sections_list(p, list, sizeof(list));
	fail(p, p->line, "unknown section [%s] (expected %s)", name, list);
}

/*
 * True if buf holds only the start of a line (the rest is then skipped).
 * A line that exactly fills buf counts too: inih treats it as cut.
 */
static bool line_too_long(FILE *f, const char *buf, int size)
{
	size_t n = strlen(buf);
	int c;

	if (n + 1 < (size_t)size || buf[n - 1] == '\n')
		return false;
	c = getc(f);
	if (c == EOF)
		return false;
	while (c != '\n' && c != EOF)
		c = getc(f);
	return true;
}

static char *read_line(char *buf, int size, void *stream)
{
	struct parser *p = stream;

	if (size < 2 || !fgets(buf, size, p->f))
		return NULL;
	p->line++;
	if (line_too_long(p->f, buf, size)) {
		fail(p, p->line, "line is longer than %d characters", size - 2);
		strcpy(buf, "\n");
	}
	p->indented = buf[0] == ' ' || buf[0] == '\t';
	check_section_line(p, buf);
	return buf;
}

/* ---------- loading ---------- */

static int parse_file(struct parser *p)
{
	_cleanup_fclose_ FILE *f = fopen(p->path, "re");
	int ret, r;

	if (!f) {
		r = -errno;
		snprintf(p->err, p->errlen, "%s: cannot open: %s", p->path, strerror(-r));
		return r;
	}
	p->f = f;
	ret = ini_parse_stream(read_line, p, handle_key, p);
	if (ferror(f)) {
		r = errno ? -errno : -EIO;
		snprintf(p->err, p->errlen, "%s: cannot read: %s", p->path, strerror(-r));
		return r;
	}
	if (ret == -2)
		return oom(p);
	/* inih's own complaint (a line that is neither key nor section) may come first. */
	if (ret > 0 && (p->r == 0 || ret < p->err_line)) {
		p->r = 0;
		fail(p, ret, "expected '[section]', 'key = value' or a comment");
	}
	return p->r;
}

static int check_required(struct parser *p)
{
	for (size_t i = 0; i < p->nkeys; i++) {
		const struct key_desc *k = &p->keys[i];
		if ((k->required & role_bit(p->role)) && !p->set_line[i] &&
		    !(k->from_hosts && p->role_swap))
			return fail(p, p->section_line[i], "missing required key '%s' in [%s]%s%s%s",
				    k->name, k->section, k->hint ? " (" : "", k->hint ? k->hint : "",
				    k->hint ? ")" : "");
	}
	return 0;
}

/* ---------- files the configuration names ---------- */

/* The configuration file itself, before a line of it is believed. */
static int check_own_file(struct parser *p)
{
	int r = file_check_trusted(p->path, FILE_CONFIG, p->err, p->errlen);

	if (r < 0)
		p->r = r;
	return r;
}

/* A file named by key: its own complaint, then where the configuration names it. */
static int check_named_file(struct parser *p, const char *key, const char *path,
			    enum file_kind kind)
{
	char why[CONFIG_ERR_MAX / 2];
	int r;

	if (!path)
		return 0;
	r = file_check_trusted(path, kind, why, sizeof(why));
	if (r < 0) {
		snprintf(p->err, p->errlen, "%s (%s, set in %s:%d)", why, key, p->path,
			 key_line(p, key));
		p->r = r;
	}
	return r;
}

static int default_path(struct parser *p, char **field, const char *v)
{
	return *field ? 0 : dup_into(p, field, v);
}

static int daemon_finish(struct parser *p, struct daemon_config *c)
{
	const char *sock =
	    c->role == ROLE_BACKUP ? "/run/checksync-backup.sock" : "/run/checksync-primary.sock";
	int r;

	r = check_required(p);
	if (r >= 0)
		r = check_named_file(p, "ca", c->tls_ca, FILE_CERT);
	if (r >= 0)
		r = check_named_file(p, "cert", c->tls_cert, FILE_CERT);
	if (r >= 0)
		r = check_named_file(p, "key", c->tls_key, FILE_PRIVATE_KEY);
	if (r >= 0)
		r = default_path(p, &c->state_dir, CONFIG_DEFAULT_STATE_DIR);
	if (r >= 0)
		r = default_path(p, &c->services_dir, CONFIG_DEFAULT_SERVICES_DIR);
	if (r >= 0)
		r = default_path(p, &c->status_socket, sock);
	if (r >= 0 && c->role == ROLE_BACKUP)
		r = default_path(p, &c->primaryd_socket, "/run/checksync-primary.sock");
	if (r >= 0 && c->role == ROLE_PRIMARY)
		r = default_path(p, &c->backupd_socket, "/run/checksync-backup.sock");
	c->host_name_line = key_line(p, "host_name");
	return r;
}

static struct parser parser_new(const char *path, enum role role, const struct key_desc *keys,
				size_t nkeys, void *out, char *err, size_t errlen)
{
	return (struct parser){.path = path,
			       .role = role,
			       .keys = keys,
			       .nkeys = nkeys,
			       .out = out,
			       .err = err,
			       .errlen = errlen};
}

int config_load_daemon(const char *path, enum role role, struct daemon_config *out, char *err,
		       size_t errlen)
{
	struct parser p =
	    parser_new(path, role, daemon_keys, ARRAY_SIZE(daemon_keys), out, err, errlen);
	int r;

	*out = (struct daemon_config){.role = role, .path = strdup(path)};
	r = out->path ? check_own_file(&p) : oom(&p);
	if (r >= 0)
		r = parse_file(&p);
	if (r >= 0)
		r = daemon_finish(&p, out);
	if (r < 0)
		config_daemon_free(out);
	return r;
}

/* The file name, less ".conf", is the service's name unless the file says otherwise. */
static int service_default_name(struct parser *p, struct service_config *c)
{
	const char *base = strrchr(p->path, '/');
	char name[NAME_MAX_LEN + 2];
	size_t n;

	if (c->name)
		return 0;
	base = base ? base + 1 : p->path;
	n = strlen(base);
	if (n > 5 && strcmp(base + n - 5, ".conf") == 0)
		n -= 5;
	snprintf(name, sizeof(name), "%.*s", (int)(n < sizeof(name) - 1 ? n : sizeof(name) - 1),
		 base);
	if (!name_valid(name))
		return fail(p, 0,
			    "the file name does not make a valid service name; set 'name' in "
			    "[service] (1 to %d letters, digits, '.', '_' or '-')",
			    NAME_MAX_LEN);
	return dup_into(p, &c->name, name);
}

/* The primary starts the service or attaches to it: it must know which, and only one. */
static int service_check_start(struct parser *p)
{
	int cmd = key_line(p, "command"), pid = key_line(p, "pid_file");

	if (cmd && pid)
		return fail(p, cmd > pid ? cmd : pid,
			    "'command' (line %d) and 'pid_file' (line %d) are mutually exclusive: "
			    "start the service or attach to it, not both",
			    cmd, pid);
	if (!cmd && !pid && p->role == ROLE_PRIMARY)
		return fail(p, p->section_line[key_find(p, "service", "command") - p->keys],
			    "missing required key 'command' or 'pid_file' in [service]");
	return 0;
}

/*
 * The backup waits out the lease before it takes over, so the lease must end
 * before the failover timeout; and it is renewed by heartbeats, so they must
 * come more often than it lapses.
 */
static int service_check_timing(struct parser *p, struct service_config *c)
{
	int lease = key_line(p, "lease_ms"), fo = key_line(p, "failover_timeout_ms");
	int hb = key_line(p, "heartbeat_interval_ms");

	if (c->lease_ms >= c->failover_timeout_ms)
		return fail(p, lease ? lease : fo,
			    "lease_ms (%u) must be less than failover_timeout_ms (%u): the backup "
			    "waits for the primary's lease to lapse before it takes over",
			    c->lease_ms, c->failover_timeout_ms);
	if (c->heartbeat_interval_ms >= c->lease_ms)
		return fail(p, hb ? hb : lease,
			    "heartbeat_interval_ms (%u) must be less than lease_ms (%u), or the "
			    "lease lapses between heartbeats",
			    c->heartbeat_interval_ms, c->lease_ms);
	/* The backup stops renewing the lease at failover - lease - one heartbeat. */
	if (c->lease_ms + c->heartbeat_interval_ms >= c->failover_timeout_ms)
		return fail(p, fo ? fo : lease,
			    "failover_timeout_ms (%u) must exceed lease_ms + heartbeat_interval_ms "
			    "(%u + %u): the primary must be frozen before the backup takes over",
			    c->failover_timeout_ms, c->lease_ms, c->heartbeat_interval_ms);
	return 0;
}

/* https:// needs etcd's CA; a client certificate comes with its key. */
static int service_check_witness_tls(struct parser *p, struct service_config *c)
{
	int ca = key_line(p, "witness_ca"), cert = key_line(p, "witness_cert");
	int key = key_line(p, "witness_key"), w = key_line(p, "witness");
	bool https = false;

	for (size_t i = 0; i < c->witness.n; i++)
		https |= strncmp(c->witness.v[i], "https://", 8) == 0;
	if ((ca || cert || key) && !https)
		return fail(p, ca ? ca : cert ? cert : key,
			    "witness_ca, witness_cert and witness_key are for an https:// witness, and "
			    "none is configured");
	if (https && !ca)
		return fail(p, w, "witness: an https:// URL needs witness_ca (the CA of etcd's "
				  "certificates)");
	if (!cert != !key)
		return fail(p, cert ? cert : key,
			    "witness_cert and witness_key go together (the client certificate and its key)");
	return 0;
}

/*
 * A primary that keeps serving without its backup must have something that
 * keeps the backup from restoring a second copy meanwhile: the witness (the
 * backup takes over only with the key) or a fence hook (it stops the primary
 * first). etcd counts leases in whole seconds.
 */
static int service_check_witness(struct parser *p, struct service_config *c)
{
	int loss = key_line(p, "on_backup_loss"), ttl = key_line(p, "witness_ttl_ms");

	if (!loss)
		c->on_backup_loss = c->witness.n ? BACKUP_LOSS_CONTINUE : BACKUP_LOSS_FREEZE;
	if (c->on_backup_loss == BACKUP_LOSS_CONTINUE && !c->witness.n && !c->fence_hook.argc)
		return fail(p, loss,
			    "on_backup_loss = continue needs a witness or a fence_hook: without either "
			    "the backup could restore a second copy while this one serves");
	if (c->witness_ttl_ms % 1000)
		return fail(p, ttl, "witness_ttl_ms (%u) must be whole seconds: etcd counts leases in "
				    "seconds",
			    c->witness_ttl_ms);
	if (ttl && !c->witness.n)
		return fail(p, ttl, "witness_ttl_ms is set but no witness is configured");
	return service_check_witness_tls(p, c);
}

/* "command =" with nothing after it and no indented line below says no command at all. */
static int service_check_cmdlines(struct parser *p)
{
	for (size_t i = 0; i < p->nkeys; i++) {
		const struct key_desc *k = &p->keys[i];
		const struct cmdline *c = field_of(p, k);
		if (k->type == KEY_CMDLINE && p->set_line[i] && !c->argc)
			return fail(p, p->set_line[i],
				    "%s: expected a command line, on this line or on indented "
				    "lines below it",
				    k->name);
	}
	return 0;
}

/*
 * role_swap = on: every host runs both daemons with this same file, which
 * names them all in hosts; each side's peer is derived from it
 * (config_resolve_roles), so naming one here as well would be a second,
 * possibly contradicting, answer.
 */
static int service_check_roles(struct parser *p, struct service_config *c)
{
	int swap = key_line(p, "role_swap"), pid = key_line(p, "pid_file");

	if (!c->role_swap) {
		if (c->n_hosts)
			return fail(p, c->hosts_line,
				    "hosts: only used with role_swap = on (set it, or remove hosts)");
		return 0;
	}
	if (!c->n_hosts)
		return fail(p, swap,
			    "role_swap = on needs 'hosts = NAME=HOST:PORT NAME=HOST:PORT ...' in "
			    "[service]: every host's certificate name and backupd address, the one "
			    "that starts the service first");
	for (size_t i = 0; i < p->nkeys; i++)
		if (p->keys[i].from_hosts && p->set_line[i])
			return fail(p, p->set_line[i],
				    "%s: with role_swap = on (line %d) each side's peer comes from "
				    "hosts (line %d); remove this key",
				    p->keys[i].name, swap, c->hosts_line);
	if (pid)
		return fail(p, pid,
			    "pid_file: role_swap = on (line %d) needs 'command': a host that takes "
			    "the service over must be able to start it, not find it",
			    swap);
	p->role_swap = true;
	return 0;
}

static int service_finish(struct parser *p, struct service_config *c)
{
	int r;

	r = service_check_roles(p, c);
	if (r >= 0)
		r = service_check_cmdlines(p);
	if (r >= 0)
		r = service_check_start(p);
	if (r >= 0)
		r = service_check_timing(p, c);
	if (r >= 0)
		r = check_required(p);
	if (r >= 0)
		r = service_check_witness(p, c);
	if (r >= 0)
		r = check_named_file(p, "fence_hook", c->fence_hook.argv ? c->fence_hook.argv[0] : NULL,
				     FILE_PROGRAM);
	if (r >= 0)
		r = check_named_file(p, "takeover_hook",
				     c->takeover_hook.argv ? c->takeover_hook.argv[0] : NULL,
				     FILE_PROGRAM);
	if (r >= 0)
		r = check_named_file(p, "witness_ca", c->witness_ca, FILE_CERT);
	if (r >= 0)
		r = check_named_file(p, "witness_cert", c->witness_cert, FILE_CERT);
	if (r >= 0)
		r = check_named_file(p, "witness_key", c->witness_key, FILE_PRIVATE_KEY);
	if (r >= 0)
		r = service_default_name(p, c);
	return r;
}

int config_load_service(const char *path, enum role role, struct service_config *out, char *err,
			size_t errlen)
{
	struct parser p =
	    parser_new(path, role, service_keys, ARRAY_SIZE(service_keys), out, err, errlen);
	int r;

	*out = (struct service_config){
	    .path = strdup(path),
	    .epoch_interval_ms = 100,
	    .heartbeat_interval_ms = 50,
	    .failover_timeout_ms = 1000,
	    .lease_ms = 500,
	    .dirty_tracking = DIRTY_UFFD,
	    .compression = COMPRESSION_ZSTD,
	    .delta_cache_mb = 64,
	    .precopy = true,
	    .reach = true,
	    .witness_ttl_ms = 2000,
	};
	r = out->path ? check_own_file(&p) : oom(&p);
	if (r >= 0)
		r = parse_file(&p);
	if (r >= 0)
		r = service_finish(&p, out);
	if (r < 0)
		config_service_free(out);
	return r;
}

/* ---------- a directory of services ---------- */

static int conf_filter(const struct dirent *d)
{
	size_t n = strlen(d->d_name);
	return d->d_name[0] != '.' && n > 5 && strcmp(d->d_name + n - 5, ".conf") == 0;
}

struct dirents {
	struct dirent **v;
	int n;
};

static void dirents_free(struct dirents *d)
{
	for (int i = 0; i < d->n; i++)
		free(d->v[i]);
	free(d->v);
}

static int services_check_unique(const struct service_config *arr, size_t n, char *err,
				 size_t errlen)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(arr[i].name, arr[n].name) == 0) {
			snprintf(err, errlen, "%s: service name '%s' is already used by %s",
				 arr[n].path, arr[n].name, arr[i].path);
			return -EINVAL;
		}
	return 0;
}

static int load_one(const char *dir, const char *file, enum role role, struct service_config *out,
		    char *err, size_t errlen)
{
	_cleanup_free_ char *path = NULL;

	if (asprintf(&path, "%s/%s", dir, file) < 0) {
		path = NULL; /* asprintf leaves it undefined */
		return -ENOMEM;
	}
	return config_load_service(path, role, out, err, errlen);
}

int config_load_services_dir(const char *dir, enum role role, struct service_config **out,
			     size_t *n, char *err, size_t errlen)
{
	__attribute__((cleanup(dirents_free))) struct dirents d = {0};
	struct service_config *arr;
	int r = 0;

	d.n = scandir(dir, &d.v, conf_filter, alphasort);
	if (d.n < 0) {
		r = -errno;
		d.n = 0;
		snprintf(err, errlen, "%s: cannot read directory: %s", dir, strerror(-r));
		return r;
	}
	arr = calloc(d.n ? d.n : 1, sizeof(*arr));
	if (!arr)
		return -ENOMEM;
	for (size_t k = 0; r >= 0 && k < (size_t)d.n; k++) {
		r = load_one(dir, d.v[k]->d_name, role, &arr[k], err, errlen);
		if (r >= 0)
			r = services_check_unique(arr, k, err, errlen);
	}
	if (r < 0) {
		config_services_free(arr, d.n); /* unloaded entries are zero, which frees fine */
		return r;
	}
	*out = arr;
	*n = d.n;
	return 0;
}

/* ---------- role swap ---------- */

static int resolve_one(const struct daemon_config *d, struct service_config *c, char *err,
		       size_t errlen)
{
	const struct role_host *peer;
	size_t i;

	if (!d->host_name) {
		snprintf(err, errlen,
			 "%s: no 'host_name' in [daemon], but %s:%d has role_swap = on: name this "
			 "host as its hosts line does",
			 d->path, c->path, c->hosts_line);
		return -EINVAL;
	}
	for (i = 0; i < c->n_hosts && strcmp(c->hosts[i].name, d->host_name) != 0; i++)
		;
	if (i == c->n_hosts) {
		snprintf(err, errlen, "%s:%d: hosts does not name this host '%s' (host_name, set in %s:%d)",
			 c->path, c->hosts_line, d->host_name, d->path, d->host_name_line);
		return -EINVAL;
	}
	peer = &c->hosts[(i + 1) % c->n_hosts];
	c->starts_here = i == 0;
	c->backup = peer->addr;
	free(c->backup_name);
	free(c->primary);
	c->backup_name = strdup(peer->name);
	/* primary names the primary's certificate: on the backup the peer's, on the primary ours. */
	c->primary = strdup(d->role == ROLE_PRIMARY ? d->host_name : peer->name);
	free(c->local_backupd);
	c->local_backupd = d->backupd_socket ? strdup(d->backupd_socket) : NULL;
	if (!c->backup_name || !c->primary || (d->backupd_socket && !c->local_backupd)) {
		snprintf(err, errlen, "%s: out of memory", c->path);
		return -ENOMEM;
	}
	return 0;
}

int config_resolve_roles(const struct daemon_config *daemon, struct service_config *svcs,
			 size_t n, char *err, size_t errlen)
{
	for (size_t i = 0; i < n; i++) {
		int r = svcs[i].role_swap ? resolve_one(daemon, &svcs[i], err, errlen) : 0;
		if (r < 0)
			return r;
	}
	return 0;
}

void config_daemon_free(struct daemon_config *c)
{
	free(c->path);
	free(c->state_dir);
	free(c->services_dir);
	free(c->status_socket);
	free(c->host_name);
	free(c->primaryd_socket);
	free(c->backupd_socket);
	free(c->tls_ca);
	free(c->tls_cert);
	free(c->tls_key);
	*c = (struct daemon_config){0};
}

void config_service_free(struct service_config *c)
{
	free(c->path);
	free(c->name);
	cmdline_free(&c->command);
	free(c->pid_file);
	free(c->executable);
	free(c->debug_file);
	free(c->primary);
	free(c->backup_name);
	free(c->local_backupd);
	cmdline_free(&c->fence_hook);
	cmdline_free(&c->takeover_hook);
	for (size_t i = 0; i < c->witness.n; i++)
		free(c->witness.v[i]);
	free(c->witness.v);
	free(c->witness.line);
	free(c->witness_ca);
	free(c->witness_cert);
	free(c->witness_key);
	*c = (struct service_config){0};
}

void config_services_free(struct service_config *arr, size_t n)
{
	for (size_t i = 0; arr && i < n; i++)
		config_service_free(&arr[i]);
	free(arr);
}

/* ---------- host:port ---------- */

static bool looks_numeric(const char *s) { return strspn(s, "0123456789.") == strlen(s); }

static int parse_host(const char *s, size_t len, bool bracketed, struct hostport *out,
		      const char **why)
{
	struct in6_addr a6;
	struct in_addr a4;

	*why = bracketed ? "an IPv6 address inside the brackets"
			 : "a host name or an IP address before the ':'";
	if (len == 0 || len > HOSTPORT_HOST_MAX)
		return -EINVAL;
	memcpy(out->host, s, len);
	out->host[len] = 0;
	if (bracketed)
		return inet_pton(AF_INET6, out->host, &a6) == 1 ? 0 : -EINVAL;
	if (strspn(out->host, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") !=
	    len)
		return -EINVAL;
	if (looks_numeric(out->host) && inet_pton(AF_INET, out->host, &a4) != 1)
		return -EINVAL;
	return 0;
}

static int parse_port(const char *s, bool allow_zero, uint16_t *out, const char **why)
{
	size_t n = strlen(s);
	unsigned long v;

	*why = "a port between 1 and 65535 after the ':'";
	if (n < 1 || n > 5 || strspn(s, "0123456789") != n)
		return -EINVAL;
	v = strtoul(s, NULL, 10);
	if (v > 65535 || (v == 0 && !allow_zero))
		return -EINVAL;
	*out = v;
	return 0;
}

int hostport_parse(const char *s, bool allow_port_zero, struct hostport *out, const char **why)
{
	struct hostport hp = {0};
	const char *colon = strrchr(s, ':'), *close;
	int r;

	*why = "host:port (an IPv6 address goes in brackets, as in [::1]:7000)";
	if (s[0] == '[') {
		close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		r = parse_host(s + 1, close - s - 1, true, &hp, why);
		colon = close + 1;
	} else {
		if (!colon || strchr(s, ':') != colon)
			return -EINVAL;
		r = parse_host(s, colon - s, false, &hp, why);
	}
	if (r >= 0)
		r = parse_port(colon + 1, allow_port_zero, &hp.port, why);
	if (r >= 0)
		*out = hp;
	return r;
}

const char *hostport_format(const struct hostport *hp, char *buf, size_t len)
{
	if (strchr(hp->host, ':'))
		snprintf(buf, len, "[%s]:%u", hp->host, hp->port);
	else
		snprintf(buf, len, "%s:%u", hp->host, hp->port);
	return buf;
}

/* ---------- command lines ---------- */

/* Copy the next word of *sp into w (room for all of *sp); 1, 0 at the end, -EINVAL if unclosed. */
static int next_word(const char **sp, char *w)
{
	const char *s = *sp;
	bool quoted = false;

	/* The same notion of space as below, or a \f or \v would end words forever. */
	while (isspace((unsigned char)*s))
		s++;
	if (!*s)
		return 0;
	for (; *s && (quoted || !isspace((unsigned char)*s)); s++) {
		if (*s == '"') {
			quoted = !quoted;
			continue;
		}
		if (quoted && *s == '\\' && (s[1] == '"' || s[1] == '\\'))
			s++;
		*w++ = *s;
	}
	*w = 0;
	*sp = s;
	return quoted ? -EINVAL : 1;
}

static int cmdline_push(struct cmdline *c, size_t *cap, const char *word)
{
	char **slot = array_push(&c->argv, &c->argc, cap, sizeof(char *));

	if (!slot)
		return -ENOMEM;
	if (word && !(*slot = strdup(word)))
		return -ENOMEM;
	return 0;
}

int cmdline_append(struct cmdline *c, const char *s, const char **why)
{
	struct cmdline more = {0};
	_cleanup_free_ char *line = NULL;
	char **argv;
	int r;

	r = cmdline_split(s, &more, why);
	if (r < 0)
		return r;
	argv = realloc(c->argv, (c->argc + more.argc + 1) * sizeof(*argv));
	if (!argv || asprintf(&line, "%s%s%s", c->line ? c->line : "",
			      c->line && *c->line ? " " : "", more.line) < 0) {
		line = NULL;
		if (argv)
			c->argv = argv;
		cmdline_free(&more);
		return -ENOMEM;
	}
	memcpy(argv + c->argc, more.argv, (more.argc + 1) * sizeof(*argv));
	c->argv = argv;
	c->argc += more.argc;
	free(c->line);
	c->line = TAKE_PTR(line);
	free(more.argv); /* its words are c's now */
	free(more.line);
	return 0;
}

int cmdline_split(const char *s, struct cmdline *out, const char **why)
{
	_cleanup_free_ char *w = malloc(strlen(s) + 1);
	struct cmdline c = {.line = strdup(s)};
	size_t cap = 0;
	int r;

	if (!w || !c.line) {
		cmdline_free(&c);
		return -ENOMEM;
	}
	while ((r = next_word(&s, w)) > 0 && (r = cmdline_push(&c, &cap, w)) >= 0)
		;
	*why = r == -EINVAL ? "a closing double quote" : "a command line";
	if (r == 0 && c.argc == 0)
		r = -EINVAL;
	if (r == 0 && (r = cmdline_push(&c, &cap, NULL)) >= 0)
		c.argc--; /* the NULL that ends argv is not an argument */
	if (r < 0) {
		cmdline_free(&c);
		return r;
	}
	*out = c;
	return 0;
}

void cmdline_free(struct cmdline *c)
{
	for (size_t i = 0; c->argv && i < c->argc; i++)
		free(c->argv[i]);
	free(c->argv);
	free(c->line);
	*c = (struct cmdline){0};
}
