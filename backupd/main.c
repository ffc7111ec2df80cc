/*
 * main.c - checksync-backupd: command-line entry.
 *
 *   checksync-backupd restore --image DIR
 *
 * restore prints the new process's pid on the first line of stdout and
 * exits, leaving the process running on its own.
 */
#include <getopt.h>

#include "log.h"
#include "restore/restore.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: checksync-backupd restore --image DIR [-v]\n");
}

static int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {{"image", required_argument, NULL, 'i'},
					     {"verbose", no_argument, NULL, 'v'},
					     {}};
	const char *image = NULL;
	pid_t pid;
	int c;

	while ((c = getopt_long(argc, argv, "i:v", opts, NULL)) != -1) {
		switch (c) {
		case 'i':
			image = optarg;
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
	if (restore_image(image, &pid) < 0)
		return 1;
	printf("%d\n", pid);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	log_set_program("checksync-backupd");
	if (argc < 2 || strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "restore") == 0)
		return cmd_restore(argc - 1, argv + 1);
	log_error("unknown command '%s'", argv[1]);
	usage(stderr);
	return 2;
}
