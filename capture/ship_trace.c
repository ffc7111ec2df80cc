/*
 * ship_trace.c - see ship_trace.h.
 */
#include "ship_trace.h"

#include <stdlib.h>
#include <string.h>

#include "delta.h"
#include "log.h"

void ship_trace_open(struct ship_trace *t)
{
	const char *env = getenv("CHECKSYNC_DEBUG_SHIP_TRACE");
	char path[4096];

	memset(t, 0, sizeof(*t));
	if (!env || !*env || strlen(env) >= sizeof(path))
		return;
	strcpy(path, env);
	char *comma = strchr(path, ',');
	unsigned long long skip = 0, count = 40000;
	if (comma) {
		*comma = 0;
		if (sscanf(comma + 1, "%llu,%llu", &skip, &count) < 1)
			skip = 0;
	}
	t->f = fopen(path, "we");
	if (!t->f) {
		log_warn("debug: cannot write the ship trace %s", path);
		return;
	}
	t->skip = skip;
	t->left = count;
	log_warn("debug: tracing %llu encoded pages after %llu into %s (CHECKSYNC_DEBUG_SHIP_TRACE)",
		 count, skip, path);
}

void ship_trace_page(struct ship_trace *t, uint64_t addr, const uint8_t *base, const uint8_t *cur)
{
	if (!t->f)
		return;
	if (t->skip) {
		t->skip--;
		return;
	}
	uint8_t how = !base ? SHIP_TRACE_MISS : base == delta_zero_page ? SHIP_TRACE_ZERO
									 : SHIP_TRACE_CACHED;
	fwrite(&addr, sizeof(addr), 1, t->f);
	fwrite(&how, 1, 1, t->f);
	if (how == SHIP_TRACE_CACHED)
		fwrite(base, DELTA_PAGE, 1, t->f);
	fwrite(cur, DELTA_PAGE, 1, t->f);
	if (--t->left == 0)
		ship_trace_close(t);
}

void ship_trace_close(struct ship_trace *t)
{
	if (t->f)
		fclose(t->f);
	memset(t, 0, sizeof(*t));
}
