/*
 * main.c - checksync-primaryd: command-line entry.
 *
 *   checksync-primaryd dump --pid PID --image DIR
 */
#include <getopt.h>
#include <stdbool.h>

#include "capture/capture.h"
#include "daemon.h"
#include "log.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: checksync-primaryd [--config FILE] [-v]      guard the configured services\n"
		   "       checksync-primaryd status [--config FILE]   their state\n"
		   "       checksync-primaryd handover NAME [--config FILE]\n"
		   "         hand NAME over to its backup: no loss, no failover timeout\n"
		   "       checksync-primaryd stop NAME --everywhere [--config FILE]\n"
		   "         stop NAME here; its backup stands down and keeps the image\n"
		   "       checksync-primaryd dump --pid PID --image DIR [--whole]\n"
		   "                [--debug-file FILE] [--debug-root DIR] [-v]\n"
		   "  --whole       copy whole mappings instead of only live Go memory\n"
		   "  --debug-file  the executable's DWARF, if neither it nor the lookup by\n"
		   "                build-id or .gnu_debuglink has it\n"
		   "  --debug-root  look for debug files under DIR, not /usr/lib/debug\n");
}

static const char *const class_names[MC_COUNT] = {
	[MC_HEAP] = "heap_in_use", [MC_STACKS] = "stacks", [MC_GLOBALS] = "globals",
	[MC_OFFHEAP] = "off_heap_runtime", [MC_FREE] = "skipped_free", [MC_ZERO] = "skipped_zero",
};

/* A JSON string (quoted), or null for "". */
static void json_string(FILE *f, const char *s)
{
	if (!*s) {
		fputs("null", f);
		return;
	}
	fputc('"', f);
	for (; *s; s++)
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", *s);
		else
			fputc(*s, f);
	fputc('"', f);
}

static int write_report(const char *dir, const struct dump_report *rep)
{
	const struct capture_stats *st = &rep->stats;
	char path[4096];

	snprintf(path, sizeof(path), "%s/report.json", dir);
	_cleanup_fclose_ FILE *f = fopen(path, "we");
	if (!f)
		return -errno;
	fprintf(f,
		"{\"pause_us\": %lu, \"dump_us\": %lu, \"image_bytes\": %lu, \"pages\": %lu, "
		"\"threads\": %zu, \"vmas\": %zu, \"fds\": %zu, \"mode\": \"%s\", "
		"\"safepoint_tries\": %u, \"fallback\": %u, \"classes\": {",
		(unsigned long)rep->pause_us, (unsigned long)rep->dump_us,
		(unsigned long)rep->image_bytes, (unsigned long)rep->pages, rep->threads, rep->vmas,
		rep->fds, st->mode ? st->mode : "whole", st->safepoint_tries, st->fallback);
	for (int k = 0; k < MC_COUNT; k++)
		fprintf(f, "%s\"%s\": {\"mapped\": %lu, \"written\": %lu}", k ? ", " : "",
			class_names[k], (unsigned long)st->mapped[k], (unsigned long)st->written[k]);
	fprintf(f, ", \"skipped_unreachable\": {\"mapped\": %lu, \"written\": 0}",
		(unsigned long)st->reach.zeroed_bytes);
	fprintf(f, "}, \"reach\": {\"state\": ");
	json_string(f, st->reach.state ? st->reach.state : "off");
	fprintf(f,
		", \"new_objects\": %lu, \"new_bytes\": %lu, \"reached_objects\": %lu, "
		"\"reached_bytes\": %lu, \"zeroed_bytes\": %lu, \"pages_dropped\": %lu, "
		"\"root_bytes\": %lu, \"scan_us\": %lu}",
		(unsigned long)st->reach.new_objects, (unsigned long)st->reach.new_bytes,
		(unsigned long)st->reach.reached_objects, (unsigned long)st->reach.reached_bytes,
		(unsigned long)st->reach.zeroed_bytes, (unsigned long)st->reach.pages_dropped,
		(unsigned long)st->reach.root_bytes, (unsigned long)st->reach.scan_us);
	fprintf(f, ", \"debug_info\": ");
	json_string(f, rep->debuginfo.path);
	fprintf(f, ", \"debug_source\": \"%s\", \"build_id\": ",
		go_debug_source_name(rep->debuginfo.source));
	json_string(f, rep->debuginfo.build_id);
	fprintf(f, "}\n");
	return 0;
}

