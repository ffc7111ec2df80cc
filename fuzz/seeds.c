/*
 * seeds.c - see seeds.h.
 */
#include "seeds.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

const char *seeds_dir_if_empty(int argc, char **argv)
{
	const char *dir = NULL;
	struct dirent *e;
	DIR *d;

	for (int i = 1; i < argc; i++)
		if (argv[i][0] != '-')
			dir = argv[i];
	if (!dir || (mkdir(dir, 0700) < 0 && errno != EEXIST))
		return NULL;
	d = opendir(dir);
	if (!d)
		return NULL;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.') {
			closedir(d);
			return NULL;
		}
	closedir(d);
	return dir;
}

void seeds_write(const char *dir, const char *name, const void *p, size_t n)
{
	char path[4096];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "we");
	if (!f)
		return;
	fwrite(p, 1, n, f);
	fclose(f);
}
