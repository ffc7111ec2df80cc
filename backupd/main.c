/*
 * main.c - checksync-backupd: command-line entry.
 *
 *   checksync-backupd [--config FILE] [-v]          the daemon (daemon.c)
 *   checksync-backupd status [--config FILE]        what the daemon reports
 *   checksync-backupd restore --image DIR [-v]      one-shot restore
 *
 * restore prints the new process's pid on the first line of stdout and
 * exits, leaving the process running on its own. The daemon logs its
 * events (connections, epochs, takeovers) at info level by default, since
 * its stderr is the service log; -v adds a line per epoch.
 */
#include <getopt.h>
#include <linux/close_range.h>

#include "config.h"
#include "daemon.h"
#include "log.h"
#include "restore/restore.h"
#include "status.h"
#include "control.h"
#include "util.h"

#define DEFAULT_CONFIG "/etc/checksync/backup.conf"

static void usage(FILE *f)
{
	fprintf(f, "usage: checksync-backupd [--config FILE] [-v]\n"
		   "       checksync-backupd status [--config FILE]\n"
		   "       checksync-backupd accept-new-incarnation NAME [--config FILE]\n"
		   "         let the next other run of NAME replace the image (logged)\n"
		   "       checksync-backupd restore --image DIR [--debug-file FILE]\n"
		   "                [--debug-root DIR] [-v]\n"
		   "The configuration file defaults to " DEFAULT_CONFIG ".\n");
}

static int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {{"image", required_argument, NULL, 'i'},
					     {"debug-file", required_argument, NULL, 'D'},
					     {"debug-root", required_argument, NULL, 'R'},
					     {"verbose", no_argument, NULL, 'v'},
					     {}};
	struct restore_opts ro = {0};
	const char *image = NULL;
	pid_t pid;
	int c;

	while ((c = getopt_long(argc, argv, "i:D:R:v", opts, NULL)) != -1) {
		switch (c) {
		case 'i':
			image = optarg;
			break;
		case 'D':
			ro.debug_file = optarg;
			break;
		case 'R':
			ro.debug_root = optarg;
			break;
		case 'v':
			log_set_verbose(log_get_verbose() + 1);
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!image) {
		log_error("restore needs --image DIR");
		return 2;
	}
	if (restore_image_opts(image, &ro, &pid) < 0)
		return 1;
	printf("%d\n", pid);
	fflush(stdout);
	return 0;
}

/* --config FILE and -v, shared by the daemon and status; 0, or 2 for a usage error. */
static int parse_common(int argc, char **argv, const char **config, bool allow_verbose)
{
	static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
					     {"verbose", no_argument, NULL, 'v'},
					     {"help", no_argument, NULL, 'h'},
					     {}};
	int c;

	while ((c = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			*config = optarg;
			break;
		case 'v':
			if (allow_verbose) {
				log_set_verbose(log_get_verbose() + 1);
				break;
			}
			usage(stderr);
			return 2;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		log_error("unexpected argument '%s'", argv[optind]);
		usage(stderr);
		return 2;
	}
	return 0;
}

static int cmd_status(int argc, char **argv)
{
	const char *config = DEFAULT_CONFIG;
	struct daemon_config cfg;
	char err[CONFIG_ERR_MAX];
	int r = parse_common(argc, argv, &config, false);

	if (r)
		return r;
	if (config_load_daemon(config, ROLE_BACKUP, &cfg, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	r = status_print(cfg.status_socket, stdout, err, sizeof(err));
	config_daemon_free(&cfg);
	if (r < 0) {
		log_error("%s", err);
		return 1;
	}
	return 0;
}

/* `checksync-backupd accept-new-incarnation NAME [--config FILE]` */
static int cmd_control(int argc, char **argv)
{
	const char *config = DEFAULT_CONFIG;
	struct daemon_config cfg;
	char err[CONFIG_ERR_MAX];
	char *words[2] = {argv[0], NULL};
	int r;

	if (argc < 2 || argv[1][0] == '-') {
		log_error("%s needs the name of a service", argv[0]);
		return 2;
	}
	words[1] = argv[1];
	r = parse_common(argc - 1, argv + 1, &config, false);
	if (r)
		return r;
	if (config_load_daemon(config, ROLE_BACKUP, &cfg, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	r = control_send(cfg.status_socket, 2, words, stdout, err, sizeof(err));
	config_daemon_free(&cfg);
	if (r < 0) {
		log_error("%s", err);
		return 1;
	}
	return r;
}

static int cmd_daemon(int argc, char **argv)
{
	const char *config = DEFAULT_CONFIG;
	int r;

	/*
	 * Whatever our starter left open stays open, but not across exec: hooks
	 * and restored services must not inherit it (child.c and restore close
	 * theirs too; this covers what they cannot know about).
	 */
	(void)close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
	/*
	 * The DWARF lookup at each HELLO runs in the event loop: libdwfl must not
	 * go to a debuginfod server from there (it would while this is set).
	 */
	unsetenv("DEBUGINFOD_URLS");
	log_set_verbose(1);
	r = parse_common(argc, argv, &config, true);
	return r ? r : daemon_run(config);
}

int main(int argc, char **argv)
{
	log_set_program("checksync-backupd");
	if (argc >= 2 && strcmp(argv[1], "restore") == 0)
		return cmd_restore(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "status") == 0)
		return cmd_status(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "accept-new-incarnation") == 0)
		return cmd_control(argc - 1, argv + 1);
	if (argc >= 2 && argv[1][0] != '-') {
		log_error("unknown command '%s'", argv[1]);
		usage(stderr);
		return 2;
	}
	return cmd_daemon(argc, argv);
}
