/*
 * unit_config.h - for the unit tests of service-file keys: a file that must
 * be refused, with the error naming the file and line (unit.h writes it).
 */
#pragma once

#include <errno.h>

#include "config.h"
#include "unit.h"

/* Loading path as role is refused with exactly "PATH:LINE: want". */
static inline void unit_service_refused(const char *path, enum role role, int line,
					const char *want)
{
	struct service_config c;
	char err[CONFIG_ERR_MAX] = "", expect[4200];

	CHECK_INT(config_load_service(path, role, &c, err, sizeof(err)), -EINVAL);
	snprintf(expect, sizeof(expect), "%s:%d: %s", path, line, want);
	CHECK_STR(err, expect);
}
