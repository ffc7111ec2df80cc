/*
 * goruntime.h - what CheckSync reads from a Go executable's ELF and DWARF.
 *
 * Layouts come from the binary itself (libelf, libdw), never from tables of
 * offsets per Go version.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

struct go_binary {
	bool is_go;
	bool has_dwarf;
	char version[32];     /* e.g. "go1.19.8", from runtime.buildVersion when readable */
	uint64_t allm_addr;   /* &runtime.allm */
	int64_t m_procid_off; /* offsetof(runtime.m, procid) */
	int64_t m_alllink_off;
};

/* Inspect an executable. Returns 0 (check info->is_go) or -errno if it cannot be read. */
int go_binary_inspect(const char *path, struct go_binary *info);