static void print_report(pid_t pid, const char *image, const struct dump_report *rep)
{
	const struct capture_stats *st = &rep->stats;

	printf("dumped pid %d into %s (%s capture, %u safepoint retries%s): %zu threads, "
	       "%zu mappings, %zu fds, %lu bytes; paused %lu us, took %lu us\n",
	       pid, image, st->mode ? st->mode : "whole", st->safepoint_tries,
	       st->fallback ? ", fell back" : "", rep->threads, rep->vmas, rep->fds,
	       (unsigned long)rep->image_bytes, (unsigned long)rep->pause_us,
	       (unsigned long)rep->dump_us);
	if (rep->debuginfo.source != GO_DEBUG_NONE)
		printf("  DWARF %s: %s\n", go_debug_source_name(rep->debuginfo.source),
		       rep->debuginfo.path);
	printf("  %-18s %14s %14s\n", "class", "mapped", "written");
	for (int k = 0; k < MC_COUNT; k++)
		printf("  %-18s %14lu %14lu\n", class_names[k], (unsigned long)st->mapped[k],
		       (unsigned long)st->written[k]);
	printf("  %-18s %14lu %14u\n", "skipped_unreachable", (unsigned long)st->reach.zeroed_bytes,
	       0);
	printf("  reachability of new objects: %s; %lu of %lu reached, %lu bytes zeroed, "
	       "%lu pages left out, %lu us\n",
	       st->reach.state ? st->reach.state : "off", (unsigned long)st->reach.reached_objects,
	       (unsigned long)st->reach.new_objects, (unsigned long)st->reach.zeroed_bytes,
	       (unsigned long)st->reach.pages_dropped, (unsigned long)st->reach.scan_us);
}

static int cmd_dump(int argc, char **argv)
{
	static const struct option opts[] = {{"pid", required_argument, NULL, 'p'},
					     {"image", required_argument, NULL, 'i'},
					     {"whole", no_argument, NULL, 'w'},
					     {"debug-file", required_argument, NULL, 'D'},
					     {"debug-root", required_argument, NULL, 'R'},
					     {"verbose", no_argument, NULL, 'v'},
					     {}};
	const char *image = NULL;
	struct dump_options opt = {0};
	struct dump_report rep = {0};
	pid_t pid = 0;
	int c;

	while ((c = getopt_long(argc, argv, "p:i:wD:R:v", opts, NULL)) != -1) {
		switch (c) {
		case 'p': {
			char *end;
			long v = strtol(optarg, &end, 10);
			if (*end || v <= 0 || v > 0x3fffffff) {
				log_error("--pid: '%s' is not a process id", optarg);
				return 2;
			}
			pid = v;
			break;
		}
		case 'i':
			image = optarg;
			break;
		case 'w':
			opt.whole = true;
			break;
		case 'D':
			opt.debug_file = optarg;
			break;
		case 'R':
			opt.debug_root = optarg;
			break;
		case 'v':
			log_set_verbose(log_get_verbose() + 1);
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (!pid || !image) {
		log_error("dump needs --pid PID and --image DIR");
		return 2;
	}
	if (capture_dump(pid, image, &opt, &rep) < 0)
		return 1;
	write_report(image, &rep);
	print_report(pid, image, &rep);
	return 0;
}

#define DEFAULT_CONFIG "/etc/checksync/primary.conf"

/* `checksync-primaryd handover NAME | stop NAME --everywhere [--config FILE]` */
static int cmd_control(int argc, char **argv)
{
	const char *config = DEFAULT_CONFIG;
	char *words[4];
	int n = 0;

	for (int i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			config = argv[++i];
		} else if (n < 3) {
			words[n++] = argv[i];
		} else {
			log_error("unexpected argument '%s'", argv[i]);
			return 2;
		}
	}
	if (n < 2) {
		log_error("%s needs the name of a service", argv[0]);
		return 2;
	}
	return primary_command(config, n, words);
}

/* `checksync-primaryd [status] [--config FILE] [-v]` */
static int cmd_daemon(int argc, char **argv, bool status)
{
	static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
					     {"verbose", no_argument, NULL, 'v'},
					     {}};
	const char *config = DEFAULT_CONFIG;
	int c;

	if (!status)
		log_set_verbose(1); /* the daemon logs its normal life (a handover's figures, ...) */
	while ((c = getopt_long(argc, argv, "c:v", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config = optarg;
			break;
		case 'v':
			log_set_verbose(log_get_verbose() + 1);
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	return status ? primary_status(config) : primary_run(config);
}

int main(int argc, char **argv)
{
	log_set_program("checksync-primaryd");
	if (argc >= 2 && strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	if (argc < 2 || argv[1][0] == '-')
		return cmd_daemon(argc, argv, false);
	if (strcmp(argv[1], "status") == 0)
		return cmd_daemon(argc - 1, argv + 1, true);
	if (strcmp(argv[1], "dump") == 0)
		return cmd_dump(argc - 1, argv + 1);
	if (strcmp(argv[1], "handover") == 0 || strcmp(argv[1], "stop") == 0)
		return cmd_control(argc - 1, argv + 1);
	log_error("unknown command '%s'", argv[1]);
	usage(stderr);
	return 2;
}
